"""The command line's user errors: one line on stderr, a non-zero status, never a traceback.

Every case writes the real bad file under ``tmp_path`` and runs ``skvq.cli.main`` on it. The
status is 2 for a mistake on the command line (as argparse's), 1 for a file, data or fit that
cannot be used.
"""

import io
import os
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest

from skvq import PQ, L0LeastSquareQuantizer, L1LeastSquareQuantizer
from skvq import cli


def _run(capsys, *argv):
    """Status, stdout and stderr of ``skvq ARGV``; stderr must be one error line."""
    out = io.StringIO()
    status = cli.main([str(a) for a in argv], out=out)
    err = capsys.readouterr().err
    return status, out.getvalue(), err


def _assert_one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("skvq"), err
    assert ": error: " in lines[0], err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(40, 6)))
    return path


def _quantize(tmp_path, capsys, path, *extra, method="l0-dp"):
    return _run(capsys, "quantize", path, "--method", method, *extra,
                "--codes", tmp_path / "c.npy", "--model", tmp_path / "m.joblib")


# ------------------------------------------------------------------------- bad data files

@pytest.mark.parametrize("n_bytes", [0, 3, 7, 9, 20, 100])
def test_truncated_header(tmp_path, capsys, data, n_bytes):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(data.read_bytes()[:n_bytes])
    status, _, err = _quantize(tmp_path, capsys, bad)
    assert status == 1
    _assert_one_error_line(err, "bad.npy")
    assert "empty" in err if n_bytes == 0 else ("not a .npy file" in err
                                                 or "not a valid .npy file" in err)
    assert not (tmp_path / "c.npy").exists()


def test_truncated_data(tmp_path, capsys, data):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(data.read_bytes()[:-8])  # one float64 short
    status, _, err = _quantize(tmp_path, capsys, bad)
    assert status == 1
    _assert_one_error_line(err, "truncated", "(40, 6)")


def test_directory_as_input(tmp_path, capsys):
    (tmp_path / "d.npy").mkdir()
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "d.npy")
    assert status == 1
    _assert_one_error_line(err, "d.npy", "directory")


def test_missing_input(tmp_path, capsys):
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "nope.npy")
    assert status == 1
    _assert_one_error_line(err, "nope.npy", "No such file")


def test_text_file_named_npy(tmp_path, capsys):
    path = tmp_path / "t.npy"
    path.write_text("1 2 3\n4 5 6\n")
    status, _, err = _quantize(tmp_path, capsys, path)
    assert status == 1
    _assert_one_error_line(err, "t.npy", "not a .npy file")
    assert "pickle" not in err


def test_npz_archive(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2)))
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "a.npz")
    assert status == 1
    _assert_one_error_line(err, ".npz archive")


