"""SCQ layer speed and accuracy: forward+backward time against vector-quantize-pytorch.

d=64, K=1024, 8,192 vectors, lambda=1 (the issue's sizes), float32 on the CPU at 2 threads
(``torch.set_num_threads(2)``). Forward+backward of ``quantized.pow(2).mean() + loss`` for:
skvq's ``SoftConvexQuantizer`` with the relaxed solver (exact simplex projection, the
default), the paper-fidelity relaxed solver (Alg. 2 with m=10 alternating steps) and the
exact solver of eq. (8) (on CPU the compiled active-set method; the dual Newton method, which
served other devices before the batched torch active-set method, is timed too, once, for
comparison); and lucidrains' ``VectorQuantize`` (default settings, training mode) as the
peer. Two codebooks: one at the data's scale (1,024 draws of the inputs' distribution, as
after k-means initialisation or training) and VQ-VAE's initialisation (uniform in
[-1/K, 1/K]). For each solver: eq. (8)'s objective against the exact optimum (mean relative
gap), and the simplex violation of the returned weights (largest of ``-min P`` and
``|1^T p - 1|``). The exact optimum is itself checked against cvxpy
(Clarabel) on a few vectors.

A further section runs the exact methods (the compiled active-set method, the same method
batched in torch as scq_exact runs it on CUDA, and the dual Newton method) on a small, badly
conditioned problem, and the last one times skvq's ``ResidualVQ`` (8 stages of 1,024 codes,
forward+backward on 8,192 vectors of dimension 64) against vector-quantize-pytorch's
``ResidualVQ`` on the same input, with the peak memory of each measured in a fresh process.

``--quick`` uses 1,024 vectors, K=256, d=32 (4 residual stages) and one repeat (a smoke
test).
"""

import multiprocessing
import time

import numpy as np
import torch

from _common import header, parse_args, table, verdict, write
from skvq.neural.layers._kernels import nearest_codeword as nearest_codes
from skvq.neural.layers._scq_layer import SoftConvexQuantizer
from skvq.neural.layers._simplex import scq_exact, scq_objective
from skvq.neural.layers._vq_baselines import ResidualVQ

LAM = 1.0
RELAXED_RATIO, EXACT_RATIO = 2.0, 5.0
NEWTON = "SCQ exact, dual Newton (method='newton')"
FEAS_TOL = 1e-6


def best_of(fns, repeats):
    """Best times of the callables ``fns``, run in turn ``repeats`` times (interleaved)."""
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def scq_step(layer, z):
    def run():
        layer.zero_grad()
        zz = z.clone().requires_grad_()
        out = layer(zz)
        (out.quantized.pow(2).mean() + out.loss).backward()
        return out
    return run


class _NewtonLayer:
    """``scq_exact(method="newton")`` with the layer's loss, for timing the dual method."""

    def __init__(self, codebook):
        self.codebook = codebook.clone().requires_grad_()
        self.last_solver_info = None

    def zero_grad(self):
        self.codebook.grad = None

    def __call__(self, z):
        from types import SimpleNamespace

        codes = nearest_codes(z.detach(), self.codebook.detach())
        q, w, self.last_solver_info = scq_exact(z, self.codebook, LAM, codes=codes,
                                                method="newton", return_info=True)
        loss = (0.75 * torch.nn.functional.mse_loss(q, z.detach())
                + 0.25 * torch.nn.functional.mse_loss(z, q.detach()))
        return SimpleNamespace(quantized=q, weights=w, loss=loss)


def vq_step(z, codebook):
    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(dim=z.shape[1], codebook_size=codebook.shape[0])
    vq.train()

    def run():
        vq.zero_grad()
        zz = z.clone().requires_grad_()
        quantized, _, loss = vq(zz[None])
        (quantized.pow(2).mean() + loss.sum()).backward()
        return quantized
    return run


def cvxpy_check(z, codebook, weights, n):
    """Largest |f(P) - f_cvxpy| / (1 + f_cvxpy) over the first n vectors (float64)."""
    try:
        import cvxpy as cp
    except ImportError:
        return None
    z64, c64 = z[:n].double(), codebook.double()
    codes = nearest_codes(z64, c64)
    ours = scq_objective(z64, c64, weights[:n].double(), codes, LAM).numpy()
    worst = 0.0
    for j in range(n):
        p = cp.Variable(codebook.shape[0])
        ref = np.zeros(codebook.shape[0])
        ref[int(codes[j])] = 1.0
        prob = cp.Problem(cp.Minimize(cp.sum_squares(z64[j].numpy() - c64.numpy().T @ p)
                                      + LAM * cp.sum_squares(p - ref)),
                          [p >= 0, cp.sum(p) == 1])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10)
        worst = max(worst, abs(ours[j] - prob.value) / (1 + prob.value))
    return worst


