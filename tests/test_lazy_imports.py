"""skvq and its classical quantizers never import torch; the neural ones say how to get it."""

import subprocess
import sys
import textwrap

import pytest


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def test_import_skvq_does_not_import_torch():
    result = _run("""
        import sys
        import numpy as np
        import skvq, skvq.neural, skvq.cli
        from skvq import *
        X = np.random.default_rng(0).normal(size=(64, 4))
        skvq.PQ(2, 2).fit(X).transform(X)
        skvq.L1LeastSquareQuantizer().fit(X)
        assert "torch" not in sys.modules and "skorch" not in sys.modules, "torch imported"
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("name", ["DeepVQ", "SCQ", "SoftConvexQuantizer"])
def test_neural_names_without_torch_raise_a_helpful_import_error(name):
    # a finder that refuses torch makes `import torch` fail as if it were not installed
    result = _run(f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "skorch"):
                    raise ImportError("No module named " + repr(name))
                return None

        sys.meta_path.insert(0, NoTorch())
        import skvq
        try:
            skvq.{name}
        except ImportError as exc:
            assert "pip install" in str(exc), exc
            print("ok")
    """)
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
