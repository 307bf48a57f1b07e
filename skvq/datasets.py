"""Data loaders. No data set ships with skvq: loaders read from a path or an environment variable.

``load_mnist`` reads MNIST in its original IDX format (optionally gzipped) from ``path``, or
from the folder named by the ``SKVQ_MNIST`` environment variable. skvq's repository keeps its
copy beside the checkout, in ``../shared/data/mnist``, and its tests and benchmarks look there
when the variable is unset (and skip cleanly when nothing is found). ``load_embeddings`` reads
the all-MiniLM-L6-v2 sentence embeddings (a ``.npy`` file) the same way, from ``path``,
``$SKVQ_EMBEDDINGS`` or ``../shared/data/embeddings/debian_minilm.npy``.
"""

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["find_mnist", "load_embeddings", "load_mnist"]

_IMAGE_FILES = ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte")
_LABEL_FILES = ("t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte")


def _read_idx(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # unsigned byte data
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x}).")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {np.prod(shape)} values.")
    return array.reshape(shape)


def find_mnist(path=None):
    """The MNIST folder: ``path``, else ``$SKVQ_MNIST``, else ``../shared/data/mnist``.

    Parameters
    ----------
    path : str or path-like or None
        Folder holding the IDX files.

    Returns
    -------
    folder : pathlib.Path or None
        The first candidate that holds an MNIST image file, or None.
    """
    candidates = [path] if path is not None else [
        os.environ.get("SKVQ_MNIST"),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist",
        Path.cwd().parent / "shared" / "data" / "mnist",
    ]
    for candidate in candidates:
        if candidate is None:
            continue
        folder = Path(candidate)
        for name in _IMAGE_FILES:
            if (folder / name).exists() or (folder / (name + ".gz")).exists():
                return folder
    return None


def load_mnist(path=None, scale="unit"):
    """Load MNIST images and labels from IDX files.

    The first image file found among ``t10k-images-idx3-ubyte[.gz]`` (the 10,000 test
    images) and ``train-images-idx3-ubyte[.gz]`` is read, with its label file.

    Parameters
    ----------
    path : str or path-like or None
        Folder holding the files; defaults to ``$SKVQ_MNIST``, then ``../shared/data/mnist``.
    scale : {"unit", "symmetric", "raw"}, default="unit"
        Pixels in [0, 1] (``"unit"``), in [-1, 1] (``"symmetric"``, the DeepVQ paper's
        scaling), or the raw ``uint8`` values.

    Returns
    -------
    X : ndarray of shape (n_images, 784)
        Images, one flattened 28 x 28 image per row (float32 unless ``scale="raw"``).
    y : ndarray of shape (n_images,)
        Labels 0-9.

    Raises
    ------
    FileNotFoundError
        If no MNIST file is found.
    """
    folder = find_mnist(path)
    if folder is None:
        raise FileNotFoundError(
            "MNIST not found: pass path= or set SKVQ_MNIST to a folder holding "
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]."
        )
    for images_name, labels_name in zip(_IMAGE_FILES, _LABEL_FILES):
        for suffix in ("", ".gz"):
            images_path = folder / (images_name + suffix)
            if images_path.exists():
                images = _read_idx(images_path)
                labels_path = folder / (labels_name + suffix)
                labels = _read_idx(labels_path) if labels_path.exists() else None
                X = images.reshape(images.shape[0], -1)
                if scale == "unit":
                    X = X.astype(np.float32) / 255.0
                elif scale == "symmetric":
                    X = X.astype(np.float32) / 127.5 - 1.0
                elif scale != "raw":
                    raise ValueError(f"scale must be 'unit', 'symmetric' or 'raw', got {scale!r}.")
                return X, labels
    raise FileNotFoundError(f"No MNIST image file in {folder}.")  # pragma: no cover


def load_embeddings(path=None, n_rows=None):
    """Load the sentence embeddings (59,733 x 384, unit norm) as float32.

    Parameters
    ----------
    path : str or path-like or None
        The ``.npy`` file; defaults to ``$SKVQ_EMBEDDINGS``, then
        ``../shared/data/embeddings/debian_minilm.npy`` (beside the checkout or the current
        folder).
    n_rows : int or None, default=None
        Read only the first ``n_rows`` rows (the file is memory-mapped).

    Returns
    -------
    X : ndarray of shape (n_rows, 384), dtype float32

    Raises
    ------
    FileNotFoundError
        If no file is found.
    """
    tail = Path("shared") / "data" / "embeddings" / "debian_minilm.npy"
    candidates = [path] if path is not None else [
        os.environ.get("SKVQ_EMBEDDINGS"),
        Path(__file__).resolve().parents[2] / tail,
        Path.cwd().parent / tail,
    ]
    for candidate in candidates:
        if candidate is not None and Path(candidate).is_file():
            X = np.load(candidate, mmap_mode="r")
            return np.ascontiguousarray(X if n_rows is None else X[:n_rows], dtype=np.float32)
    raise FileNotFoundError("The embeddings were not found: pass path= or set SKVQ_EMBEDDINGS "
                            "to debian_minilm.npy.")
