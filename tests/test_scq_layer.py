"""Tests of the soft convex quantization layer and its solvers (SCQ, eq. 8).

References: cvxpy with Clarabel for eq. (8)'s optimum, finite differences (gradcheck) and
cvxpylayers (when installed) for the gradients, a sort-based projection and cvxpy for the
simplex projection, brute-force nearest codewords for the VQ limit.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skvq.neural.layers._kernels import nearest_codeword as nearest_codes  # noqa: E402
from skvq.neural.layers._scq_layer import SoftConvexQuantizer  # noqa: E402
from skvq.neural.layers._simplex import (  # noqa: E402
    project_simplex,
    project_simplex_sort,
    scq_alternating_projection,
    scq_exact,
    scq_objective,
    scq_relaxed,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBLEMS = [  # (M, K, d, lambda)
    (12, 8, 3, 1.0),
    (12, 30, 5, 0.1),
    (12, 12, 20, 0.5),  # K < d: the K x K form of the linear system
    (12, 40, 4, 0.01),
]


def _problem(m, k, d, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(m, d, generator=gen, dtype=dtype)
    codebook = torch.randn(k, d, generator=gen, dtype=dtype)
    return z, codebook


def _cvxpy_eq8(z, codebook, codes, lam):
    cp = pytest.importorskip("cvxpy")
    out = []
    for j in range(z.shape[0]):
        p = cp.Variable(codebook.shape[0])
        ref = np.zeros(codebook.shape[0])
        ref[codes[j]] = 1.0
        objective = cp.sum_squares(z[j] - codebook.T @ p) + lam * cp.sum_squares(p - ref)
        prob = cp.Problem(cp.Minimize(objective), [p >= 0, cp.sum(p) == 1])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        out.append((prob.value, p.value))
    return out


# -- simplex projection ----------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 7, 33, 100])
def test_projection_matches_sort_and_cvxpy(k):
    gen = torch.Generator().manual_seed(k)
    v = torch.randn(50, k, generator=gen, dtype=torch.float64) * 3
    v[0] = 5.0  # all equal
    p = project_simplex(v)
    ref, _ = project_simplex_sort(v)
    assert torch.allclose(p, ref, atol=1e-12)
    assert (p >= 0).all() and torch.allclose(p.sum(1), torch.ones(50, dtype=v.dtype))
    cp = pytest.importorskip("cvxpy")
    x = cp.Variable(k)
    row = v[3].numpy()
    cp.Problem(cp.Minimize(cp.sum_squares(x - row)), [x >= 0, cp.sum(x) == 1]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    np.testing.assert_allclose(p[3].numpy(), x.value, atol=1e-6)


def test_projection_gradient_finite_differences():
    v = (torch.randn(6, 9, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(project_simplex, (v,))


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="CUDA is not available")),
])
@pytest.mark.parametrize("offset", [1e6, 1e8, 1e10, 1e30])
def test_projection_of_large_float32_rows(offset, device):
    """Rows far from 0 in float32 (an offset of 1e6 to 1e30 plus a spread of a few units in
    the last place): the projection equals the float64 sort-based one of the same values,
    taken after subtracting each row's maximum (exact in float64), and the gradient is the
    projection's Jacobian ``I - 1 1^T / |S|`` on the support (the weights were NaN, or off by
    up to 0.02, before the rows were shifted)."""
    gen = torch.Generator().manual_seed(0)
    ulp = offset * 2.0 ** -23
    u = torch.randn(40, 17, generator=gen, dtype=torch.float64) * max(1.0, 4 * ulp)
    v = (offset + u).float()
    v[0] = v[0, 0]  # all equal: the uniform weights
    v[1, :3] = v[1].max() + max(1.0, ulp)  # a three-way tie at the top
    v64 = v.double()
    ref, _ = project_simplex_sort(v64 - v64.amax(1, keepdim=True))
    v = v.to(device).requires_grad_()
    p_dev = project_simplex(v)
    assert p_dev.device == v.device
    p = p_dev.detach().cpu()
    assert torch.allclose(p.double(), ref, atol=1e-6)
    assert torch.allclose(p[0], torch.full((17,), 1 / 17))
    assert torch.allclose(p[1, :3], torch.full((3,), 1 / 3))
    assert (p >= 0).all() and torch.allclose(p.sum(1), torch.ones(40), atol=1e-6)
    w = torch.randn(40, 17, generator=gen)
    (grad,) = torch.autograd.grad((p_dev * w.to(device)).sum(), v)
    grad = grad.cpu()
    support = ref > 0
    mean_w = (w * support).sum(1, keepdim=True) / support.sum(1, keepdim=True)
    assert torch.allclose(grad, (w - mean_w) * support, atol=1e-5)


def test_projection_at_the_float32_limits():
    # the shift overflows to -inf for the smallest entry, which is outside the support anyway
    v = torch.tensor([[-3e38, 3e38, 0.0], [3e38, 3e38, -3e38]])
    p = project_simplex(v)
    assert torch.equal(p, torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]))


def test_projection_bad_shape():
    with pytest.raises(ValueError, match="M, K"):
        project_simplex(torch.zeros(3))
    with pytest.raises(ValueError, match="K >= 1"):
        project_simplex(torch.zeros(3, 0))


# -- the exact solver against cvxpy ---------------------------------------------------------
METHODS = ["active-set", "newton"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("m, k, d, lam", PROBLEMS)
def test_exact_solver_matches_cvxpy(m, k, d, lam, method):
    z, codebook = _problem(m, k, d)
    codes = nearest_codes(z, codebook)
    quantized, weights, info = scq_exact(z, codebook, lam, tol=1e-13, return_info=True,
                                         method=method)
    ref = _cvxpy_eq8(z.numpy(), codebook.numpy(), codes.numpy(), lam)
    obj = scq_objective(z, codebook, weights, codes, lam).numpy()
    ref_obj = np.array([r[0] for r in ref])
    np.testing.assert_allclose(obj, ref_obj, atol=1e-6, rtol=0)
    # the problem is strongly convex: the minimiser itself is unique
    np.testing.assert_allclose(weights.numpy(), np.array([r[1] for r in ref]), atol=1e-4)
    assert torch.allclose(quantized, weights @ codebook, atol=1e-10)
    assert info.n_unconverged == 0
    # the certified gap bounds the true suboptimality
    assert np.all(obj - ref_obj <= info.max_gap + 1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("m, k, d, lam", PROBLEMS)
def test_relaxed_never_better_than_exact_and_on_simplex(m, k, d, lam, method):
    z, codebook = _problem(m, k, d, seed=1)
    codes = nearest_codes(z, codebook)
    _, p_exact = scq_exact(z, codebook, lam, method=method)
    _, p_relaxed = scq_relaxed(z, codebook, lam)
    f_exact = scq_objective(z, codebook, p_exact, codes, lam)
    f_relaxed = scq_objective(z, codebook, p_relaxed, codes, lam)
    assert (f_exact <= f_relaxed + 1e-12).all()
    for p in (p_exact, p_relaxed):
        assert (p >= 0).all()
        assert torch.allclose(p.sum(1), torch.ones(m, dtype=p.dtype), atol=1e-12)


@pytest.mark.parametrize("method", ["active-set", "active-set-torch"])
def test_active_set_wide_supports_match_cvxpy(method):
    """Supports of about 100 codewords (beyond the compiled solver's first work-array size of
    64; the torch method's padded working sets grow past 64 slots)."""
    gen = torch.Generator().manual_seed(11)
    k, d, lam = 150, 100, 1e-2
    codebook = torch.randn(k, d, generator=gen, dtype=torch.float64)
    mix = torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64))
    torch.manual_seed(11)
    z = mix.sample((3,)) @ codebook  # inside the hull: the minimiser spreads its weight
    codes = nearest_codes(z, codebook)
    _, w, info = scq_exact(z, codebook, lam, tol=1e-14, return_info=True, method=method)
    assert (w > 0).sum(1).min() > 64 and info.n_unconverged == 0
    ref = _cvxpy_eq8(z.numpy(), codebook.numpy(), codes.numpy(), lam)
    obj = scq_objective(z, codebook, w, codes, lam).numpy()
    np.testing.assert_allclose(obj, [r[0] for r in ref], atol=1e-8, rtol=0)


