"""Finite scalar quantization (FSQ; Mentzer, Minnen, Agustsson and Tschannen, 2023).

FSQ replaces the learned codebook of VQ by a fixed grid: the encoder's vector is projected to
``len(levels)`` dimensions, each dimension is bounded (``tanh``) and rounded to one of
``levels[i]`` values in ``[-1, 1]``, and the grid point is projected back. The codebook is
implicit: its ``prod(levels)`` codewords are the projected grid points, and a code is the
grid point's mixed-radix index. Nothing is learned in the quantizer but the projections, so
there is no codebook loss, no commitment loss and no dead codeword to replace.

Names follow vector-quantize-pytorch's ``FSQ`` (``levels``, ``dim``, ``preserve_symmetry``,
``projection_has_bias``, ``project_in``/``project_out``, ``codebook_dim``,
``implicit_codebook``, ``codes_to_indices``), whose outputs and indices this layer matches
on the same input and projections (tests/test_fsq.py).

This module imports torch: import it only from code that already needs torch.
"""

import math
import numbers

import numpy as np
import torch
from torch import nn

from ._bottleneck import Bottleneck, FlatQuantization, InvalidParameterError, check_param

__all__ = ["FSQ", "fsq_levels"]

# The bound's tanh is stretched by 1 + _BOUND_EPS so that the extreme levels are reached by
# finite inputs (the paper's Appendix A.1 and vector-quantize-pytorch use 1e-3).
_BOUND_EPS = 1e-3


