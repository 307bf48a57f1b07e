"""The device check (``bash .ci/gpu``): skvq's CUDA tests and GPU timings in under 5 minutes.

One command, run from the repository root on a machine with CUDA:

1. **CUDA tests**: every test in ``tests/`` whose name says ``cuda``, ``gpu`` or ``device``,
   or that is skipped without CUDA (a ``skipif`` whose reason names CUDA), selected by this
   module acting as a pytest plugin (``-p gpu_check``), in a child process with a time limit.
2. **Layers** on CUDA, training mode, forward+backward of ``quantized.pow(2).mean() + loss``
   on 8,192 standard normal vectors of dimension 64 (float32), timed with
   ``torch.cuda.synchronize``: skvq's ``VectorQuantize`` (1,024 codes), ``ResidualVQ``
   (8 stages of 1,024 codes) and ``SoftConvexQuantizer`` (1,024 codes at the data's scale,
   relaxed and exact solvers); vector-quantize-pytorch's ``VectorQuantize`` and
   ``ResidualVQ`` on the same input and codebooks when it imports. Each time is given as a
   ratio to the same step on this machine's CPU and, for the peers, skvq / peer; the
   ``ResidualVQ`` peak GPU memory is given against the peer's.
3. **The exact SCQ solver on a badly conditioned problem** (d=150, K=200, lambda=0.01,
   float64, tol=1e-13): ``scq_exact`` on CUDA (the batched torch active-set method,
   ``method="active-set-torch"``) on the 6 vectors of ``bench_scq_layer.py`` and on 4,096
   vectors: iterations, unconverged vectors, largest gap, time, and the objective excess
   over the compiled active-set method on the CPU.
4. **One epoch of each neural estimator** (``DeepVQ``, ``DCN``, ``MDCN``, ``SCQ`` relaxed and
   exact, ``VQAutoencoder``; ``max_epochs=1``, no pretraining epochs) on MNIST's 10,000 test
   images (``skvq.datasets.load_mnist``, else scikit-learn's digits) with
   ``device="cuda"``: fit time, the epoch's own time from ``history_`` and the training
   score, with the CPU's fit time as a ratio.
5. **skvq.nn's QuantizedLinear** (4,096 x 4,096 at 4 bits, float16): forward at batch 1 and 64,
   without and with the decoded-weight cache, against ``nn.Linear``; the decode bandwidth.

A time budget bounds the whole (``--budget``, 270 s by default, the CUDA start included):
every section, and every measurement in it, first checks the time left and is skipped with a
note in the report when too little is left. The report (Markdown) goes to ``$OUT/gpu_check.md``
when ``OUT`` is set, else to ``--out`` (default ``doc/benchmarks/gpu_check.md``); the tests'
log beside it. The exit status is 1 when a CUDA test failed or a section raised, else 0.

Without CUDA (or without torch) it prints ``no CUDA: skipped`` and exits 0. ``--list-tests``
prints the CUDA tests it would run (works without CUDA); ``--device cpu --quick`` runs the
timing code on the CPU at small sizes, to try the script where there is no GPU (its figures
are not GPU figures).
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = ROOT / "doc" / "benchmarks" / "gpu_check.md"
_SELECT_ENV = "SKVQ_GPU_CHECK_SELECT"  # set in the pytest child: the plugin hook below acts
_NAME_WORDS = ("cuda", "gpu", "device")
CPU_FIT_LIMIT = 30.0  # seconds at most for one estimator's reference fit on the CPU


# ------------------------------------------------------------------------------------------
# pytest plugin: the selection of the CUDA tests (loaded in the child by ``-p gpu_check``)
# ------------------------------------------------------------------------------------------
def is_cuda_test(item):
    """A test that exercises CUDA: its id names cuda/gpu/device, or it skips without CUDA."""
    if any(word in item.nodeid.lower() for word in _NAME_WORDS):
        return True
    for mark in item.iter_markers("skipif"):
        reason = " ".join(map(str, [mark.kwargs.get("reason", ""), *mark.args]))
        if "cuda" in reason.lower():
            return True
    return False


def pytest_collection_modifyitems(config, items):
    if not os.environ.get(_SELECT_ENV):
        return
    selected = [item for item in items if is_cuda_test(item)]
    deselected = [item for item in items if not is_cuda_test(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


def _pytest_command(extra):
    return [sys.executable, "-m", "pytest", "-p", "gpu_check", "-p", "no:cacheprovider",
            "-o", "addopts=", "-o", "filterwarnings=ignore::DeprecationWarning:numba.*",
            "--continue-on-collection-errors", *extra, "tests"]


def _pytest_env():
    env = dict(os.environ, **{_SELECT_ENV: "1", "PYTHONUNBUFFERED": "1"})
    paths = [str(ROOT / "benchmarks"), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def list_tests():
    """Print the selected test ids (collection only; needs no GPU)."""
    proc = subprocess.run(_pytest_command(["--collect-only", "-q"]), cwd=ROOT,
                          env=_pytest_env(), capture_output=True, text=True)
    print(proc.stdout.rstrip() or proc.stderr.rstrip())
    return proc.returncode


# ------------------------------------------------------------------------------------------
# budget, timing, report
# ------------------------------------------------------------------------------------------
class Budget:
    """Seconds left of the whole run, counted from the start of :func:`main`."""

    def __init__(self, seconds, start):
        self.seconds, self.start = float(seconds), start

    def elapsed(self):
        return time.perf_counter() - self.start

    def left(self):
        return self.seconds - self.elapsed()


class Skip(Exception):
    """Too little of the budget is left for this measurement."""


class Check:
    """The run's state: device, budget, the report's lines and the failures found."""

    def __init__(self, device, budget, quick):
        import torch

        self.torch, self.device, self.budget, self.quick = torch, device, budget, quick
        self.lines, self.failures = [], []
        self.compare = device != "cpu"  # the CPU's figures beside the device's
        self.report = None

    def need(self, seconds, what):
        if self.budget.left() < seconds:
            raise Skip(f"{what}: skipped, {self.budget.left():.0f} s of the budget left "
                       f"(needs about {seconds:.0f} s)")

    def sync(self, device):
        if str(device).startswith("cuda"):
            self.torch.cuda.synchronize(device)

    def timed(self, fn, device, target=0.5, max_repeats=10):
        """Best time of ``fn`` after a warm-up call, and the warm-up's time (which holds the
        first call's kernel loading and compilation). The repeats fill about ``target``
        seconds, 1 to ``max_repeats``; when the budget cannot hold even one repeat, the
        warm-up's time is returned for both."""
        self.sync(device)
        start = time.perf_counter()
        fn()
        self.sync(device)
        first = time.perf_counter() - start
        if self.budget.left() < 2 * first + 30:
            return first, first
        repeats = max(1, min(max_repeats, int(target / max(first, 1e-4))))
        best = float("inf")
        for _ in range(repeats):
            self.sync(device)
            start = time.perf_counter()
            fn()
            self.sync(device)
            best = min(best, time.perf_counter() - start)
        return best, first

    def section(self, title, fn, need):
        """Run one section; a skip or an error becomes a note, and an error a failure."""
        self.lines += [f"## {title}", ""]
        start = time.perf_counter()
        print(f"== {title} (budget left {self.budget.left():.0f} s)", flush=True)
        try:
            self.need(need, "this section")
            self.lines += fn()
        except Skip as skip:
            self.lines += [f"*{skip}*", ""]
        except Exception as exc:  # the report says what broke; the exit status too
            self.failures.append(f"{title}: {type(exc).__name__}: {exc}")
            self.lines += [f"**Error**: `{type(exc).__name__}: {exc}`", ""]
        took = time.perf_counter() - start
        self.lines += [f"(section: {took:.1f} s)", ""]
        print(f"   {took:.1f} s", flush=True)
        self.write(partial=True)

    def write(self, partial=False):
        """Write the report; after each section too, so that a run stopped from outside
        (the hard time limit of ``.ci/gpu``) leaves the sections it finished."""
        if self.report is None:
            return
        tail = ["*Partial report: the run had not finished when this was written.*", ""]
        text = "\n".join(self.lines + (tail if partial else [])) + "\n"
        self.report.write_text(text, encoding="utf-8")