def test_active_set_agrees_with_newton_and_one_at_a_time():
    """Adding four codewords per iteration reaches the same minimiser as adding one."""
    from skvq.neural.layers._active_set import active_set_solve

    z, codebook = _problem(60, 200, 16, seed=12)
    codes = nearest_codes(z, codebook)
    args = (z.numpy(), codebook.numpy(), codes.numpy(), 0.3, 1e-14, 1000)
    w1, it1, _, st1 = active_set_solve(*args, n_add=1)
    w4, it4, _, st4 = active_set_solve(*args, n_add=4)
    assert (st1 == 0).all() and (st4 == 0).all()
    np.testing.assert_allclose(w4, w1, atol=1e-10)
    assert it4.sum() < it1.sum()
    _, w_newton = scq_exact(z, codebook, 0.3, tol=1e-14, method="newton", max_iter=500)
    np.testing.assert_allclose(w1, w_newton.numpy(), atol=1e-6)


def test_active_set_iteration_limit_keeps_a_feasible_point_no_worse_than_relaxed():
    z, codebook = _problem(40, 100, 8, seed=13)
    codes = nearest_codes(z, codebook)
    _, w, info = scq_exact(z, codebook, 0.05, max_iter=1, return_info=True,
                           method="active-set")
    assert info.n_unconverged > 0
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(40, dtype=w.dtype))
    _, w_relaxed = scq_relaxed(z, codebook, 0.05, codes=codes)
    f = scq_objective(z, codebook, w, codes, 0.05)
    f_relaxed = scq_objective(z, codebook, w_relaxed, codes, 0.05)
    assert (f <= f_relaxed + 1e-12).all()