def ill_conditioned():
    """The exact methods on a badly conditioned problem (d=150, K=200, lambda=0.01): the
    compiled active-set method (CPU), the same method batched in torch (what runs on CUDA,
    timed here on the CPU) and the dual Newton method."""
    gen = torch.Generator().manual_seed(1)
    m, k, d, lam = 6, 200, 150, 0.01
    z = torch.randn(m, d, generator=gen, dtype=torch.float64)
    codebook = torch.randn(k, d, generator=gen, dtype=torch.float64)
    codes = nearest_codes(z, codebook)
    rows, objective = [], {}
    for method, max_iter in (("active-set", None), ("active-set-torch", None),
                             ("newton", 500)):
        scq_exact(z[:1], codebook, lam, codes=codes[:1], method=method)  # compile / warm up
        start = time.perf_counter()
        _, w, info = scq_exact(z, codebook, lam, codes=codes, tol=1e-13, max_iter=max_iter,
                               method=method, return_info=True)
        seconds = time.perf_counter() - start
        objective[method] = scq_objective(z, codebook, w, codes, lam)
        rows.append([method, info.n_iter, info.n_unconverged, f"{info.max_gap:.1e}", seconds])
    excess = {name: float((objective[name] - objective["active-set"]).max())
              for name in ("active-set-torch", "newton")}
    lines = [f"## A badly conditioned problem (d={d}, K={k}, lambda={lam}, {m} vectors, "
             "float64, tol=1e-13)", ""]
    lines += table(["method", "iterations (at most)", "unconverged vectors", "largest gap",
                    "seconds"], rows)
    lines += ["Largest objective of the torch active-set method's points above the compiled "
              f"one's: {excess['active-set-torch']:.3g}; of the Newton method's: "
              f"{excess['newton']:.3g}. The torch active-set method is what scq_exact runs on "
              "CUDA (timed here on the CPU).", ""]
    return lines


RVQ_TIME_RATIO, RVQ_MEMORY_RATIO = 2.0, 2.0


