"""skvq and its classical quantizers never import torch; the neural ones say how to get it."""

import subprocess
import sys
import textwrap

import pytest


# A finder that refuses torch and skorch makes importing them fail as if they were missing.
_NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "skorch"):
            raise ImportError("No module named " + repr(name))
        return None

sys.meta_path.insert(0, NoTorch())
"""


def _run(code, no_torch=False):
    code = (_NO_TORCH if no_torch else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_import_skvq_does_not_import_torch():
    result = _run("""
        import sys
        import numpy as np
        import skvq, skvq.neural, skvq.cli
        from skvq import *
        from skvq._registry import estimator_names, make_quantizer, public_estimators
        X = np.random.default_rng(0).normal(size=(64, 4))
        skvq.PQ(2, 2).fit(X).transform(X)
        skvq.L1LeastSquareQuantizer().fit(X)
        # the registry names the neural estimators without importing them
        assert "DeepVQ" in estimator_names() and "DeepVQ" in dir(skvq)
        assert [c.__name__ for c in public_estimators(neural=False)] == estimator_names(False)
        make_quantizer("pq", n_subspaces=2, n_bits=2).fit(X)
        assert "torch" not in sys.modules and "skorch" not in sys.modules, "torch imported"
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("name", ["DeepVQ", "SCQ", "SoftConvexQuantizer"])
def test_neural_names_without_torch_raise_a_helpful_import_error(name):
    result = _run(f"""
        import skvq
        try:
            skvq.{name}
        except ImportError as exc:
            assert "pip install" in str(exc), exc
            print("ok")
    """, no_torch=True)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_registry_lists_neural_quantizers_without_importing_torch():
    result = _run("""
        import io, sys
        from skvq import cli
        out = io.StringIO()
        assert cli.main(["list"], out=out) == 0
        assert "torch" not in sys.modules
        print(out.getvalue())
    """)
    assert result.returncode == 0, result.stderr


def test_cli_without_torch_lists_and_refuses_neural_quantizers(tmp_path):
    """Without torch, ``skvq list`` marks the neural quantizers and ``skvq quantize`` refuses
    them with one line, while the classical ones work."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 3)))
    result = _run(f"""
        import io
        from skvq import cli
        out = io.StringIO()
        assert cli.main(["list"], out=out) == 0
        assert "deepvq" in out.getvalue() and "[not installed]" in out.getvalue()
        args = ["quantize", {str(tmp_path / "x.npy")!r}, "--codes", {str(tmp_path / "c")!r},
                "--model", {str(tmp_path / "m")!r}, "--method"]
        assert cli.main(args + ["deepvq"], out=out) == 1
        assert cli.main(args + ["l0-dp"], out=out) == 0
        print("ok")
    """, no_torch=True)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "deepvq" in result.stderr and "not installed" in result.stderr
    assert "Traceback" not in result.stderr