def _fmt(value, digits=4):
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(columns, rows):
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return out + [""]


def _ms(seconds):
    return "n/a" if seconds is None else f"{1e3 * seconds:.3g}"


def _ratio(a, b):
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.3g}x"


# ------------------------------------------------------------------------------------------
# 1. CUDA tests
# ------------------------------------------------------------------------------------------
def run_tests(check, log_path, limit):
    lines = []
    check.need(30, "the CUDA tests")
    timeout = max(20.0, min(limit, check.budget.left() - 90.0))
    command = _pytest_command(["-v", "-rfEs"])
    try:
        proc = subprocess.run(command, cwd=ROOT, env=_pytest_env(), capture_output=True,
                              text=True, timeout=timeout)
        output, status = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (
            exc.stdout or "")
        status = "timeout"
    Path(log_path).write_text(output, encoding="utf-8")
    results = re.findall(r"^(tests/\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", output,
                         re.M)
    summary = [line for line in output.splitlines() if re.match(r"^=+ .*(passed|failed|"
                                                                 r"skipped|error|deselected)",
                                                                 line)]
    lines += [f"`{' '.join(['python'] + command[1:])}` with `{_SELECT_ENV}=1` "
              f"(time limit {timeout:.0f} s), full log in `{Path(log_path).name}`.", ""]
    lines += [f"Result: {summary[-1].strip('= ') if summary else 'no summary line'}"
              f" (exit status {status}).", ""]
    if results:
        lines += table(["test", "outcome"], [[f"`{nodeid}`", outcome]
                                             for nodeid, outcome in results])
    skipped = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    if skipped:
        lines += ["Skip reasons:", ""] + [f"- `{line}`" for line in skipped] + [""]
    if status == "timeout":
        check.failures.append(f"CUDA tests: stopped at the time limit of {timeout:.0f} s")
    elif status not in (0, 5):  # 5: nothing collected
        check.failures.append(f"CUDA tests: pytest exit status {status}")
    if status == 5:
        lines += ["**No CUDA test was collected.**", ""]
    return lines


