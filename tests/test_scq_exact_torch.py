"""Tests of the batched torch active-set solver of SCQ's eq. (8) (``method="active-set-torch"``).

The method is the one :func:`scq_exact` runs on CUDA and other devices; here it is forced on
CPU tensors, so that the same torch code path is tested where CI runs. References: cvxpy with
Clarabel (the optimum and the minimiser, solved row by row), the compiled active-set method
(an independent implementation in numba), finite differences (gradcheck).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skvq.neural.layers import _simplex  # noqa: E402
from skvq.neural.layers._simplex import (  # noqa: E402
    _resolve_method,
    nearest_codes,
    scq_exact,
    scq_objective,
    scq_relaxed,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCH = "active-set-torch"
PROBLEMS = [  # (M, K, d, lambda)
    (12, 8, 3, 1.0),
    (12, 30, 5, 0.1),
    (12, 12, 20, 0.5),  # K < d
    (12, 40, 4, 0.01),
    (10, 64, 40, 0.2),  # d // 16 = 2 codewords added per iteration
]


def _problem(m, k, d, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(m, d, generator=gen, dtype=dtype)
    codebook = torch.randn(k, d, generator=gen, dtype=dtype)
    return z, codebook


def _ill_conditioned():
    """The badly conditioned case of ``benchmarks/bench_scq_layer.py`` (d=150, K=200)."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 150, generator=gen, dtype=torch.float64)
    codebook = torch.randn(200, 150, generator=gen, dtype=torch.float64)
    return z, codebook, 0.01


def _cvxpy_eq8(z, codebook, codes, lam, rows=None):
    """Eq. (8) solved by cvxpy (Clarabel) row by row: list of (objective, weights)."""
    cp = pytest.importorskip("cvxpy")
    z, codebook, codes = (np.asarray(a) for a in (z, codebook, codes))
    out = []
    for j in range(z.shape[0]) if rows is None else rows:
        p = cp.Variable(codebook.shape[0])
        ref = np.zeros(codebook.shape[0])
        ref[codes[j]] = 1.0
        objective = cp.sum_squares(z[j] - codebook.T @ p) + lam * cp.sum_squares(p - ref)
        prob = cp.Problem(cp.Minimize(objective), [p >= 0, cp.sum(p) == 1])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        out.append((prob.value, p.value))
    return out


def _numba(z, codebook, codes, lam, tol=1e-14):
    _, w, info = scq_exact(z, codebook, lam, codes=codes, tol=tol, return_info=True,
                           method="active-set")
    assert info.n_unconverged == 0
    return w


def _assert_on_simplex(w, atol=1e-12):
    assert (w >= 0).all()
    assert torch.allclose(w.sum(1), torch.ones(w.shape[0], dtype=w.dtype), atol=atol)


# -- the optimum -------------------------------------------------------------------------------
@pytest.mark.parametrize("m, k, d, lam", PROBLEMS)
def test_matches_cvxpy_and_the_compiled_method(m, k, d, lam):
    z, codebook = _problem(m, k, d)
    codes = nearest_codes(z, codebook)
    quantized, w, info = scq_exact(z, codebook, lam, tol=1e-13, return_info=True, method=TORCH)
    assert info.n_unconverged == 0
    _assert_on_simplex(w)
    assert torch.allclose(quantized, w @ codebook, atol=1e-10)
    obj = scq_objective(z, codebook, w, codes, lam).numpy()
    ref = _cvxpy_eq8(z, codebook, codes, lam)
    ref_obj = np.array([r[0] for r in ref])
    np.testing.assert_allclose(obj, ref_obj, atol=1e-6, rtol=0)
    # strongly convex: the minimiser is unique, so the weights agree too
    np.testing.assert_allclose(w.numpy(), np.array([r[1] for r in ref]), atol=1e-4)
    # the certificate bounds the true suboptimality
    assert np.all(obj - ref_obj <= info.max_gap + 1e-9)
    np.testing.assert_allclose(w.numpy(), _numba(z, codebook, codes, lam).numpy(), atol=1e-9)


