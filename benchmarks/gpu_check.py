"""GPU timings for the device check (``bash .ci/gpu``): skvq's quantized layers on CUDA.

A 4096 x 4096 ``nn.Linear`` quantized per channel at 4 bits by :func:`skvq.nn.quantize_model`
(fitted on the CPU), moved to CUDA in float16: the time of one forward at batch 1 and 64
without and with the decoded-weight cache, against the float16 ``nn.Linear``; the decode
alone (unpack + gather) in GB/s of decoded weight; and the outputs' agreement with the
float16 layer holding the same dequantized weight. Prints a small table; without CUDA it says
so and exits 0.
"""

import sys
import time

import torch


def cuda_time(fn, repeats=50):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main():
    if not torch.cuda.is_available():
        print("CUDA is not available: no GPU timings.")
        return 0
    from skvq import L0LeastSquareQuantizer
    from skvq.nn import quantize_model

    torch.manual_seed(0)
    layer = torch.nn.Linear(4096, 4096)
    start = time.perf_counter()
    qlayer, report = quantize_model(layer, L0LeastSquareQuantizer(16, weighting="count"))
    fit = time.perf_counter() - start
    ref = torch.nn.Linear(4096, 4096).half().cuda()
    with torch.no_grad():
        ref.weight.copy_(qlayer.dequantize().half())
        ref.bias.copy_(layer.bias.half())
    qlayer = qlayer.half().cuda()
    cached = quantize_model(layer, L0LeastSquareQuantizer(16, weighting="count"),
                            cache=True)[0].half().cuda()
    print(f"fit on the CPU: {fit:.2f} s, {report.summary()['bits_per_weight']:.3f} bits/weight")
    print("| batch | nn.Linear fp16 (ms) | QuantizedLinear (ms) | cached (ms) | max |diff| |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for batch in (1, 64):
            x = torch.randn(batch, 4096, device="cuda", dtype=torch.float16)
            t_ref = cuda_time(lambda: ref(x))
            t_q = cuda_time(lambda: qlayer(x))
            t_c = cuda_time(lambda: cached(x))
            diff = float((qlayer(x) - ref(x)).abs().max())
            print(f"| {batch} | {1e3 * t_ref:.3f} | {1e3 * t_q:.3f} | {1e3 * t_c:.3f} | "
                  f"{diff:.2e} |")
        t_dec = cuda_time(lambda: qlayer.dequantize())
    print(f"decode alone: {1e3 * t_dec:.3f} ms, {4096 * 4096 * 2 / t_dec / 1e9:.1f} GB/s of "
          "float16 weight")
    return 0


if __name__ == "__main__":
    sys.exit(main())