# ------------------------------------------------------------------------------------------
# 2. layers
# ------------------------------------------------------------------------------------------
def _step(layer, z, peer=False):
    def run():
        layer.zero_grad(set_to_none=True)
        zz = z.detach().requires_grad_()
        if peer:
            quantized, _, loss = layer(zz[None])
            (quantized.pow(2).mean() + loss.sum()).backward()
        else:
            out = layer(zz)
            (out.quantized.pow(2).mean() + out.loss).backward()
    return run


def _peer_module():
    try:
        import vector_quantize_pytorch
    except Exception as exc:  # missing, or broken against this torch
        return None, f"{type(exc).__name__}: {exc}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return vector_quantize_pytorch, version("vector-quantize-pytorch")
    except PackageNotFoundError:
        return vector_quantize_pytorch, "(version unknown)"


def _make_layers(torch, m, d, k, n_stages):
    """The layers and their inputs, built on the CPU with the same codebooks for skvq and
    the peer: name -> (factory(), input, peer?)."""
    from skvq.neural.layers import ResidualVQ, SoftConvexQuantizer, VectorQuantize

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(m, d, generator=gen)
    codebook = torch.randn(k, d, generator=gen)  # the data's scale, as after training
    stage_codebooks = [torch.randn(k, d, generator=gen) * 0.7**q for q in range(n_stages)]
    peer, _ = _peer_module()

    def vq():
        layer = VectorQuantize(d, k)
        with torch.no_grad():
            layer.codebook.copy_(codebook)
        return layer

    def rvq():
        layer = ResidualVQ(d, k, num_quantizers=n_stages)
        with torch.no_grad():
            for stage, cb in zip(layer.layers, stage_codebooks):
                stage.codebook.copy_(cb)
        return layer

    def scq(solver):
        def make():
            layer = SoftConvexQuantizer(d, k, solver=solver)
            with torch.no_grad():
                layer.codebook.copy_(codebook)
            return layer
        return make

    def peer_vq():
        layer = peer.VectorQuantize(dim=d, codebook_size=k)
        with torch.no_grad():
            layer.codebook = codebook
        return layer

    def peer_rvq():
        layer = peer.ResidualVQ(dim=d, num_quantizers=n_stages, codebook_size=k)
        with torch.no_grad():
            for stage, cb in zip(layer.layers, stage_codebooks):
                stage.codebook = cb
        return layer

    layers = {
        "VectorQuantize (skvq)": (vq, False),
        "VectorQuantize (vector-quantize-pytorch)": (peer_vq, True),
        f"ResidualVQ, {n_stages} stages (skvq)": (rvq, False),
        f"ResidualVQ, {n_stages} stages (vector-quantize-pytorch)": (peer_rvq, True),
        "SoftConvexQuantizer relaxed (skvq)": (scq("relaxed"), False),
        "SoftConvexQuantizer exact (skvq)": (scq("exact"), False),
    }
    if peer is None:
        layers = {name: spec for name, spec in layers.items() if not spec[1]}
    return z, layers


