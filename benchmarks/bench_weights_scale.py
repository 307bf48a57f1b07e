"""Scale run: 10^9 weights quantized per output channel at 4 bits (16 values) by the exact L0 DP.

A synthetic model held in memory as float32 layers of 4,096 x 4,096 (each output channel, a
row of 4,096 weights, gets its own 16-value codebook): Gaussian weights times a log-normal
scale per channel, so that channels differ in scale as in trained networks. Each layer is
quantized the way a user does it with skvq: ``L0LeastSquareQuantizer(n_values=16,
weighting="count", group_size=1).fit(W.T)``, ``transform``, and ``skvq.packing.pack_codes`` to
4 bits a weight. Reported: the total time, the peak resident memory of the process against
the weights' own size, and a check of random channels against the same quantizer fitted on
each channel alone. The peer row is scikit-learn ``KMeans(n_clusters=16, n_init=1)`` per
channel (SqueezeLLM's method as users run it), timed on a sample of channels and
extrapolated (marked as such).
"""

import resource
import sys
import time
import warnings

import numpy as np

from _common import header, parse_args, table, verdict, warm_up, write
from skvq import L0LeastSquareQuantizer
from skvq.packing import pack_codes

ROW = 4096


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_model(n_weights, rng):
    n_layers = max(1, round(n_weights / (ROW * ROW)))
    layers = []
    for _ in range(n_layers):
        W = rng.standard_normal((ROW, ROW), dtype=np.float32)
        W *= (0.02 * rng.lognormal(0.0, 0.5, size=(ROW, 1))).astype(np.float32)
        layers.append(W)
    return layers


def main():
    args = parse_args(__doc__)
    n_weights = 10**7 if args.quick else 10**9
    warm_up()
    L0LeastSquareQuantizer(16, weighting="count", group_size=1).fit(
        np.random.default_rng(0).normal(size=(64, 4)))
    rng = np.random.default_rng(0)
    rss_start = peak_rss_bytes()
    layers = make_model(n_weights, rng)
    weight_bytes = sum(W.nbytes for W in layers)
    n_total = sum(W.size for W in layers)
    rss_model = peak_rss_bytes()
    print(f"{len(layers)} layers, {n_total:,} weights, {weight_bytes / 2**30:.2f} GiB")

    packed, codebooks = [], []
    mse_num = 0.0
    start = time.perf_counter()
    for W in layers:
        q = L0LeastSquareQuantizer(n_values=16, weighting="count", group_size=1).fit(W.T)
        codes = q.transform(W.T)
        packed.append(pack_codes(codes.T, q.bits_per_code_))
        codebooks.append(q.codebook_)
        mse_num += float(np.sum((W.T - q._decode(codes.astype(np.intp))) ** 2,
                                dtype=np.float64))
        del codes
    seconds = time.perf_counter() - start
    rss_peak = peak_rss_bytes()
    code_bytes = sum(p.nbytes for p in packed) + sum(c.nbytes for c in codebooks)
    mse = mse_num / n_total

    # Check: random channels against the quantizer fitted on the channel alone.
    check_rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(20):
        li, row = int(check_rng.integers(len(layers))), int(check_rng.integers(ROW))
        alone = L0LeastSquareQuantizer(n_values=16, weighting="count").fit(
            layers[li][row][:, None])
        worst = max(worst, float(np.max(np.abs(alone.codebook_ - codebooks[li][row]))
                                 / np.max(np.abs(alone.codebook_))))

    # Peer: scikit-learn KMeans per channel, on a sample of channels, extrapolated.
    from sklearn.cluster import KMeans

    n_sample = 20 if args.quick else 200
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in range(n_sample):
            KMeans(n_clusters=16, n_init=1, random_state=0).fit(layers[0][row][:, None])
    kmeans_per_row = (time.perf_counter() - t0) / n_sample
    n_rows = n_total // ROW
    kmeans_total = kmeans_per_row * n_rows

    extra_ratio = (rss_peak - rss_start) / weight_bytes
    lines = header("10^9 weights per channel at 4 bits", args, 1,
                   note="one run, numba kernels compiled first, both cores")
    lines += [
        f"{len(layers)} float32 layers of {ROW} x {ROW}: {n_total:,} weights, "
        f"{weight_bytes / 2**30:.2f} GiB; {n_rows:,} output channels of {ROW} weights.",
        "",
    ]
    lines += table(
        ["method", "time (s)", "time per channel (ms)", "weight MSE", "stored bytes",
         "peak memory / weights"],
        [["skvq L0 DP per channel (16 values) + 4-bit packing", seconds,
          1e3 * seconds / n_rows, mse, f"{code_bytes:,}", extra_ratio],
         [f"scikit-learn KMeans(16, n_init=1) per channel (extrapolated from {n_sample} "
          "channels)", kmeans_total, 1e3 * kmeans_per_row, "", "", ""]])
    lines += [
        f"Peak resident memory of the process: {rss_peak / 2**30:.2f} GiB, of which the "
        f"model itself {(rss_model - rss_start) / 2**30:.2f} GiB; the ratio above is the peak "
        "growth from the start of the run (the model included) over the weights' size.",
        "",
        f"Exactness check: 20 random channels fitted alone, largest relative codebook "
        f"difference {worst:.1e}.",
        "",
        f"Goal: 10^9 weights per channel at 4 bits in <= 5 minutes: {verdict(seconds <= 300)} "
        f"({seconds:.0f} s); memory <= 2x the weights: {verdict(extra_ratio <= 2.0)} "
        f"({extra_ratio:.2f}x). skvq is {kmeans_total / seconds:.0f}x faster than per-channel "
        "KMeans here.",
        "",
    ]
    if args.quick:
        lines[lines.index(next(l for l in lines if l.startswith("Goal")))] = (
            "Goal lines are judged on the full run only.")
    write(f"{args.out}/bench_weights_scale.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