def fsq_levels(codebook_size):
    """FSQ's levels for a codebook of ``codebook_size`` codes: the rule of the estimators.

    The factorisation ``codebook_size = prod(levels)`` into the fewest levels between 3 and 8,
    and among those the most even one (the sorted levels smallest in lexicographic order,
    largest first). It reproduces the FSQ paper's table of recommended levels (Mentzer et
    al., 2023) for the sizes it lists, exactly:

    ==================  ===================
    ``codebook_size``   levels
    ==================  ===================
    240  (about 2^8)    (8, 6, 5)
    1000 (about 2^10)   (8, 5, 5, 5)
    4375 (about 2^12)   (7, 5, 5, 5, 5)
    15360 (about 2^14)  (8, 8, 8, 6, 5)
    64000 (about 2^16)  (8, 8, 8, 5, 5, 5)
    ==================  ===================

    and gives for example ``(4, 4)`` for 16, ``(8, 8)`` for 64, ``(8, 8, 4)`` for 256 and
    ``(8, 8, 4, 4)`` for 1024.

    Parameters
    ----------
    codebook_size : int
        Number of codes, at least 3.

    Returns
    -------
    levels : tuple of int
        In decreasing order.

    Raises
    ------
    ValueError
        When ``codebook_size`` is not a product of integers between 3 and 8 (a prime factor
        above 7, or a factor 2 left alone, as in 2, 10 or 22): the message says to pass
        ``levels`` explicitly.
    """
    # The FSQ paper's recommended levels are all in 5..8; 3 and 4 are allowed so that small
    # codebooks (16, 32, 128) still have a factorisation. 2 is left out: the standard bound
    # puts its two values at -1 and 0 (see FSQ's preserve_symmetry).
    k = check_param("codebook_size", codebook_size, "int", low=1)
    exponents = {}
    rest = k
    for p in (2, 3, 5, 7):
        exponents[p] = 0
        while rest % p == 0:
            rest //= p
            exponents[p] += 1
    a, b = exponents[2], exponents[3]
    best = None
    if rest == 1 and k > 1:
        fixed = (5,) * exponents[5] + (7,) * exponents[7]  # 5 and 7 combine with nothing <= 8
        # 2^a 3^b as 8s (2^3), 6s (2 x 3), 4s (2^2) and 3s: each 3 in a 6 or a 3.
        for n6 in range(min(a, b) + 1):
            n3, left = b - n6, a - n6
            for n8 in range(left // 3 + 1):
                n4, odd = divmod(left - 3 * n8, 2)
                if odd:
                    continue  # a lone 2 is not a level of the rule
                levels = tuple(sorted((8,) * n8 + (6,) * n6 + (4,) * n4 + (3,) * n3 + fixed,
                                      reverse=True))
                if best is None or (len(levels), levels) < (len(best), best):
                    best = levels
    if best is None:
        raise ValueError(
            f"FSQ with codebook_size={k}: the codebook size is the product of the levels, "
            f"and {k} is not a product of levels between 3 and 8 (the rule that picks them); "
            "pass levels explicitly (bottleneck_params={'levels': [...]} in the estimators) "
            "with prod(levels) == codebook_size, or choose a codebook_size such as 16, 64, "
            "240, 256, 1000 or 4375.")
    return best


def _check_levels(levels, preserve_symmetry):
    """``levels`` as a tuple of ints >= 2 (3 without ``preserve_symmetry``), or an error."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, (list, tuple, np.ndarray)):
        raise InvalidParameterError(
            f"levels must be a list or tuple of ints (levels per dimension), got {levels!r}.")
    if np.ndim(levels) != 1 or len(levels) == 0:
        raise InvalidParameterError(
            f"levels must be a non-empty 1-d list of ints, got {levels!r}.")
    out = []
    for i, value in enumerate(levels):
        if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
            raise InvalidParameterError(
                f"levels must hold ints, got {value!r} ({type(value).__name__}) at "
                f"position {i}.")
        value = int(value)
        low = 2 if preserve_symmetry else 3
        if value < low:
            raise InvalidParameterError(
                f"levels must be >= {low}"
                + ("" if preserve_symmetry else
                   " (a level of 2 needs preserve_symmetry=True: the standard bound puts "
                   "its two values at -1 and 0, reaching -1 only for inputs below about "
                   "-3.8)")
                + f", got {value} at position {i}.")
        out.append(value)
    return tuple(out)


class FSQ(Bottleneck):
    r"""Finite scalar quantization: a fixed grid of ``prod(levels)`` codes (Mentzer et al.).

    Each vector ``z`` (length ``dim``) is projected to ``n = len(levels)`` values
    (``project_in``, a linear layer, when ``dim != n``), each value ``h_i`` is bounded and
    rounded to one of ``L_i = levels[i]`` points of ``[-1, 1]`` (the paper's Appendix A.1):

    .. math:: \hat z_i = \mathrm{round}\big(f(h_i)\big) / \lfloor L_i / 2 \rfloor, \qquad
              f(h) = \tanh(h + s_i)\, \tfrac{(L_i - 1)(1 + \epsilon)}{2} - o_i

    with ``o_i = 1/2`` for even ``L_i`` (0 for odd) and ``s_i = atanh(o_i / ((L_i - 1)(1 +
    eps) / 2))``, ``eps = 1e-3``; the grid point is projected back (``project_out``). The code
    is the grid point's index ``sum_i k_i prod_{j<i} L_j``, ``k_i`` the level of dimension
    ``i`` (0 to ``L_i - 1``, the first dimension the fastest), in ``[0, prod(levels))``.
    In training the rounding passes gradients straight through (``f(h) + sg[round(f(h)) -
    f(h)]``, the paper's STE); in evaluation (``eval()``) the output is the decoded code
    itself, exactly ``decode_codes(codes)``. The loss is zero: the grid is fixed and the
    projections learn from the reconstruction loss.

    With ``preserve_symmetry=True`` the levels are placed symmetrically,
    ``2 floor((L - 1)(tanh(h) + 1) / 2 + 1/2) / (L - 1) - 1`` (arXiv:2411.19842, Sec. 3.2, as
    vector-quantize-pytorch), which allows ``L = 2``.

    Parameters
    ----------
    dim : int
        Vector length of the input and the output.
    codebook_size : int or None, default=None
        Number of codes ``prod(levels)``. With ``levels=None`` the levels are chosen from it
        by :func:`fsq_levels` (the factorisation into the fewest levels between 3 and 8,
        which gives the FSQ paper's recommended levels for 240, 1000, 4375, 15360 and 64000
        codes); with both given they must agree.
    levels : sequence of int or None, default=None
        Levels per projected dimension (each >= 3, or >= 2 with ``preserve_symmetry``).
    preserve_symmetry : bool, default=False
        Symmetric levels (see above).
    projection_has_bias : bool, default=True
        The projections have a bias.
    image_fmap : bool, default=False
        Inputs are ``(N, dim, H, W)`` feature maps.

    Attributes
    ----------
    levels : tuple of int
    codebook_dim : int
        ``len(levels)``, the projected dimension.
    has_projections : bool
        ``dim != len(levels)``.
    project_in, project_out : Linear or Identity
        ``dim -> codebook_dim`` and back.

    Notes
    -----
    The codes are computed in integer arithmetic (vector-quantize-pytorch sums the scaled
    levels in floating point and rounds, which loses exactness beyond ``2^24`` codes in
    float32). Levels whose bound would reach past the last level (``L`` above about 1000,
    where ``(L - 1) eps / 2 > 1/2``) are clipped to it. vector-quantize-pytorch's
    ``indices_to_codes`` (indices to output vectors) is :meth:`decode_codes` here.

    References
    ----------
    F. Mentzer, D. Minnen, E. Agustsson and M. Tschannen, "Finite scalar quantization:
    VQ-VAE made simple", ICLR 2024 (arXiv:2309.15505).

    Examples
    --------
    >>> import torch
    >>> from skvq.neural import FSQ
    >>> layer = FSQ(dim=16, levels=[8, 5, 5, 5])
    >>> layer.codebook_size, layer.codebook_dim
    (1000, 4)
    >>> out = layer.eval()(torch.randn(2, 10, 16))
    >>> out.codes.shape, bool(torch.equal(out.quantized, layer.decode_codes(out.codes)))
    (torch.Size([2, 10]), True)
    """

    def __init__(self, dim, codebook_size=None, levels=None, preserve_symmetry=False,
                 projection_has_bias=True, image_fmap=False):
        codebook_size = check_param("codebook_size", codebook_size, "int", low=1,
                                    allow_none=True)
        preserve_symmetry = check_param("preserve_symmetry", preserve_symmetry, "bool")
        if levels is None:
            if codebook_size is None:
                raise InvalidParameterError(
                    "FSQ needs codebook_size or levels (or both, with prod(levels) == "
                    "codebook_size).")
            # dim, image_fmap and the size limit are checked before the factorisation
            super().__init__(dim, codebook_size, image_fmap=image_fmap)
            levels = fsq_levels(codebook_size)
        else:
            levels = _check_levels(levels, preserve_symmetry)
            product = math.prod(levels)
            if codebook_size is not None and codebook_size != product:
                raise ValueError(
                    f"FSQ's codebook_size is the product of its levels: levels={list(levels)} "
                    f"give {product} codes, but codebook_size={codebook_size}.")
            super().__init__(dim, product, image_fmap=image_fmap)
        self.levels = levels
        self.preserve_symmetry = preserve_symmetry
        self.projection_has_bias = check_param("projection_has_bias", projection_has_bias,
                                               "bool")
        self.codebook_dim = len(levels)
        # Non-persistent buffers (as vector-quantize-pytorch's): they follow .to(), .double()
        # and give a layer without projections its dtype and device.
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.get_default_dtype()),
                             persistent=False)
        self.register_buffer("_basis", torch.tensor(
            [math.prod(levels[:i]) for i in range(len(levels))], dtype=torch.int64),
            persistent=False)
        self.has_projections = self.dim != self.codebook_dim
        if self.has_projections:
            self.project_in = nn.Linear(self.dim, self.codebook_dim, bias=projection_has_bias)
            self.project_out = nn.Linear(self.codebook_dim, self.dim, bias=projection_has_bias)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()

    def extra_repr(self):
        return (f"dim={self.dim}, levels={list(self.levels)}, codebook_size="
                f"{self.codebook_size}, preserve_symmetry={self.preserve_symmetry}")

    def _parameter_dtype_device(self):
        # the projections' dtype and device, or without projections the levels buffer's:
        # forward refuses inputs of another dtype or device, as every bottleneck does
        dtype, device = super()._parameter_dtype_device()
        if dtype is None:
            return self._levels.dtype, self._levels.device
        return dtype, device

    # -- the grid ---------------------------------------------------------------------------
    def _level_tensors(self, dtype, device):
        """Levels (float) and the mixed-radix basis (int64)."""
        return self._levels.to(dtype=dtype, device=device), self._basis.to(device)

    def _grid_values(self, level_index, levels):
        """Grid values in ``[-1, 1]`` of per-dimension level indices (float, 0..L-1)."""
        if self.preserve_symmetry:
            return level_index * (2.0 / (levels - 1)) - 1.0
        half_width = torch.floor(levels / 2)
        return (level_index - half_width) / half_width

    def indices_to_level_indices(self, indices):
        """Per-dimension levels ``(..., codebook_dim)`` (int64, ``0..L_i-1``) of codes."""
        basis = self._basis.to(indices.device)
        sizes = torch.tensor(self.levels, dtype=torch.int64, device=indices.device)
        return (indices.long()[..., None] // basis) % sizes

    def codes_to_indices(self, zhat):
        """Codes (indices) of grid points ``zhat`` of shape ``(..., codebook_dim)`` with
        values in ``[-1, 1]`` (vector-quantize-pytorch's ``codes_to_indices``)."""
        if zhat.shape[-1] != self.codebook_dim:
            raise ValueError(f"zhat must have codebook_dim={self.codebook_dim} values in its "
                             f"last axis, got shape {tuple(zhat.shape)}.")
        levels, basis = self._level_tensors(zhat.dtype, zhat.device)
        if self.preserve_symmetry:
            level_index = (zhat + 1.0) / (2.0 / (levels - 1))
        else:
            half_width = torch.floor(levels / 2)
            level_index = zhat * half_width + half_width
        return (level_index.round().long() * basis).sum(-1)

    @property
    def implicit_codebook(self):
        """The ``(codebook_size, codebook_dim)`` grid points of every code, in code order."""
        dtype, device = self._parameter_dtype_device()
        indices = torch.arange(self.codebook_size, device=device)
        levels, _ = self._level_tensors(dtype, device)
        return self._grid_values(self.indices_to_level_indices(indices).to(dtype), levels)

    def codebook_vectors(self):
        """The ``(codebook_size, dim)`` output vectors of every code (the projected grid)."""
        return self.project_out(self.implicit_codebook)

    def _decode_flat(self, codes, dtype, device):
        levels, _ = self._level_tensors(dtype, device)
        grid = self._grid_values(self.indices_to_level_indices(codes).to(dtype), levels)
        return self.project_out(grid)

    def decode_codes(self, codes):
        """Output vectors of ``codes`` in the input layout, without building the codebook."""
        self._check_codes(codes)
        dtype, device = self._parameter_dtype_device()
        flat = self._decode_flat(codes.reshape(-1).to(device), dtype, device)
        return self._from_flat(flat, tuple(codes.shape))

    # -- forward ----------------------------------------------------------------------------
    def _bound_and_round(self, h):
        """Per-dimension level indices (float, ``0..L-1``) and the grid values with the
        straight-through gradient."""
        levels, _ = self._level_tensors(h.dtype, h.device)
        if self.preserve_symmetry:
            bracket = (levels - 1) * (torch.tanh(h) + 1) / 2 + 0.5
            level_index = torch.minimum(bracket.floor(), levels - 1)
            ste = bracket + (level_index - bracket).detach()
            return level_index, ste * (2.0 / (levels - 1)) - 1.0
        half_l = (levels - 1) * (1 + _BOUND_EPS) / 2
        offset = torch.where(torch.remainder(levels, 2) == 0, 0.5, 0.0).to(h.dtype)
        shift = torch.atanh(offset / half_l)
        bounded = torch.tanh(h + shift) * half_l - offset
        half_width = torch.floor(levels / 2)
        rounded = torch.minimum(torch.maximum(bounded.round(), -half_width),
                                levels - 1 - half_width)
        ste = bounded + (rounded - bounded).detach()
        return rounded + half_width, ste / half_width

    def _quantize_flat(self, z):
        h = self.project_in(z)
        level_index, values = self._bound_and_round(h)
        _, basis = self._level_tensors(h.dtype, h.device)
        codes = (level_index.detach().long() * basis).sum(1)
        if self.training:
            quantized = self.project_out(values)
        else:
            quantized = self._decode_flat(codes, z.dtype, z.device)
        return FlatQuantization(quantized, codes, None, z.new_zeros(()))