def test_active_set_same_weights_at_any_thread_count_and_dtype():
    z, codebook = _problem(300, 64, 8, seed=14)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, w1 = scq_exact(z, codebook, 0.1, method="active-set")
        torch.set_num_threads(2)
        _, w2 = scq_exact(z, codebook, 0.1, method="active-set")
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(w1, w2)  # every row is solved on its own: no dependence on threads
    q32, w32 = scq_exact(z.float(), codebook.float(), 0.1, method="active-set")
    assert w32.dtype == q32.dtype == torch.float32
    assert torch.allclose(w32.double(), w1, atol=1e-6)


def test_active_set_refuses_other_devices():
    meta = torch.zeros(2, 4, device="meta")
    with pytest.raises(ValueError, match="CPU"):
        scq_exact(meta, torch.zeros(8, 4, device="meta"), codes=torch.zeros(2, dtype=torch.long),
                  method="active-set")


def test_relaxed_is_projected_linear_system_solution():
    """Alg. 2 step 3 in its K x K form (direct solve), then the sort-based projection."""
    for k, d in [(20, 4), (5, 9)]:
        z, codebook = _problem(7, k, d, seed=2)
        lam = 0.3
        codes = nearest_codes(z, codebook)
        c = codebook.T
        h = c.T @ c + lam * torch.eye(k, dtype=z.dtype)
        rhs = c.T @ z.T + lam * torch.nn.functional.one_hot(codes, k).T.to(z.dtype)
        p_u = torch.linalg.solve(h, rhs).T
        _, p = scq_relaxed(z, codebook, lam)
        assert torch.allclose(p, project_simplex_sort(p_u)[0], atol=1e-10)
        # the paper's m alternating steps, from the same linear-system solution
        _, p10 = scq_relaxed(z, codebook, lam, n_steps=10)
        assert torch.allclose(p10, scq_alternating_projection(p_u, 10), atol=1e-10)
        assert torch.allclose(p10.sum(1), torch.ones(7, dtype=z.dtype), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_float32_exact_solver_is_feasible_and_converges(method):
    z, codebook = _problem(200, 64, 8, seed=3, dtype=torch.float32)
    codes = nearest_codes(z, codebook)
    _, p, info = scq_exact(z, codebook, 1.0, return_info=True, method=method)
    assert p.dtype == torch.float32 and info.n_unconverged == 0
    assert (p >= 0).all()
    assert ((p.sum(1) - 1).abs() <= 1e-6).all()
    _, p64 = scq_exact(z.double(), codebook.double(), 1.0, tol=1e-13)
    f32 = scq_objective(z.double(), codebook.double(), p.double(), codes, 1.0)
    f64 = scq_objective(z.double(), codebook.double(), p64, codes, 1.0)
    assert ((f32 - f64) <= 1e-5 * (1 + f64)).all()


# -- gradients -------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["exact", "newton", "relaxed"])
@pytest.mark.parametrize("m, k, d, lam", PROBLEMS[:3])
def test_gradients_finite_differences(solver, m, k, d, lam):
    z, codebook = _problem(4, k, d, seed=4)
    codes = nearest_codes(z, codebook)  # held fixed: the VQ target is piecewise constant

    def fn(z_, c_):
        if solver != "relaxed":
            method = "newton" if solver == "newton" else "active-set"
            return scq_exact(z_, c_, lam, codes=codes, tol=1e-14, method=method)
        return scq_relaxed(z_, c_, lam, codes=codes)

    inputs = (z.clone().requires_grad_(), codebook.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_exact_gradient_against_cvxpylayers(method):
    pytest.importorskip("cvxpylayers")
    cp = pytest.importorskip("cvxpy")
    from cvxpylayers.torch import CvxpyLayer

    k, d, lam = 10, 3, 0.5
    z, codebook = _problem(5, k, d, seed=5)
    codes = nearest_codes(z, codebook)
    p = cp.Variable(k)
    zp, cp_mat, ref = cp.Parameter(d), cp.Parameter((d, k)), cp.Parameter(k)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(zp - cp_mat @ p) + lam * cp.sum_squares(p - ref)),
                      [p >= 0, cp.sum(p) == 1])
    layer = CvxpyLayer(prob, parameters=[zp, cp_mat, ref], variables=[p])
    upstream = torch.randn(5, k, dtype=torch.float64)
    z1, c1 = z.clone().requires_grad_(), codebook.clone().requires_grad_()
    (sol,) = layer(z1, c1.T.expand(5, d, k),
                   torch.nn.functional.one_hot(codes, k).to(z.dtype))
    (sol * upstream).sum().backward()
    z2, c2 = z.clone().requires_grad_(), codebook.clone().requires_grad_()
    _, w = scq_exact(z2, c2, lam, codes=codes, tol=1e-14, method=method)
    (w * upstream).sum().backward()
    assert torch.allclose(w, sol, atol=1e-4)
    assert torch.allclose(z2.grad, z1.grad, atol=1e-3)
    assert torch.allclose(c2.grad, c1.grad, atol=1e-3)