def test_ill_conditioned_case_converges_in_a_few_iterations():
    """d=150, K=200, lambda=0.01: the dual Newton method leaves every row unconverged."""
    z, codebook, lam = _ill_conditioned()
    codes = nearest_codes(z, codebook)
    _, w, info = scq_exact(z, codebook, lam, codes=codes, tol=1e-13, return_info=True,
                           method=TORCH)
    assert info.n_unconverged == 0
    assert info.n_iter <= 8  # supports of about 25 codewords, 8 added per iteration
    _assert_on_simplex(w)
    obj = scq_objective(z, codebook, w, codes, lam)
    ref_w = _numba(z, codebook, codes, lam)
    np.testing.assert_allclose(w.numpy(), ref_w.numpy(), atol=1e-9)
    ref = _cvxpy_eq8(z, codebook, codes, lam, rows=[0, 3])
    np.testing.assert_allclose(obj[[0, 3]].numpy(), [r[0] for r in ref], rtol=1e-8)
    np.testing.assert_allclose(w[[0, 3]].numpy(), np.array([r[1] for r in ref]), atol=1e-5)
    # the relaxed point, where the Newton method starts, is far worse here
    _, w_relaxed = scq_relaxed(z, codebook, lam, codes=codes)
    assert (scq_objective(z, codebook, w_relaxed, codes, lam) > obj + 1.0).all()


def test_duplicate_codewords_and_ties():
    """Duplicated codewords (ties in every gradient) and inputs equidistant to two codewords.

    lambda > 0 keeps eq. (8) strictly convex, so the minimiser is unique even then: the
    weight of a duplicated codeword other than the reference ``k`` is split evenly.
    """
    z, base = _problem(10, 6, 4, seed=3)
    codebook = torch.cat([base, base[:3], base[:3]])  # codewords 0-2 three times each
    z[0] = base[1]  # on a codeword (and on its duplicates)
    z[1] = 0.5 * (base[0] + base[2])  # a tie between the nearest codewords
    z[2] = base[:3].mean(0)
    for lam in (0.05, 1.0):
        codes = nearest_codes(z, codebook)
        _, w, info = scq_exact(z, codebook, lam, codes=codes, tol=1e-14, return_info=True,
                               method=TORCH)
        assert info.n_unconverged == 0
        _assert_on_simplex(w)
        obj = scq_objective(z, codebook, w, codes, lam).numpy()
        ref = _cvxpy_eq8(z, codebook, codes, lam)
        np.testing.assert_allclose(obj, [r[0] for r in ref], atol=1e-8, rtol=0)
        np.testing.assert_allclose(w.numpy(), np.array([r[1] for r in ref]), atol=1e-5)
        np.testing.assert_allclose(w.numpy(), _numba(z, codebook, codes, lam).numpy(),
                                   atol=1e-9)
        assert torch.allclose(w[0] @ codebook, z[0], atol=1e-12)  # a codeword is e_k


@pytest.mark.parametrize("lam", [1e-9, 1e-6, 1e3, 1e7])
def test_tiny_and_large_lambda(lam):
    z, codebook = _problem(30, 16, 4, seed=5)
    codes = nearest_codes(z, codebook)
    _, w, info = scq_exact(z, codebook, lam, codes=codes, tol=1e-12, return_info=True,
                           method=TORCH)
    assert info.n_unconverged == 0
    _assert_on_simplex(w)
    obj = scq_objective(z, codebook, w, codes, lam)
    ref = _cvxpy_eq8(z, codebook, codes, lam, rows=range(6))
    np.testing.assert_allclose(obj[:6].numpy(), [r[0] for r in ref], rtol=1e-6, atol=1e-9)
    ref_w = _numba(z, codebook, codes, lam, tol=1e-12)
    ref_obj = scq_objective(z, codebook, ref_w, codes, lam)
    assert torch.allclose(obj, ref_obj, rtol=1e-9, atol=1e-12)
    if lam >= 1e3:  # VQ's limit: f(p*) <= f(e_k) gives lam (1 - p_k)^2 <= |z - c_k|^2
        bound = ((z - codebook[codes]).pow(2).sum(1) / lam).sqrt()
        assert (1 - w.gather(1, codes[:, None])[:, 0] <= bound + 1e-12).all()
        assert torch.equal(w.argmax(1), codes)


