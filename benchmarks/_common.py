"""Shared pieces of the benchmarks: arguments, timing, the machine line, markdown tables."""

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast smoke run (CI); its numbers are not the results")
    parser.add_argument("--out", default=str(ROOT / "doc" / "benchmarks"),
                        help="folder for the markdown table and figures (default doc/benchmarks)")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def best_time(fn, repeats=3):
    """Best wall-clock time of ``repeats`` calls of ``fn`` (and the last result)."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def warm_up():
    """Compile skvq's numba kernels once, so that timings exclude JIT compilation."""
    from skvq import L0LeastSquareQuantizer, L1LeastSquareQuantizer

    X = np.random.default_rng(0).normal(size=(4, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L0LeastSquareQuantizer(n_values=3).fit(X)
        L1LeastSquareQuantizer(alpha=0.1).fit(X)
        L1LeastSquareQuantizer(alpha=0.1, negative_l2=1e-4).fit(X)


def header(name, args):
    """Markdown header: the command, the date, the machine and the package versions."""
    import numba
    import scipy
    import sklearn

    command = "python benchmarks/" + name + ".py" + (" --quick" if args.quick else "")
    cpu = platform.processor() or platform.machine()
    lines = [
        f"Produced by `{command}` on {datetime.date.today().isoformat()}.",
        "",
        f"Machine: {platform.platform()}, {cpu}, {os.cpu_count()} CPUs; Python "
        f"{sys.version.split()[0]}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-learn {sklearn.__version__}, numba {numba.__version__}. Times are the best "
        "of 3 runs (wall clock) after a warm-up that compiles skvq's numba kernels.",
        "",
    ]
    if args.quick:
        lines += ["**Quick smoke run: not the results.**", ""]
    return lines


def table(columns, rows, floatfmt="{:.4g}"):
    """A markdown table; floats formatted with ``floatfmt``."""
    def fmt(value):
        if isinstance(value, (float, np.floating)):
            return floatfmt.format(value)
        return str(value)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return out + [""]


def write(path, lines):
    Path(path).write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def l0learn_available():
    try:
        import l0learn  # noqa: F401
    except ImportError:
        return False
    return True