# -- the layer -------------------------------------------------------------------------------
def _layer(solver="relaxed", k=16, d=4, lam=1.0, **kw):
    torch.manual_seed(0)
    layer = SoftConvexQuantizer(d, k, alpha=lam, solver=solver, **kw).double()
    with torch.no_grad():
        layer.codebook.normal_()
    return layer


@pytest.mark.parametrize("solver", ["relaxed", "exact"])
def test_layer_outputs_and_shapes(solver):
    layer = _layer(solver)
    z = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    out = layer(z)
    assert out.quantized.shape == z.shape
    assert out.weights.shape == (3, 5, 16)
    assert out.codes.shape == (3, 5) and out.codes.dtype == torch.int64
    w = out.weights.reshape(-1, 16)
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(15, dtype=w.dtype))
    assert torch.equal(out.codes.reshape(-1), w.argmax(1))
    assert torch.allclose(out.quantized, layer.decode_weights(out.weights))
    # statistics against their definitions
    flat = z.detach().reshape(-1, 4)
    err = (flat - out.quantized.detach().reshape(-1, 4)).pow(2).mean()
    assert torch.allclose(out.quantization_error, err)
    counts = torch.bincount(out.codes.reshape(-1), minlength=16).double()
    assert out.usage.item() == pytest.approx(float((counts > 0).double().mean()))
    probs = counts / counts.sum()
    ent = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    assert out.perplexity.item() == pytest.approx(float(ent.exp()))
    # loss: eq. (5)'s codebook and commitment terms
    zq = out.quantized.detach()
    expected = 0.75 * (zq - z.detach()).pow(2).mean() + 0.25 * (z.detach() - zq).pow(2).mean()
    assert out.loss.item() == pytest.approx(float(expected))
    (out.quantized.sum() + out.loss).backward()
    assert z.grad is not None and layer.codebook.grad is not None
    assert torch.isfinite(layer.codebook.grad).all()


def test_layer_image_fmap():
    layer = _layer("exact")
    layer.image_fmap = True
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    out = layer(z)
    assert out.quantized.shape == z.shape
    assert out.weights.shape == (2, 16, 3, 5)
    assert out.codes.shape == (2, 3, 5)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    _, ref = scq_exact(flat, layer.codebook.detach(), 1.0, tol=layer.tol)
    assert torch.allclose(out.weights.permute(0, 2, 3, 1).reshape(-1, 16), ref, atol=1e-8)


