"""Bit-packed codes: any code width from 1 to 16 bits, in one place.

A code of ``n_bits`` bits takes ``n_bits`` bits of storage, not a whole byte or two: 4-bit codes
two to a byte, 3-bit codes eight to three bytes. Each row is packed on its own (rows stay
independent, so that batches and distributed blocks can be packed separately) into
``ceil(n_columns * n_bits / 8)`` bytes.

Bit order (that of faiss' ``BitstringWriter``): the codes of a row form one little-endian bit
stream; bit ``b`` of code ``j`` is bit ``p = j * n_bits + b`` of the stream, which is bit
``p % 8`` of byte ``p // 8``. The unused high bits of a row's last byte are 0.

The quantized torch layers (:mod:`skvq.nn`) store codes in this layout and unpack them on the
device they run on; every estimator's codes can be packed with :func:`pack_codes`.
"""

import numbers

import numpy as np
from numba import njit, prange

from .base import code_dtype

__all__ = ["pack_codes", "packed_row_bytes", "unpack_codes"]


def packed_row_bytes(n_columns, n_bits):
    """Bytes of one packed row: ``ceil(n_columns * n_bits / 8)``."""
    return -(-int(n_columns) * int(n_bits) // 8)


def _check_n_bits(n_bits):
    if isinstance(n_bits, bool) or not isinstance(n_bits, numbers.Integral):
        raise TypeError(f"n_bits must be an int, got {type(n_bits).__name__}.")
    if not 1 <= n_bits <= 16:
        raise ValueError(f"n_bits must be in [1, 16], got {n_bits}.")
    return int(n_bits)


@njit(parallel=True, cache=True)
def _pack(codes, n_bits, out):
    n, c = codes.shape
    for i in prange(n):
        row = out[i]
        for t in range(row.shape[0]):
            row[t] = 0
        pos = 0
        for j in range(c):
            v = np.int64(codes[i, j])
            remaining = n_bits
            while remaining > 0:
                byte = pos >> 3
                shift = pos & 7
                take = min(remaining, 8 - shift)
                row[byte] |= np.uint8((v & ((1 << take) - 1)) << shift)
                v >>= take
                pos += take
                remaining -= take


@njit(parallel=True, cache=True)
def _unpack(packed, n_bits, out):
    n, c = out.shape
    for i in prange(n):
        row = packed[i]
        pos = 0
        for j in range(c):
            v = 0
            got = 0
            while got < n_bits:
                byte = pos >> 3
                shift = pos & 7
                take = min(n_bits - got, 8 - shift)
                v |= ((np.int64(row[byte]) >> shift) & ((1 << take) - 1)) << got
                got += take
                pos += take
            out[i, j] = v


def pack_codes(codes, n_bits):
    """Pack integer codes of ``n_bits`` bits each, row by row.

    Parameters
    ----------
    codes : array-like of shape (n_samples, n_columns)
        Non-negative integer codes below ``2**n_bits`` (what ``transform`` returns).
    n_bits : int
        Code width, 1 to 16.

    Returns
    -------
    packed : ndarray of shape (n_samples, ceil(n_columns * n_bits / 8)), dtype uint8
        Each row's codes as one little-endian bit stream (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from skvq.packing import pack_codes, unpack_codes
    >>> codes = np.array([[1, 2, 3, 15, 0]], dtype=np.uint8)
    >>> packed = pack_codes(codes, 4)
    >>> packed
    array([[ 33, 243,   0]], dtype=uint8)
    >>> unpack_codes(packed, 4, 5)
    array([[ 1,  2,  3, 15,  0]], dtype=uint8)
    """
    n_bits = _check_n_bits(n_bits)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array, got shape {codes.shape}.")
    if codes.dtype == object or codes.dtype.kind not in "biu":
        raise TypeError(f"codes must be an array of integers, got dtype {codes.dtype}.")
    if codes.size:
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= 2**n_bits:
            raise ValueError(f"codes out of range for n_bits={n_bits}: expected integers in "
                             f"[0, {2**n_bits - 1}], got values in [{low}, {high}].")
    out = np.empty((codes.shape[0], packed_row_bytes(codes.shape[1], n_bits)), dtype=np.uint8)
    if codes.size:
        _pack(np.ascontiguousarray(codes.astype(np.int64, copy=False)), n_bits, out)
    else:
        out[:] = 0
    return out


def unpack_codes(packed, n_bits, n_columns):
    """Inverse of :func:`pack_codes`.

    Parameters
    ----------
    packed : array-like of shape (n_samples, ceil(n_columns * n_bits / 8)), dtype uint8
    n_bits : int
        Code width, 1 to 16.
    n_columns : int
        Number of codes per row.

    Returns
    -------
    codes : ndarray of shape (n_samples, n_columns)
        In the smallest unsigned dtype that holds ``2**n_bits`` codes.
    """
    n_bits = _check_n_bits(n_bits)
    if isinstance(n_columns, bool) or not isinstance(n_columns, numbers.Integral) \
            or n_columns < 0:
        raise ValueError(f"n_columns must be a non-negative int, got {n_columns!r}.")
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"packed codes must be uint8, got dtype {packed.dtype}.")
    n_bytes = packed_row_bytes(n_columns, n_bits)
    if packed.ndim != 2 or packed.shape[1] != n_bytes:
        raise ValueError(f"packed codes must have shape (n_samples, {n_bytes}) for "
                         f"n_columns={n_columns} and n_bits={n_bits}, got {packed.shape}.")
    out = np.empty((packed.shape[0], int(n_columns)), dtype=code_dtype(2**n_bits))
    if out.size:
        _unpack(np.ascontiguousarray(packed), n_bits, out)
    return out