def rvq_step(impl, m, d, k, n_stages, seed=0):
    """Forward+backward of a residual VQ (``impl``: "skvq" or "vector-quantize-pytorch") in
    training mode on ``m`` standard normal vectors, as a closure."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(m, d, generator=gen)
    # the same codebooks for both, at the residuals' scale, as after training
    codebooks = [torch.randn(k, d, generator=gen) * 0.7**q for q in range(n_stages)]
    if impl == "skvq":
        layer = ResidualVQ(d, k, num_quantizers=n_stages)
        with torch.no_grad():
            for stage, codebook in zip(layer.layers, codebooks):
                stage.codebook.copy_(codebook)
    else:
        from vector_quantize_pytorch import ResidualVQ as PeerResidualVQ

        layer = PeerResidualVQ(dim=d, num_quantizers=n_stages, codebook_size=k)
        with torch.no_grad():
            for stage, codebook in zip(layer.layers, codebooks):
                stage.codebook = codebook
    layer.train()

    def run():
        layer.zero_grad()
        zz = z.clone().requires_grad_()
        if impl == "skvq":
            out = layer(zz)
            (out.quantized.pow(2).mean() + out.loss).backward()
            return out.codes
        quantized, indices, loss = layer(zz[None])
        (quantized.pow(2).mean() + loss.sum()).backward()
        return indices
    return run


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _rvq_peak_memory(impl, m, d, k, n_stages, threads):
    """Run in a fresh process: peak resident memory (MB) that one forward+backward adds to
    the process once the layer and the input exist: the peak (``VmHWM``, reset through
    ``/proc/self/clear_refs`` after the imports) minus the resident memory before the run."""
    torch.set_num_threads(threads)
    run = rvq_step(impl, m, d, k, n_stages)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
    before = _status_kib("VmRSS")
    run()
    return (_status_kib("VmHWM") - before) / 1024.0


def residual_vq(m, d, k, n_stages, repeats):
    """skvq's ResidualVQ against vector-quantize-pytorch's: time and peak memory."""
    impls = ("skvq", "vector-quantize-pytorch")
    runs = [rvq_step(impl, m, d, k, n_stages) for impl in impls]
    for run in runs:
        run()  # warm-up
    seconds = best_of(runs, repeats)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        memory = [pool.apply(_rvq_peak_memory, (impl, m, d, k, n_stages,
                                                torch.get_num_threads()))
                  for impl in impls]
    params = n_stages * k * d * 4 / 2**20
    lines = [f"## ResidualVQ: {n_stages} stages of {k:,} codes, {m:,} vectors of dimension "
             f"{d}", ""]
    lines += table(["layer", "fwd+bwd (s)", "peak memory added (MB)"],
                   [[f"ResidualVQ ({impl})", t, f"{mb:.0f}"]
                    for impl, t, mb in zip(impls, seconds, memory)])
    time_ratio = seconds[0] / seconds[1]
    memory_ratio = memory[0] / memory[1]
    lines += [f"Training mode, forward+backward of `quantized.pow(2).mean() + loss`, best of "
              f"{repeats} interleaved runs after one warm-up; ratio skvq / "
              f"vector-quantize-pytorch: time {time_ratio:.2f}x, peak memory "
              f"{memory_ratio:.2f}x (each measured once in a fresh process, the layer and "
              f"input already allocated; the codebooks hold {params:.0f} MB, the input "
              f"{m * d * 4 / 2**20:.0f} MB). skvq's codebooks "
              "learn by gradient (eq. 5's codebook term), the peer's by its default EMA "
              "updates.", ""]
    goals = [(f"ResidualVQ fwd+bwd <= {RVQ_TIME_RATIO:g}x vector-quantize-pytorch's",
              f"{time_ratio:.2f}x", time_ratio <= RVQ_TIME_RATIO),
             (f"ResidualVQ peak memory <= {RVQ_MEMORY_RATIO:g}x vector-quantize-pytorch's",
              f"{memory[0]:.0f} MB against {memory[1]:.0f} MB",
              memory_ratio <= RVQ_MEMORY_RATIO)]
    return lines, goals


def main():
    args = parse_args(__doc__)
    torch.set_num_threads(2)
    if args.quick:
        m, k, d, repeats, newton_repeats, n_check = 1024, 256, 32, 1, 1, 2
    else:
        m, k, d, repeats, newton_repeats, n_check = 8192, 1024, 64, 5, 1, 10
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(m, d, generator=gen)
    codebooks = {
        "data-scale codebook": torch.randn(k, d, generator=gen),
        "VQ-VAE init codebook": torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k, generator=gen),
    }
    solvers = {
        "SCQ relaxed (exact projection)": dict(solver="relaxed"),
        "SCQ relaxed, paper's m=10 steps": dict(solver="relaxed", n_steps=10),
        "SCQ exact (tol=1e-6)": dict(solver="exact"),
        NEWTON: None,
    }
    lines = header(f"SCQ layer: forward+backward against VectorQuantize (d={d}, K={k}, "
                   f"{m:,} vectors)", args, repeats,
                   note="after one warm-up call; torch.set_num_threads(2); the peer was "
                        "measured in the same run, interleaved run by run with skvq")
    lines += [f"torch {torch.__version__}, lambda (alpha) = {LAM}, float32, CPU.", ""]
    goals = []
    for cb_name, codebook in codebooks.items():
        print(cb_name)
        codes = nearest_codes(z, codebook)
        runners = {"VectorQuantize": (vq_step(z, codebook), None)}
        for name, kw in solvers.items():
            if kw is None:
                layer = _NewtonLayer(codebook)
            else:
                layer = SoftConvexQuantizer(d, k, alpha=LAM, **kw)
                with torch.no_grad():
                    layer.codebook.copy_(codebook)
            runners[name] = (scq_step(layer, z), layer)
        for name, (run, _) in runners.items():  # warm-up (compiles the active-set solver)
            if name != NEWTON:
                run()
        # best of `repeats` runs, the layers interleaved run by run, so that the peer and
        # skvq see the same load
        best = {name: np.inf for name in runners}
        outs = {}
        for rep in range(repeats):
            for name, (run, _) in runners.items():
                if name == NEWTON and rep >= newton_repeats:
                    continue
                start = time.perf_counter()
                outs[name] = run()
                best[name] = min(best[name], time.perf_counter() - start)
        vq_best = best.pop("VectorQuantize")
        rows, results = [], {}
        for name in solvers:
            layer = runners[name][1]
            results[name] = (best[name], vq_best, outs[name].weights.detach(),
                             layer.last_solver_info)
            print(f"  {name}: {best[name]:.3f} s (VectorQuantize {vq_best:.3f} s)")
        f_star = scq_objective(z.double(), codebook.double(),
                               results["SCQ exact (tol=1e-6)"][2].double(), codes, LAM)
        for name, (seconds, vq_seconds, weights, info) in results.items():
            f = scq_objective(z.double(), codebook.double(), weights.double(), codes, LAM)
            gap = float(((f - f_star) / f_star).mean())
            viol = max(0.0, float(-weights.min()), float((weights.sum(1) - 1).abs().max()))
            note = ""
            if info is not None:
                note = (f"{info.n_iter} iterations at most, certified gap <= "
                        f"{info.max_gap:.1e}, {info.n_unconverged} unconverged")
            support = float((weights > 0).sum(1).double().mean())
            rows.append([name, seconds, vq_seconds, seconds / vq_seconds, f"{gap:.2e}",
                         f"{viol:.1e}", float(f.mean()), f"{support:.1f}", note])
        rows.append(["VectorQuantize (vector-quantize-pytorch)", vq_best, "", "", "", "", "",
                     "", ""])
        check = cvxpy_check(z, codebook, results["SCQ exact (tol=1e-6)"][2], n_check)
        lines += [f"## {cb_name}", ""]
        lines += table(["layer", "fwd+bwd (s)", "VectorQuantize (s)", "ratio",
                        "objective gap vs exact (mean rel.)", "simplex violation",
                        "mean eq. 8 objective", "mean support", "solver"], rows)
        lines += [f"Best of {repeats} interleaved runs ({newton_repeats} for the dual Newton "
                  "method, without warm-up); ratio = SCQ time / VectorQuantize time. The exact "
                  "rows' objective gap is relative to the active-set solution.", ""]
        if check is not None:
            lines += [f"Exact solver against cvxpy/Clarabel on the first {n_check} vectors: "
                      f"largest |f - f_cvxpy| / (1 + f_cvxpy) = {check:.1e}.", ""]
        relaxed = results["SCQ relaxed (exact projection)"]
        exact = results["SCQ exact (tol=1e-6)"]
        goals.append((f"relaxed fwd+bwd <= {RELAXED_RATIO:g}x VectorQuantize ({cb_name})",
                      f"{relaxed[0] / relaxed[1]:.2f}x", relaxed[0] / relaxed[1] <= RELAXED_RATIO))
        goals.append((f"exact fwd+bwd <= {EXACT_RATIO:g}x VectorQuantize ({cb_name})",
                      f"{exact[0] / exact[1]:.2f}x", exact[0] / exact[1] <= EXACT_RATIO))
        for name in ("SCQ relaxed (exact projection)", "SCQ exact (tol=1e-6)"):
            w = results[name][2]
            viol = max(0.0, float(-w.min()), float((w.sum(1) - 1).abs().max()))
            goals.append((f"{name}: every P column on the simplex to 1e-6 ({cb_name})",
                           f"{viol:.1e}", viol <= FEAS_TOL))
        f_rel = scq_objective(z.double(), codebook.double(), relaxed[2].double(), codes, LAM)
        worst = float(((f_star - f_rel) / (1 + f_rel)).max())
        goals.append((f"exact objective never above relaxed, to float32 rounding ({cb_name})",
                      f"max (f_exact - f_relaxed) / (1 + f_relaxed) = {worst:.1e}",
                      worst <= 1e-6))
    # the same layers and peer at 1 thread
    torch.set_num_threads(1)
    rows = []
    for cb_name, codebook in codebooks.items():
        runs = []
        for solver in ("relaxed", "exact"):
            layer = SoftConvexQuantizer(d, k, alpha=LAM, solver=solver)
            with torch.no_grad():
                layer.codebook.copy_(codebook)
            runs.append(scq_step(layer, z))
        runs.append(vq_step(z, codebook))
        for run in runs:
            run()
        relaxed_s, exact_s, vq_seconds = best_of(runs, repeats)
        rows.append([cb_name, relaxed_s, exact_s, vq_seconds, relaxed_s / vq_seconds,
                     exact_s / vq_seconds])
    lines += ["## At 1 thread (torch.set_num_threads(1))", ""]
    lines += table(["codebook", "SCQ relaxed fwd+bwd (s)", "SCQ exact fwd+bwd (s)",
                    "VectorQuantize (s)", "relaxed ratio", "exact ratio"], rows)
    lines += ill_conditioned()
    torch.set_num_threads(2)
    rvq_lines, rvq_goals = residual_vq(m, d, k, 4 if args.quick else 8, repeats)
    lines += rvq_lines
    goals += rvq_goals
    lines += ["## Goals", ""]
    lines += table(["goal", "measured", "verdict"], [[g, m_, verdict(ok)] for g, m_, ok in goals])
    write(f"{args.out}/bench_scq_layer.md", lines)


if __name__ == "__main__":
    main()