@pytest.mark.parametrize("solver", ["relaxed", "exact"])
def test_large_lambda_gives_vq(solver):
    """The paper's remark: lambda -> infinity gives VQ (the nearest codeword)."""
    layer = _layer(solver, lam=1e7)
    z = torch.randn(40, 4, dtype=torch.float64)
    out = layer(z)
    brute = torch.cdist(z, layer.codebook.detach()).argmin(1)
    assert torch.equal(out.codes, brute)
    assert torch.allclose(out.quantized, layer.codebook.detach()[brute], atol=1e-5)


def test_point_in_convex_hull_is_reproduced_exactly():
    layer = _layer("exact", lam=1e-3, tol=1e-14, max_iter=200)
    gen = torch.Generator().manual_seed(7)
    weights = torch.distributions.Dirichlet(torch.ones(16, dtype=torch.float64)).sample((10,))
    z = weights @ layer.codebook.detach()
    out = layer(z)
    # the error is O(lambda): eq. (8) trades the fit against ||p - e_k||^2
    assert (z - out.quantized).pow(2).sum(1).max() < 1e-4
    # and exactly (to the solver tolerance) as lambda -> 0, for a point that is a vertex mix
    z0 = 0.5 * (layer.codebook.detach()[0] + layer.codebook.detach()[3])
    for method in METHODS:
        _, w = scq_exact(z0[None], layer.codebook.detach(), 1e-9, tol=1e-15, max_iter=200,
                         method=method)
        assert torch.allclose(w @ layer.codebook.detach(), z0[None], atol=1e-6)
    del gen


def test_codeword_is_reproduced_exactly():
    """A codeword is its own nearest codeword and the minimiser is e_k for every lambda."""
    for solver in ("relaxed", "exact"):
        layer = _layer(solver, lam=0.5)
        out = layer(layer.codebook.detach()[[2, 5, 9]])
        assert torch.allclose(out.quantized, layer.codebook.detach()[[2, 5, 9]], atol=1e-10)
        assert out.codes.tolist() == [2, 5, 9]


def test_training_step_reduces_quantization_error():
    torch.manual_seed(0)
    layer = SoftConvexQuantizer(4, 8, alpha=0.1, solver="exact")
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    z = torch.randn(256, 4)
    first = None
    for _ in range(30):
        out = layer(z)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = out.quantization_error.item() if first is None else first
    assert layer(z).quantization_error.item() < 0.5 * first


def test_codebook_init_from_data():
    torch.manual_seed(0)
    z = torch.randn(50, 4)
    layer = SoftConvexQuantizer(4, 8, codebook_init="data")
    assert not bool(layer.initialized)
    layer.eval()
    with pytest.raises(RuntimeError, match="not been initialised.*training mode"):
        layer(z)  # evaluation mode never initialises, and never uses the placeholder
    assert not bool(layer.initialized)
    layer.train()
    layer(z)
    # every codeword is one of the batch's vectors, no two the same
    match = (layer.codebook.detach()[:, None, :] == z[None]).all(-1)
    assert bool(layer.initialized) and match.any(1).all()
    assert match.float().argmax(1).unique().numel() == 8
    before = layer.codebook.detach().clone()
    layer(torch.randn(50, 4))  # only the first batch initialises
    assert torch.equal(layer.codebook.detach(), before)
    clone = SoftConvexQuantizer(4, 8, codebook_init="data")
    clone.load_state_dict(layer.state_dict())
    assert bool(clone.initialized) and torch.equal(clone.codebook.detach(), before)
    clone.eval()(z)  # a loaded codebook is an initialised one
    # fewer vectors than codewords: drawn with replacement, plus a little noise
    small = SoftConvexQuantizer(4, 8, codebook_init="data")
    small(z[:3])
    dist = torch.cdist(small.codebook.detach(), z[:3]).min(1).values
    assert (dist < 1e-2).all() and torch.isfinite(small.codebook).all()


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": float("inf")}, "alpha"),
    ({"solver": "cvx"}, "solver"),
    ({"n_steps": 0}, "n_steps"),
    ({"n_steps": 2.5}, "n_steps"),
    ({"solver": "exact", "n_steps": 3}, "n_steps"),
    ({"tol": 0.0}, "tol"),
    ({"max_iter": 0}, "max_iter"),
    ({"commitment_weight": 1.5}, "commitment_weight"),
    ({"codebook_init": "kmeans"}, "codebook_init"),
    ({"dim": "4"}, "dim"),
    ({"dim": 2.5}, "dim"),
    ({"dim": None}, "dim"),
    ({"alpha": "x"}, "alpha"),
    ({"alpha": None}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"max_iter": 2.5}, "max_iter"),
    ({"solver": ["exact"]}, "solver"),
])
def test_bad_parameters(kwargs, match):
    params = {"dim": 4, "codebook_size": 8, **kwargs}
    with pytest.raises(ValueError, match=f"^{match}"):
        SoftConvexQuantizer(**params)