def test_tiny_lambda_reproduces_a_point_in_the_hull():
    _, codebook = _problem(1, 16, 4, seed=7)
    z0 = 0.5 * (codebook[0] + codebook[3])
    _, w, info = scq_exact(z0[None], codebook, 1e-9, tol=1e-15, max_iter=200, return_info=True,
                           method=TORCH)
    assert info.n_unconverged == 0
    assert torch.allclose(w @ codebook, z0[None], atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    z, codebook = _problem(200, 64, 8, seed=6, dtype=dtype)
    codes = nearest_codes(z, codebook)
    q, w, info = scq_exact(z, codebook, 1.0, codes=codes, tol=1e-12, return_info=True,
                           method=TORCH)
    assert q.dtype == w.dtype == dtype and info.n_unconverged == 0
    assert (w >= 0).all()
    assert ((w.sum(1) - 1).abs() <= 10 * torch.finfo(dtype).eps).all()
    z64, c64 = z.double(), codebook.double()
    w_ref = _numba(z64, c64, codes, 1.0, tol=1e-13)
    assert torch.allclose(w.double(), w_ref, atol=10 * torch.finfo(dtype).eps)
    f = scq_objective(z64, c64, w.double(), codes, 1.0)
    f_ref = scq_objective(z64, c64, w_ref, codes, 1.0)
    assert ((f - f_ref) <= 1e-6 * (1 + f_ref)).all()


def test_zero_rows():
    codebook = torch.randn(16, 4, dtype=torch.float64, requires_grad=True)
    z = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    q, w, info = scq_exact(z, codebook, 0.5, return_info=True, method=TORCH)
    assert q.shape == (0, 4) and w.shape == (0, 16)
    assert info.n_iter == 0 and info.n_unconverged == 0
    q.sum().backward()
    assert z.grad.shape == (0, 4) and torch.equal(codebook.grad, torch.zeros_like(codebook))


def test_rows_are_independent_of_the_batch_and_of_chunking(monkeypatch):
    """A row's weights do not depend on the other rows of the call nor on memory chunks."""
    z, codebook = _problem(40, 50, 24, seed=8)
    _, w_all = scq_exact(z, codebook, 0.05, tol=1e-14, method=TORCH)
    w_one = torch.cat([scq_exact(z[i:i + 1], codebook, 0.05, tol=1e-14, method=TORCH)[1]
                       for i in range(0, 40, 7)])
    assert torch.allclose(w_all[::7], w_one, atol=1e-12)
    monkeypatch.setattr(_simplex, "_GATHER_BUDGET", 1)  # one row per chunk of the solves
    _, w_chunked = scq_exact(z, codebook, 0.05, tol=1e-14, method=TORCH)
    assert torch.allclose(w_all, w_chunked, atol=1e-12)
    monkeypatch.setattr(_simplex, "_TORCH_ACTIVE_SET_BUDGET", 7 * 50)  # blocks of 7 rows
    q_blocks, w_blocks, info = scq_exact(z, codebook, 0.05, tol=1e-14, return_info=True,
                                         method=TORCH)
    assert torch.allclose(w_all, w_blocks, atol=1e-12) and info.n_unconverged == 0
    assert torch.allclose(q_blocks, w_all @ codebook, atol=1e-12)


def test_one_codeword_per_iteration_reaches_the_same_minimiser():
    z, codebook = _problem(30, 120, 48, seed=9)
    codes = nearest_codes(z, codebook)
    runs = [_simplex._solve_active_set_torch(z, codebook, codes, 0.1, 1e-14, 500, z.dtype,
                                             n_add=n_add) for n_add in (1, 3)]
    (w1, _, _, info1), (w3, _, _, info3) = runs
    assert info1.n_unconverged == info3.n_unconverged == 0
    assert torch.allclose(w1, w3, atol=1e-10)
    assert info3.n_iter < info1.n_iter


# -- honest reports ----------------------------------------------------------------------------
def test_iteration_limit_is_reported_and_the_point_stays_feasible():
    z, codebook = _problem(40, 100, 8, seed=13)
    codes = nearest_codes(z, codebook)
    _, w, info = scq_exact(z, codebook, 0.05, codes=codes, max_iter=1, return_info=True,
                           method=TORCH)
    _, w_ref = scq_exact(z, codebook, 0.05, codes=codes, tol=1e-14, method=TORCH)
    f = scq_objective(z, codebook, w, codes, 0.05)
    f_ref = scq_objective(z, codebook, w_ref, codes, 0.05)
    suboptimal = f > f_ref + 1e-6 * (1 + f_ref)
    assert info.n_unconverged >= int(suboptimal.sum()) > 0
    assert info.max_gap >= float((f - f_ref).max())  # the gap still bounds the excess
    _assert_on_simplex(w)
    _, w_relaxed = scq_relaxed(z, codebook, 0.05, codes=codes)
    assert (f <= scq_objective(z, codebook, w_relaxed, codes, 0.05) + 1e-12).all()


def test_failed_factorisation_is_reported(monkeypatch):
    """Rows whose Cholesky factorisation fails stop unconverged (status 2), at a feasible point."""
    z, codebook = _problem(20, 30, 5, seed=10)
    codes = nearest_codes(z, codebook)

    def failing(h, **kwargs):
        return torch.zeros_like(h), torch.ones(h.shape[:-2], dtype=torch.int32)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing)
    w, _, _, info = _simplex._solve_active_set_torch(z, codebook, codes, 0.1, 1e-12, 100,
                                                     z.dtype)
    # every row keeps VQ's one-hot start, where it fails at its first solve
    one_hot = torch.nn.functional.one_hot(codes, 30).to(z.dtype)
    assert torch.equal(w, one_hot)
    # e_k is optimal iff no reduced gradient C^T (c_k - z) is below the one of k
    g = (codebook[codes] - z) @ codebook.T
    optimal_at_start = (g >= g.gather(1, codes[:, None])).all(1)
    assert info.n_unconverged == int((~optimal_at_start).sum()) > 0


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("m, k, d, lam", PROBLEMS[:3])
def test_gradients_finite_differences(m, k, d, lam):
    z, codebook = _problem(4, k, d, seed=4)
    codes = nearest_codes(z, codebook)  # held fixed: the VQ target is piecewise constant

    def fn(z_, c_):
        return scq_exact(z_, c_, lam, codes=codes, tol=1e-14, method=TORCH)

    inputs = (z.clone().requires_grad_(), codebook.clone().requires_grad_())
    # the full Jacobian on the smallest problem; random projections of it (gradcheck's fast
    # mode, one solve per perturbation instead of one per input entry) on the larger ones
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, fast_mode=k * d > 30)