def time_layers(check):
    torch, device = check.torch, check.device
    m, d, k, n_stages = (1024, 32, 256, 4) if check.quick else (8192, 64, 1024, 8)
    z, layers = _make_layers(torch, m, d, k, n_stages)
    peer, peer_version = _peer_module()
    rows, gpu, memory = [], {}, {}
    on_gpu = str(device).startswith("cuda")
    for name, (make, is_peer) in layers.items():
        layer = None
        try:
            check.need(8, name)
            zd = z.to(device)
            layer = make().to(device).train()
            if on_gpu:
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            seconds, first = check.timed(_step(layer, zd, is_peer), device)
            if on_gpu:
                memory[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            gpu[name] = seconds
            layer = None
            cpu, agree = None, "n/a"
            # the same step on the CPU, once after a warm-up, when the device's warm-up
            # says it is cheap enough (the CPU is rarely 50x slower on these sizes)
            if check.compare and check.budget.left() > 60 + 50 * (first + seconds):
                cpu, _ = check.timed(_step(make().train(), z, is_peer), "cpu", target=0.0)
                if not is_peer:
                    # eval-mode outputs of the same layer on both devices (the peer's EMA
                    # updates change its state, so only skvq's layers are compared)
                    with torch.no_grad():
                        ref = make().eval()(z).quantized
                        out = make().to(device).eval()(zd).quantized.cpu()
                    agree = f"{float((out - ref).abs().max()):.1e}"
            rows.append([name, _ms(seconds), _ms(first), _ms(cpu), _ratio(cpu, seconds),
                         f"{memory[name]:.0f}" if name in memory else "n/a", agree])
        except Skip as skip:
            rows.append([name, str(skip), "", "", "", "", ""])
        except Exception as exc:  # one layer's error must not hide the others' figures
            if not is_peer:  # a peer's API change is the peer's, not a failure of skvq
                check.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            rows.append([name, f"**{type(exc).__name__}**: {exc}", "", "", "", "", ""])
        finally:
            layer = None
            if on_gpu:
                torch.cuda.empty_cache()
    lines = [f"{m:,} vectors of dimension {d}, {k:,} codes (float32), training mode; best of "
             "up to 10 runs filling about 0.5 s after one warm-up; CPU: this machine's CPU "
             f"at {torch.get_num_threads()} threads, best of one run after a warm-up. Peer: "
             + (f"vector-quantize-pytorch {peer_version}." if peer is not None
                else f"vector-quantize-pytorch not importable ({peer_version}): no peer rows."),
             ""]
    lines += table(["layer (fwd+bwd)", f"{device} (ms)", "first call (ms)", "CPU (ms)",
                    f"CPU / {device}", "peak memory added (MiB)",
                    f"max abs {device} - CPU (eval output)"], rows)
    for layer_name in ("VectorQuantize", f"ResidualVQ, {n_stages} stages"):
        ours = f"{layer_name} (skvq)"
        theirs = f"{layer_name} (vector-quantize-pytorch)"
        if ours in gpu and theirs in gpu:
            line = (f"{layer_name}: skvq / vector-quantize-pytorch time "
                    f"{gpu[ours] / gpu[theirs]:.2f}x")
            if memory.get(theirs):
                line += f", peak memory {memory[ours] / memory[theirs]:.2f}x"
            lines += [line + ".", ""]
    return lines


# ------------------------------------------------------------------------------------------
# 3. the exact SCQ solver on a badly conditioned problem
# ------------------------------------------------------------------------------------------
def ill_conditioned(check):
    from skvq.neural.layers._kernels import nearest_codeword
    from skvq.neural.layers._simplex import scq_exact, scq_objective

    torch, device = check.torch, check.device
    gen = torch.Generator().manual_seed(1)
    k, d, lam, tol = 200, 150, 0.01, 1e-13
    # the same draws as bench_scq_layer.ill_conditioned: z first, then the codebook
    z_small = torch.randn(6, d, generator=gen, dtype=torch.float64)
    codebook = torch.randn(k, d, generator=gen, dtype=torch.float64)
    z_large = torch.randn(1024 if check.quick else 4096, d, generator=gen, dtype=torch.float64)
    rows = []
    for z in (z_small, z_large):
        check.need(10, f"{z.shape[0]} vectors")
        codes = nearest_codeword(z, codebook)
        zd, cd, kd = z.to(device), codebook.to(device), codes.to(device)
        scq_exact(zd[:2], cd, lam, codes=kd[:2], tol=tol)  # warm-up
        check.sync(device)
        start = time.perf_counter()
        _, w, info = scq_exact(zd, cd, lam, codes=kd, tol=tol, return_info=True)
        check.sync(device)
        seconds = time.perf_counter() - start
        scq_exact(z[:2], codebook, lam, codes=codes[:2], method="active-set")  # compile
        start = time.perf_counter()
        _, w_cpu, info_cpu = scq_exact(z, codebook, lam, codes=codes, tol=tol,
                                       method="active-set", return_info=True)
        cpu_seconds = time.perf_counter() - start
        excess = float((scq_objective(z, codebook, w.cpu(), codes, lam)
                        - scq_objective(z, codebook, w_cpu, codes, lam)).max())
        if info.n_unconverged:
            check.failures.append(f"scq_exact on {device}: {info.n_unconverged} of "
                                  f"{z.shape[0]} vectors unconverged")
        rows.append([f"{z.shape[0]:,}", info.n_iter, info.n_unconverged, f"{info.max_gap:.1e}",
                     _ms(seconds), info_cpu.n_iter, info_cpu.n_unconverged, _ms(cpu_seconds),
                     _ratio(cpu_seconds, seconds), f"{excess:.2g}"])
    lines = [f"d={d}, K={k}, lambda={lam}, float64, tol={tol:g}: `scq_exact` on {device} "
             "(method 'auto': the batched torch active-set method off the CPU) against the "
             "compiled active-set method on the CPU (method='active-set'); the 6 vectors are "
             "bench_scq_layer.py's. The excess is the largest objective of the device's "
             "weights above the CPU's (eq. 8).", ""]
    lines += table(["vectors", "iterations", "unconverged", "largest gap", f"{device} (ms)",
                    "CPU iterations", "CPU unconverged", "CPU (ms)", f"CPU / {device}",
                    "objective excess"], rows)
    return lines


# ------------------------------------------------------------------------------------------
# 4. one epoch of each neural estimator
# ------------------------------------------------------------------------------------------
def _data(quick):
    from skvq.datasets import load_mnist

    try:
        X, _ = load_mnist()
        name = "MNIST's 10,000 test images (784 pixels in [0, 1])"
    except FileNotFoundError:
        from sklearn.datasets import load_digits

        X = load_digits().data / 16.0
        name = "scikit-learn's digits (1,797 images of 64 pixels, in [0, 1]; MNIST not found)"
    if quick:
        X = X[:1000]
        name += ", first 1,000 rows (--quick)"
    return X.astype("float32"), name


def _estimators():
    """name -> (class name, parameters beyond the shared ones). Parameters an estimator does
    not have are left out (so that renamed ones do not break the check)."""
    return {
        "DeepVQ(n_bits=32)": ("DeepVQ", {"n_bits": 32}),
        "DCN(n_bits=8)": ("DCN", {"n_bits": 8, "pretrain_epochs": 0}),
        "MDCN(n_bits=8)": ("MDCN", {"n_bits": 8, "pretrain_epochs": 0}),
        "SCQ relaxed": ("SCQ", {"solver": "relaxed"}),
        "SCQ exact": ("SCQ", {"solver": "exact"}),
        "VQAutoencoder": ("VQAutoencoder", {}),
    }


def _build(class_name, params, device):
    import skvq.neural

    cls = getattr(skvq.neural, class_name)
    shared = {"max_epochs": 1, "device": device, "random_state": 0, "batch_size": 128}
    est = cls()
    known = est.get_params()
    kept = {key: value for key, value in {**shared, **params}.items() if key in known}
    dropped = sorted((set(shared) | set(params)) - set(kept))
    return est.set_params(**kept), kept, dropped


def _fit(est, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        est.fit(X)
        seconds = time.perf_counter() - start
    history = getattr(est, "history_", None) or [{}]
    epoch = history[-1].get("dur")
    return seconds, epoch


def time_estimators(check):
    """All fits on the device first, then the CPU's reference fits as the budget allows."""
    torch, device = check.torch, check.device
    X, data_name = _data(check.quick)
    on_gpu = str(device).startswith("cuda")
    results, notes = {}, []
    for name, (class_name, params) in _estimators().items():
        try:
            check.need(15, name)
            est, _, dropped = _build(class_name, params, device)
            if dropped:
                notes.append(f"{name}: no parameter(s) {', '.join(dropped)} (left out)")
            seconds, epoch = _fit(est, X)
            results[name] = [name, getattr(est, "device_", device), seconds, epoch,
                             float(-est.score(X))]
        except Skip as skip:
            results[name] = [name, str(skip)]
        except Exception as exc:  # one estimator's error must not hide the others' figures
            check.failures.append(f"{name} on {device}: {type(exc).__name__}: {exc}")
            results[name] = [name, f"**{type(exc).__name__}**: {exc}"]
        finally:
            est = None
            if on_gpu:
                torch.cuda.empty_cache()
    cpu = {}
    for name, (class_name, params) in _estimators().items():
        if not check.compare or len(results[name]) < 5:
            continue
        if check.budget.left() < 60:
            notes.append(f"{name}: no CPU fit ({check.budget.left():.0f} s of the budget left)")
            continue
        # the CPU's fit on all rows only when one on 1,000 rows predicts it cheap
        n_small = min(len(X), 1000)
        small, _ = _fit(_build(class_name, params, "cpu")[0], X[:n_small])
        predicted = small * len(X) / n_small
        if predicted <= min(CPU_FIT_LIMIT, check.budget.left() - 60):
            cpu[name] = _fit(_build(class_name, params, "cpu")[0], X)
        else:
            notes.append(f"{name}: no CPU fit (about {predicted:.0f} s predicted from "
                         f"{n_small:,} rows, {check.budget.left():.0f} s of the budget left)")
    rows = []
    for name, row in results.items():
        if len(row) < 5:
            rows.append(row + [""] * 6)
            continue
        _, device_, seconds, epoch, mse = row
        cpu_fit, cpu_epoch = cpu.get(name, (None, None))
        rows.append([name, device_, f"{seconds:.2f}", "n/a" if epoch is None else f"{epoch:.2f}",
                     "n/a" if cpu_fit is None else f"{cpu_fit:.2f}", _ratio(cpu_fit, seconds),
                     _ratio(cpu_epoch, epoch), f"{mse:.4g}"])
    lines = [f"{data_name}; each estimator with `max_epochs=1, device='{device}', "
             "random_state=0, batch_size=128` and its other defaults (DCN and MDCN with "
             "`pretrain_epochs=0`, SCQ with `solver` as named). Fit: wall clock of `fit` "
             "(scaling, initialisation, the epoch); epoch: skorch's `dur` of the epoch in "
             "`history_`; MSE: `-score(X)` on the training rows after the one epoch. CPU: the "
             f"same fit with `device='cpu'`, once, at {torch.get_num_threads()} threads, when a "
             f"fit on 1,000 rows predicts at most {CPU_FIT_LIMIT:.0f} s.", ""]
    lines += table(["estimator", "device_", "fit (s)", "epoch (s)", "CPU fit (s)",
                    f"CPU / {device} fit", f"CPU / {device} epoch", "MSE"], rows)
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
    return lines


# ------------------------------------------------------------------------------------------
# 5. skvq.nn's QuantizedLinear
# ------------------------------------------------------------------------------------------
def quantized_linear(check):
    import copy

    torch, device = check.torch, check.device
    from skvq import L0LeastSquareQuantizer
    from skvq.nn import quantize_model

    # float16 on CUDA; the CPU (--device cpu) runs float32, where its float16 kernels are slow
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    n = 1024 if check.quick else 4096
    torch.manual_seed(0)
    layer = torch.nn.Linear(n, n)
    start = time.perf_counter()
    qlayer, report = quantize_model(layer, L0LeastSquareQuantizer(16, weighting="count"))
    fit = time.perf_counter() - start
    check.need(10, "the QuantizedLinear timings")
    ref = torch.nn.Linear(n, n).to(device, dtype)
    with torch.no_grad():
        ref.weight.copy_(qlayer.dequantize().to(dtype))
        ref.bias.copy_(layer.bias.to(dtype))
    cached = copy.deepcopy(qlayer)
    cached.cache = True  # the decoded weight kept between calls
    qlayer, cached = qlayer.to(device, dtype), cached.to(device, dtype)
    rows = []
    with torch.no_grad():
        for batch in (1, 64):
            x = torch.randn(batch, n, device=device, dtype=dtype)
            t_ref, _ = check.timed(lambda: ref(x), device, target=0.2, max_repeats=50)
            t_q, _ = check.timed(lambda: qlayer(x), device, target=0.2, max_repeats=50)
            t_c, _ = check.timed(lambda: cached(x), device, target=0.2, max_repeats=50)
            diff = float((qlayer(x) - ref(x)).abs().max())
            diff_c = float((cached(x) - ref(x)).abs().max())
            rows.append([batch, _ms(t_ref), _ms(t_q), _ms(t_c), _ratio(t_q, t_ref),
                         _ratio(t_c, t_ref), f"{max(diff, diff_c):.2e}"])
        t_dec, _ = check.timed(lambda: qlayer.dequantize(), device, target=0.2, max_repeats=50)
    size = torch.finfo(dtype).bits // 8
    name = str(dtype).replace("torch.", "")
    lines = [f"A {n:,} x {n:,} `nn.Linear` quantized per output channel at 4 bits by "
             "`skvq.nn.quantize_model(layer, L0LeastSquareQuantizer(16, weighting='count'))` "
             f"(fitted on the CPU in {fit:.1f} s, "
             f"{report.summary()['bits_per_weight']:.3f} bits per weight), on {device} in "
             f"{name}, without and with the decoded-weight cache, against the {name} "
             "`nn.Linear` holding the same dequantized weight; best of up to 50 runs.", ""]
    lines += table(["batch", f"nn.Linear {name} (ms)", "QuantizedLinear (ms)", "cached (ms)",
                    "QuantizedLinear / nn.Linear", "cached / nn.Linear", "max abs diff"], rows)
    lines += [f"Decode alone (unpack + gather): {_ms(t_dec)} ms, "
              f"{n * n * size / t_dec / 1e9:.1f} GB/s of {name} weight.", ""]
    return lines


# ------------------------------------------------------------------------------------------
def _header(check, args, cuda_start):
    torch = check.torch
    device = check.device
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        gpu = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
               f"{props.multi_processor_count} SMs, CUDA {torch.version.cuda}")
    else:
        gpu = "none: timings on the CPU (--device cpu), not GPU figures"
    import numpy
    import sklearn

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    lines = [
        "# GPU check: CUDA tests, layer and estimator timings",
        "",
        f"Produced by `{' '.join(['python benchmarks/gpu_check.py', *sys.argv[1:]])}` on "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, commit {commit}.",
        "",
        f"Device: {gpu}. Host: {platform.platform()}, {os.cpu_count()} CPUs, torch "
        f"{torch.get_num_threads()} threads. Python {platform.python_version()}, torch "
        f"{torch.__version__}, numpy {numpy.__version__}, scikit-learn {sklearn.__version__}.",
        "",
        f"Budget {check.budget.seconds:.0f} s; the device's first use (context, first "
        f"kernel) took {cuda_start:.1f} s.",
        "",
    ]
    if args.quick:
        lines += ["**Quick run (`--quick`, small sizes): not the results.**", ""]
    return lines


def main(argv=None):
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=270.0,
                        help="seconds for the whole run, the CUDA start included (default 270)")
    parser.add_argument("--out", default=None,
                        help="report path (default $OUT/gpu_check.md when OUT is set, else "
                             "doc/benchmarks/gpu_check.md)")
    parser.add_argument("--device", default="cuda",
                        help="'cuda' (default) or 'cpu' to try the timing code without a GPU")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA tests")
    parser.add_argument("--test-limit", type=float, default=150.0,
                        help="seconds at most for the CUDA tests (default 150)")
    parser.add_argument("--list-tests", action="store_true",
                        help="print the CUDA tests that would run, and exit")
    args = parser.parse_args(argv)
    if args.list_tests:
        return list_tests()
    try:
        import torch
    except ImportError:
        print("no CUDA: skipped (torch is not installed); nothing tested or timed.")
        return 0
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA: skipped (torch {torch.__version__} sees no CUDA device); nothing "
              "tested or timed. Run `bash .ci/gpu` on a machine with a GPU.")
        return 0
    if device not in ("cpu",) and not device.startswith("cuda"):
        parser.error(f"--device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
    if args.out:
        report = Path(args.out)
    elif os.environ.get("OUT"):
        report = Path(os.environ["OUT"]) / "gpu_check.md"
    else:
        report = DEFAULT_REPORT
    report.parent.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget, start)
    check = Check(device, budget, args.quick)
    check.report = report
    cuda_start = time.perf_counter()
    x = torch.randn(1024, 1024, device=device)
    float((x @ x).sum())  # context creation and the first kernel: the cold start
    cuda_start = time.perf_counter() - cuda_start
    lines = _header(check, args, cuda_start)
    check.lines = lines
    if args.no_tests:
        check.lines += ["## CUDA tests", "", "*skipped (--no-tests)*", ""]
    else:  # without CUDA (--device cpu) they run too, to try the plumbing: most skip
        check.section("CUDA tests", lambda: run_tests(
            check, report.with_name(report.stem + "_tests.log"), args.test_limit), need=30)
    check.section("Layers: forward+backward", lambda: time_layers(check), need=20)
    check.section("The exact SCQ solver on a badly conditioned problem",
                  lambda: ill_conditioned(check), need=15)
    check.section("One epoch of each neural estimator", lambda: time_estimators(check),
                  need=20)
    check.section("skvq.nn: QuantizedLinear", lambda: quantized_linear(check), need=45)
    check.lines += [f"Total: {budget.elapsed():.0f} s of the {budget.seconds:.0f} s budget.", ""]
    if check.failures:
        check.lines += ["## Failures", ""] + [f"- {f}" for f in check.failures] + [""]
    check.write()
    print(f"wrote {report} ({budget.elapsed():.0f} s)")
    for failure in check.failures:
        print(f"FAILED: {failure}")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
