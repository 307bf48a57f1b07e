"""The skvq command line and the data loaders."""

import gzip
import io

import numpy as np
import pytest

from skvq import cli
from skvq.datasets import find_mnist, load_mnist


def test_compare_on_digits():
    out = io.StringIO()
    assert cli.main(["compare", "--methods", "l0-dp,kmeans-ls,l1-ls", "--n-values", "4"],
                    out=out) == 0
    text = out.getvalue()
    assert "digits" in text
    rows = [line for line in text.splitlines() if line.startswith("| l")
            or line.startswith("| k")]
    assert len(rows) == 3
    mse = {r.split("|")[1].strip(): float(r.split("|")[5]) for r in rows}
    # The exact optimum of the count-weighted objective is never beaten.
    assert mse["l0-dp"] <= min(mse.values()) + 1e-12


def test_compare_on_user_data(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(20, 5)))
    out = io.StringIO()
    assert cli.main(["compare", "--data", str(path), "--methods", "l0-dp"], out=out) == 0
    assert "20 x 5" in out.getvalue()


def test_quantize_then_reconstruct(tmp_path):
    X = np.random.default_rng(0).normal(size=(30, 7))
    np.save(tmp_path / "x.npy", X)
    out = io.StringIO()
    assert cli.main(["quantize", str(tmp_path / "x.npy"), "--method", "L1LeastSquareQuantizer",
                     "--param", "n_values=8", "--param", "solver='tv'",
                     "--codes", str(tmp_path / "c.npy"), "--model", str(tmp_path / "m.joblib")],
                    out=out) == 0
    codes = np.load(tmp_path / "c.npy")
    assert codes.shape == X.shape and codes.dtype == np.uint8 and codes.max() <= 7
    assert cli.main(["reconstruct", str(tmp_path / "c.npy"), "--model",
                     str(tmp_path / "m.joblib"), "--out", str(tmp_path / "r.npy")],
                    out=out) == 0
    rec = np.load(tmp_path / "r.npy")
    assert rec.shape == X.shape and np.unique(rec).size <= 8


@pytest.mark.parametrize("method", ["pq", "opq", "kmeans-vq"])
def test_quantize_then_reconstruct_vector_quantizers(tmp_path, method):
    """PQ and OPQ through the command line: the saved codes decode, with the saved model, to
    the reconstruction of a quantizer fitted in Python with the same parameters."""
    import joblib

    X = np.random.default_rng(0).normal(size=(64, 6))
    np.save(tmp_path / "x.npy", X)
    out = io.StringIO()
    assert cli.main(["quantize", str(tmp_path / "x.npy"), "--method", method,
                     "--param", "n_bits=3", "--param", "n_subspaces=2" if method != "kmeans-vq"
                     else "max_iter=10", "--param", "random_state=0",
                     "--codes", str(tmp_path / "c.npy"), "--model", str(tmp_path / "m.joblib")],
                    out=out) == 0
    assert "bits/sample" in out.getvalue()
    codes = np.load(tmp_path / "c.npy")
    model = joblib.load(tmp_path / "m.joblib")
    assert codes.shape == (64, model.n_subspaces) and codes.max() < 8
    assert cli.main(["reconstruct", str(tmp_path / "c.npy"), "--model",
                     str(tmp_path / "m.joblib"), "--out", str(tmp_path / "r.npy")],
                    out=out) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), model.inverse_transform(codes))


def test_cli_errors_are_messages(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.array([[1.0, np.nan]]))
    code = cli.main(["quantize", str(tmp_path / "x.npy"), "--method", "l0-dp",
                     "--codes", str(tmp_path / "c.npy"), "--model", str(tmp_path / "m")])
    assert code == 1  # bad data; 2 is for mistakes on the command line (tests/test_cli_errors)
    assert "NaN" in capsys.readouterr().err
    assert cli.main(["quantize", str(tmp_path / "x.npy"), "--method", "nope",
                     "--codes", "c", "--model", "m"]) == 2
    assert cli.main(["list"], out=io.StringIO()) == 0


def _write_idx(path, array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_load_mnist_from_a_folder(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1]))
    X, y = load_mnist(tmp_path)
    assert X.shape == (3, 784) and X.dtype == np.float32
    np.testing.assert_allclose(X[0], images[0].ravel() / 255.0)
    np.testing.assert_array_equal(y, [7, 2, 1])
    Xs, _ = load_mnist(tmp_path, scale="symmetric")
    assert Xs.min() >= -1 and Xs.max() <= 1
    with pytest.raises(ValueError, match="scale"):
        load_mnist(tmp_path, scale="bad")


def test_load_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SKVQ_MNIST", str(tmp_path))
    assert find_mnist(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="SKVQ_MNIST"):
        load_mnist(tmp_path)


def test_real_mnist_if_present():
    if find_mnist() is None:
        pytest.skip("MNIST not found (set SKVQ_MNIST or provide ../shared/data/mnist)")
    X, y = load_mnist()
    assert X.shape == (10000, 784) and y.shape == (10000,)
    assert 0.0 <= X.min() and X.max() <= 1.0


@pytest.mark.parametrize("method, params", [
    ("deepvq", ["n_bits=6", "hidden_sizes=(16,)", "max_epochs=2", "b_iter=2"]),
    ("scq", ["codebook_size=8", "n_latents=2", "latent_dim=2", "hidden_size=16",
             "max_epochs=2"]),
])
def test_quantize_then_reconstruct_neural(tmp_path, method, params):
    """The neural quantizers through the command line (torch installed): codes saved, the
    saved model decodes them as the model does in Python."""
    pytest.importorskip("torch")
    pytest.importorskip("skorch")
    import joblib

    X = np.random.default_rng(0).normal(size=(64, 6))
    np.save(tmp_path / "x.npy", X)
    args = ["quantize", str(tmp_path / "x.npy"), "--method", method, "--codes",
            str(tmp_path / "c.npy"), "--model", str(tmp_path / "m.joblib"), "--param",
            "random_state=0", "--param", "device='cpu'"]
    for p in params:
        args += ["--param", p]
    assert cli.main(args, out=io.StringIO()) == 0
    codes = np.load(tmp_path / "c.npy")
    model = joblib.load(tmp_path / "m.joblib")
    assert codes.shape[0] == 64 and codes.dtype.kind == "u"
    assert cli.main(["reconstruct", str(tmp_path / "c.npy"), "--model",
                     str(tmp_path / "m.joblib"), "--out", str(tmp_path / "r.npy")],
                    out=io.StringIO()) == 0
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), model.inverse_transform(codes),
                               rtol=1e-6)