def test_bad_inputs():
    layer = SoftConvexQuantizer(4, 8)
    with pytest.raises(ValueError, match="dim=4"):
        layer(torch.randn(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.tensor([[0.0, float("inf"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="empty"):
        layer(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="dim=4"):
        layer(torch.zeros(16, 0))
    with pytest.raises(ValueError, match="0-d"):
        layer(torch.tensor(3.0))
    with pytest.raises(ValueError, match="overflow torch.float32"):
        layer(torch.full((2, 4), 1e30))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.zeros(2, 4, dtype=torch.float64))
    fmap = SoftConvexQuantizer(4, 8, image_fmap=True)
    with pytest.raises(ValueError, match="N, d, H, W"):
        fmap(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError):
        scq_relaxed(torch.zeros(2, 4), torch.zeros(8, 3))
    with pytest.raises(ValueError, match="alpha"):
        scq_exact(torch.zeros(2, 4), torch.zeros(8, 4), alpha=-1.0)
    with pytest.raises(ValueError, match="method"):
        scq_exact(torch.zeros(2, 4), torch.zeros(8, 4), method="qp")


@pytest.mark.parametrize("scale", [1e10, 1e17, 1e18])
def test_inputs_far_beyond_the_codebook(scale):
    """Inputs many orders of magnitude beyond the codewords, up to float32's overflow check:
    the exact solver still returns weights on the simplex no worse than VQ's one-hot answer;
    the relaxed solver, whose unconstrained weights then exceed 1 / eps, still returns Alg. 2's
    weights (it returned all-zero weights and outputs, then raised, before the projection
    shifted every row by its maximum)."""
    torch.manual_seed(0)
    z = torch.randn(20, 4) * scale
    exact = SoftConvexQuantizer(4, 8, solver="exact")
    out = exact(z)
    w = out.weights.detach().double()
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(20, dtype=w.dtype), atol=1e-6)
    codebook = exact.codebook.detach().double()
    codes = nearest_codes(z.double(), codebook)
    one_hot = torch.nn.functional.one_hot(codes, 8).double()
    f = scq_objective(z.double(), codebook, w, codes, 1.0)
    f_vq = scq_objective(z.double(), codebook, one_hot, codes, 1.0)
    assert (f <= f_vq * (1 + 1e-6)).all()
    assert torch.isfinite(out.loss)
    # Alg. 2 in float64 from the K x K system (not the layer's d x d Woodbury form), projected
    # by sorting after subtracting each row's maximum
    gram = codebook @ codebook.t() + torch.eye(8, dtype=torch.float64)
    p_u = torch.linalg.solve(gram, codebook @ z.double().t() + one_hot.t()).t()
    ref, _ = project_simplex_sort(p_u - p_u.amax(1, keepdim=True))
    relaxed = SoftConvexQuantizer(4, 8)
    relaxed.load_state_dict(exact.state_dict())
    out = relaxed(z)
    assert torch.allclose(out.weights.detach().double(), ref, atol=1e-6)
    assert torch.isfinite(out.loss)
    relaxed.double()
    assert torch.allclose(relaxed(z.double()).weights.detach(), ref, atol=1e-12)


# -- CUDA ------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("solver", ["relaxed", "exact"])
def test_cuda_matches_cpu(solver):
    # the exact solver runs the compiled active-set method on the CPU and the same method
    # batched in torch on CUDA (scq_exact's method="active-set-torch"), both to a tight
    # tolerance; the gradients (implicit differentiation on the support) then agree too
    layer = _layer(solver, k=32, d=6, **({"tol": 1e-13} if solver == "exact" else {}))
    z = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    ref = layer(z)
    ref.quantized.sum().backward()
    out = layer.cuda()(z.detach().cuda())
    assert torch.allclose(out.weights.cpu(), ref.weights, atol=1e-8)
    assert torch.allclose(out.quantized.cpu(), ref.quantized, atol=1e-8)
    zc = z.detach().cuda().requires_grad_()
    layer(zc).quantized.sum().backward()
    assert torch.allclose(zc.grad.cpu(), z.grad, atol=1e-6)