def test_gradients_equal_the_compiled_paths():
    """Same solution, same implicit differentiation: the same gradients as ``"active-set"``."""
    z, codebook = _problem(25, 40, 6, seed=12)
    codes = nearest_codes(z, codebook)
    up_q = torch.randn(25, 6, dtype=torch.float64)
    up_w = torch.randn(25, 40, dtype=torch.float64)
    grads = []
    for method in (TORCH, "active-set"):
        zz, cc = z.clone().requires_grad_(), codebook.clone().requires_grad_()
        q, w = scq_exact(zz, cc, 0.2, codes=codes, tol=1e-14, method=method)
        ((q * up_q).sum() + (w * up_w).sum()).backward()
        grads.append((zz.grad, cc.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-8)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-8)


# -- method choice -----------------------------------------------------------------------------
def test_method_choice():
    cpu = torch.zeros(2, 4)
    assert _resolve_method("auto", cpu, torch.zeros(8, 4)) == "active-set"
    # a K x K Gram matrix too large for the compiled method: the torch one
    assert _resolve_method("auto", cpu, torch.zeros(5000, 4)) == "active-set-torch"
    meta = torch.zeros(2, 4, device="meta")
    assert _resolve_method("auto", meta, torch.zeros(8, 4, device="meta")) == TORCH
    assert _resolve_method(TORCH, cpu, torch.zeros(8, 4)) == TORCH
    with pytest.raises(ValueError, match="CPU"):
        _resolve_method("active-set", meta, torch.zeros(8, 4, device="meta"))
    for bad in ("qp", "Active-Set", None, 3):
        with pytest.raises(ValueError, match="method must be one of .*active-set-torch"):
            scq_exact(torch.zeros(2, 4), torch.zeros(8, 4), method=bad)


# -- CUDA --------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_ill_conditioned_case_converges_and_matches_cpu():
    z, codebook, lam = _ill_conditioned()
    codes = nearest_codes(z, codebook)
    zc, cc = z.cuda().requires_grad_(), codebook.cuda().requires_grad_()
    q, w, info = scq_exact(zc, cc, lam, codes=codes.cuda(), tol=1e-13, return_info=True)
    assert info.n_unconverged == 0 and info.n_iter <= 8
    assert torch.allclose(w.cpu(), _numba(z, codebook, codes, lam), atol=1e-9)
    q.sum().backward()
    zr, cr = z.clone().requires_grad_(), codebook.clone().requires_grad_()
    scq_exact(zr, cr, lam, codes=codes, tol=1e-13, method="active-set")[0].sum().backward()
    assert torch.allclose(zc.grad.cpu(), zr.grad, atol=1e-6)
    assert torch.allclose(cc.grad.cpu(), cr.grad, atol=1e-6)