class _Exploit:
    """Unpickling this writes a file: what loading an .npy with allow_pickle would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_array_is_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "obj.npy"
    np.save(path, np.array([_Exploit(str(marker))], dtype=object), allow_pickle=True)
    assert not marker.exists()
    for argv in (["quantize", path, "--method", "l0-dp", "--codes", tmp_path / "c",
                  "--model", tmp_path / "m"],
                 ["compare", "--data", path, "--methods", "l0-dp"]):
        status, _, err = _run(capsys, *argv)
        assert status == 1
        _assert_one_error_line(err, "obj.npy", "Python objects", "does not unpickle")
        assert not marker.exists()


def test_three_dimensional_array_is_refused_with_its_shape(tmp_path, capsys):
    np.save(tmp_path / "x3.npy", np.ones((2, 3, 4)))
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "x3.npy")
    assert status == 1
    _assert_one_error_line(err, "(2, 3, 4)", "2-D")
    status, _, err = _run(capsys, "compare", "--data", tmp_path / "x3.npy")
    assert status == 1
    _assert_one_error_line(err, "(2, 3, 4)")


def test_zero_dimensional_array(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.float64(3.0))
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "s.npy")
    assert status == 1
    _assert_one_error_line(err, "shape ()")


@pytest.mark.parametrize("shape", [(0, 5), (0,), (4, 0)])
def test_empty_array(tmp_path, capsys, shape):
    np.save(tmp_path / "e.npy", np.ones(shape))
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "e.npy")
    assert status == 1
    _assert_one_error_line(err, "empty", str(shape))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_data(tmp_path, capsys, bad_value):
    X = np.ones((5, 3))
    X[2, 1] = bad_value
    np.save(tmp_path / "x.npy", X)
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "x.npy")
    assert status == 1
    _assert_one_error_line(err, "NaN or infinity", "1 entry", "row 2, column 1")
    status, _, err = _run(capsys, "compare", "--data", tmp_path / "x.npy", "--methods", "l0-dp")
    assert status == 1
    _assert_one_error_line(err, "NaN or infinity")


@pytest.mark.parametrize("array, dtype", [(np.array([["a", "b"]]), "<U1"),
                                          (np.ones((2, 2)) + 1j, "complex128")])
def test_non_numeric_dtype(tmp_path, capsys, array, dtype):
    np.save(tmp_path / "x.npy", array)
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "x.npy")
    assert status == 1
    _assert_one_error_line(err, dtype, "real numbers")


def test_integer_and_one_dimensional_data_are_accepted(tmp_path, capsys):
    """Integers are numbers; a 1-D array is one row (the documented rule)."""
    np.save(tmp_path / "i.npy", np.arange(12).reshape(4, 3))
    status, _, _ = _quantize(tmp_path, capsys, tmp_path / "i.npy", "--param", "n_values=2")
    assert status == 0
    np.save(tmp_path / "v.npy", np.arange(8.0))
    status, _, _ = _quantize(tmp_path, capsys, tmp_path / "v.npy", "--param", "n_values=2")
    assert status == 0
    assert np.load(tmp_path / "c.npy").shape == (1, 8)


# --------------------------------------------------------------------------- bad options

@pytest.mark.parametrize("value", ["-4", "0", "x", "2.5"])
def test_n_values_must_be_a_positive_integer(capsys, value):
    status, _, err = _run(capsys, "compare", "--n-values", value)
    assert status == 2
    _assert_one_error_line(err, "--n-values", ">= 1", value)
    assert "NaN" not in err


def test_negative_random_state(capsys):
    status, _, err = _run(capsys, "compare", "--random-state", "-1")
    assert status == 2
    _assert_one_error_line(err, "--random-state", ">= 0")


@pytest.mark.parametrize("argv", [[], ["bogus"], ["quantize", "x.npy"], ["compare", "--nope"]])
def test_argparse_errors_are_one_line(capsys, argv):
    status, _, err = _run(capsys, *argv)
    assert status == 2
    _assert_one_error_line(err, "--help")


def test_help_exits_zero(capsys):
    assert cli.main(["quantize", "--help"]) == 0
    captured = capsys.readouterr()  # argparse prints the help to sys.stdout
    assert "--param" in captured.out and captured.err == ""


def test_unknown_parameter_is_refused_with_the_accepted_ones(tmp_path, capsys, data):
    status, _, err = _quantize(tmp_path, capsys, data, "--param", "bogus=3")
    assert status == 2
    accepted = sorted(L0LeastSquareQuantizer().get_params())
    _assert_one_error_line(err, "--param bogus", "L0LeastSquareQuantizer", ", ".join(accepted))
    assert not (tmp_path / "m.joblib").exists()


def test_misspelt_parameter_gets_a_suggestion(tmp_path, capsys, data):
    status, _, err = _quantize(tmp_path, capsys, data, "--param", "n_value=16")
    assert status == 2
    _assert_one_error_line(err, "'n_value'", "did you mean 'n_values'?")


def test_class_name_method_checks_its_own_parameters(tmp_path, capsys, data):
    # refit exists on L1LeastSquareQuantizer, not on L0LeastSquareQuantizer
    assert _quantize(tmp_path, capsys, data, "--param", "refit=False",
                     method="L1LeastSquareQuantizer")[0] == 0
    status, _, err = _quantize(tmp_path, capsys, data, "--param", "refit=False",
                               method="L0LeastSquareQuantizer")
    assert status == 2
    _assert_one_error_line(err, "L0LeastSquareQuantizer has no parameter 'refit'")


def test_neural_quantizer_parameters_are_checked_too(tmp_path, capsys, data):
    pytest.importorskip("torch")
    pytest.importorskip("skorch")
    from skvq._registry import parameter_names

    status, _, err = _quantize(tmp_path, capsys, data, "--param", "n_bit=6", method="deepvq")
    assert status == 2
    _assert_one_error_line(err, "DeepVQ (deepvq) has no parameter 'n_bit'",
                           "did you mean 'n_bits'?", ", ".join(parameter_names("deepvq")))
    assert not (tmp_path / "m.joblib").exists()


@pytest.mark.parametrize("pair, fragment", [("n_values", "NAME=VALUE"), ("=3", "NAME=VALUE"),
                                            ("n values=3", "NAME=VALUE")])
def test_malformed_param(tmp_path, capsys, data, pair, fragment):
    status, _, err = _quantize(tmp_path, capsys, data, "--param", pair)
    assert status == 2
    _assert_one_error_line(err, fragment)


def test_param_given_twice(tmp_path, capsys, data):
    status, _, err = _quantize(tmp_path, capsys, data, "--param", "n_values=4",
                               "--param", "n_values=8")
    assert status == 2
    _assert_one_error_line(err, "n_values", "twice")


def test_parameter_value_refused_by_the_quantizer(tmp_path, capsys, data):
    status, _, err = _quantize(tmp_path, capsys, data, "--param", "n_values=-3")
    assert status == 2
    _assert_one_error_line(err, "n_values", "-3")
    status, _, err = _quantize(tmp_path, capsys, data, "--param", "n_values='many'")
    assert status == 2
    _assert_one_error_line(err, "n_values", "many")


def test_fit_error_is_one_line(tmp_path, capsys, data):
    # PQ cannot split 6 features into 7 subspaces: a ValueError from fit, not from the CLI
    with pytest.raises(ValueError) as reference:
        PQ(n_subspaces=7, n_bits=2).fit(np.load(data))
    status, _, err = _quantize(tmp_path, capsys, data, "--param", "n_subspaces=7",
                               "--param", "n_bits=2", method="pq")
    assert status == 1
    _assert_one_error_line(err, " ".join(str(reference.value).split()))


@pytest.mark.parametrize("command", ["quantize", "compare"])
def test_unknown_method(tmp_path, capsys, data, command):
    if command == "quantize":
        status, _, err = _quantize(tmp_path, capsys, data, method="kmean")
    else:
        status, _, err = _run(capsys, "compare", "--methods", "l0-dp,kmean")
    assert status == 2
    _assert_one_error_line(err, "unknown quantizer 'kmean'", "did you mean 'kmeans'",
                           "skvq list")


def test_empty_method_list(capsys):
    status, _, err = _run(capsys, "compare", "--methods", ",")
    assert status == 2
    _assert_one_error_line(err, "--methods")


@pytest.mark.parametrize("option", ["--codes", "--model"])
def test_output_in_a_missing_directory_is_refused_before_fitting(tmp_path, capsys, data,
                                                                 option):
    paths = {"--codes": tmp_path / "c.npy", "--model": tmp_path / "m.joblib"}
    paths[option] = tmp_path / "no" / "such" / "file"
    status, _, err = _run(capsys, "quantize", data, "--method", "l0-dp",
                          "--codes", paths["--codes"], "--model", paths["--model"])
    assert status == 2
    _assert_one_error_line(err, option, "does not exist")
    assert not any(p.exists() for p in paths.values())


def test_output_that_is_a_directory(tmp_path, capsys, data):
    (tmp_path / "out").mkdir()
    status, _, err = _run(capsys, "quantize", data, "--method", "l0-dp",
                          "--codes", tmp_path / "out", "--model", tmp_path / "m")
    assert status == 2
    _assert_one_error_line(err, "--codes", "is a directory")


# --------------------------------------------------------------------------- compare --param

def test_compare_param_must_exist_on_one_of_the_methods(capsys):
    status, _, err = _run(capsys, "compare", "--methods", "l0-dp,pq", "--param",
                          "n_subspace=2")
    assert status == 2
    _assert_one_error_line(err, "none of l0-dp, pq", "did you mean 'n_subspaces'?")


def test_compare_param_goes_to_the_methods_that_take_it(tmp_path, capsys, data):
    status, out, err = _run(capsys, "compare", "--data", data, "--methods", "l0-dp,pq",
                            "--param", "n_subspaces=3", "--param", "n_bits=2")
    assert status == 0, err
    assert "--param n_subspaces applies to pq only" in err
    rows = {r.split("|")[1].strip(): r.split("|")[2].strip() for r in out.splitlines()
            if r.startswith("| l0-dp") or r.startswith("| pq")}
    assert rows == {"l0-dp": "4 values", "pq": "3 x 4"}


def test_compare_param_cannot_shadow_its_options(capsys):
    status, _, err = _run(capsys, "compare", "--methods", "l0-dp", "--param", "n_values=8")
    assert status == 2
    _assert_one_error_line(err, "use --n-values")


def test_compare_reports_a_failed_method_and_exits_non_zero(tmp_path, capsys, data):
    status, out, err = _run(capsys, "compare", "--data", data, "--methods", "l0-dp,pq",
                            "--param", "n_subspaces=7")  # 6 features do not split in 7
    assert status == 1
    assert "| l0-dp |" in out and "| pq |" not in out
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("skvq compare: error: 1 of 2 quantizers")


# ------------------------------------------------------------------------------ reconstruct

@pytest.fixture
def fitted(tmp_path, capsys, data):
    assert _quantize(tmp_path, capsys, data)[0] == 0
    return tmp_path / "c.npy", tmp_path / "m.joblib"


def _reconstruct(tmp_path, capsys, codes, model):
    return _run(capsys, "reconstruct", codes, "--model", model, "--out", tmp_path / "r.npy")


def test_model_that_is_not_a_pickle(tmp_path, capsys, fitted):
    (tmp_path / "text.joblib").write_text("not a model\n")
    status, _, err = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "text.joblib")
    assert status == 1
    _assert_one_error_line(err, "text.joblib", "not a model written by `skvq quantize`")


def test_model_that_is_a_joblib_dict(tmp_path, capsys, fitted):
    joblib.dump({"codebook": [1, 2]}, tmp_path / "d.joblib")
    status, _, err = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "d.joblib")
    assert status == 1
    _assert_one_error_line(err, "d.joblib", "holds a dict")


def test_model_that_is_a_foreign_estimator(tmp_path, capsys, fitted):
    from sklearn.preprocessing import KBinsDiscretizer

    joblib.dump(KBinsDiscretizer(n_bins=3).fit(np.load(tmp_path / "x.npy")),
                tmp_path / "k.joblib")
    status, _, err = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "k.joblib")
    assert status == 1
    _assert_one_error_line(err, "KBinsDiscretizer", "not a quantizer written by")


def test_model_that_is_not_fitted(tmp_path, capsys, fitted):
    joblib.dump(L1LeastSquareQuantizer(), tmp_path / "u.joblib")
    status, _, err = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "u.joblib")
    assert status == 1
    _assert_one_error_line(err, "unfitted L1LeastSquareQuantizer")


def test_model_that_is_a_directory_or_missing(tmp_path, capsys, fitted):
    (tmp_path / "dir.joblib").mkdir()
    status, _, err = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "dir.joblib")
    assert status == 1
    _assert_one_error_line(err, "dir.joblib", "directory")
    status, _, err = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "none.joblib")
    assert status == 1
    _assert_one_error_line(err, "none.joblib", "No such file")


def test_model_that_needs_a_missing_module(tmp_path, capsys, fitted):
    # a pickle that names a module that does not exist, as a neural model without torch does
    (tmp_path / "mod.joblib").write_bytes(b"cno_such_module_skvq\nThing\n.")
    status, _, err = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "mod.joblib")
    assert status == 1
    _assert_one_error_line(err, "mod.joblib", "not installed", "no_such_module_skvq")


def test_codes_that_are_not_integers(tmp_path, capsys, fitted):
    np.save(tmp_path / "f.npy", np.load(fitted[0]).astype(float))
    status, _, err = _reconstruct(tmp_path, capsys, tmp_path / "f.npy", fitted[1])
    assert status == 1
    _assert_one_error_line(err, "float64", "integer codes")


def test_codes_out_of_range_or_of_the_wrong_width(tmp_path, capsys, fitted):
    codes = np.load(fitted[0])
    model = joblib.load(fitted[1])
    for bad in (codes + 100, codes[:, :3]):
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(ValueError) as reference:
            model.inverse_transform(bad)
        status, _, err = _reconstruct(tmp_path, capsys, tmp_path / "bad.npy", fitted[1])
        assert status == 1
        _assert_one_error_line(err, " ".join(str(reference.value).split()))
    assert not (tmp_path / "r.npy").exists()


def test_codes_file_that_is_truncated(tmp_path, capsys, fitted):
    (tmp_path / "t.npy").write_bytes(fitted[0].read_bytes()[:30])
    status, _, err = _reconstruct(tmp_path, capsys, tmp_path / "t.npy", fitted[1])
    assert status == 1
    _assert_one_error_line(err, "codes file", "t.npy")


# ------------------------------------------------------------------ warnings, entry point

def test_warnings_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.repeat([[0.0], [1.0], [2.0]], 10, axis=0))
    status, _, err = _quantize(tmp_path, capsys, tmp_path / "x.npy", "--param", "n_values=8",
                               method="kmeans")
    assert status == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skvq quantize: warning: "), err
    assert "n_values=8" in lines[0]


def test_console_script_prints_no_traceback(tmp_path):
    """Through the real entry point (``python -m skvq.cli``), with its exit status."""
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00\x76")  # a header cut short
    result = subprocess.run(
        [sys.executable, "-m", "skvq.cli", "quantize", str(bad), "--method", "l0-dp",
         "--codes", str(tmp_path / "c"), "--model", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 1
    _assert_one_error_line(result.stderr, "bad.npy", "not a valid .npy file")


def test_model_written_with_plain_pickle_loads(tmp_path, capsys, fitted):
    """joblib reads plain pickles too: the check is on what the file holds, not its writer."""
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump(joblib.load(fitted[1]), f)
    status, _, _ = _reconstruct(tmp_path, capsys, fitted[0], tmp_path / "p.pkl")
    assert status == 0
