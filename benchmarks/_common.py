"""Shared pieces of the benchmarks: arguments, timing, the report header, markdown tables."""

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NA_L0LEARN = "n/a (l0learn not installed)"


def parse_args(description, cache=False):
    parser = argparse.ArgumentParser(description=description)
    if cache:
        parser.add_argument("--cache", default=None,
                            help="JSON file of the measurements: written after measuring, read "
                                 "instead of measuring when it exists (report changes only)")
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast smoke run (CI); its numbers are not the results")
    parser.add_argument("--out", default=str(ROOT / "doc" / "benchmarks"),
                        help="folder for the markdown report and figures (default doc/benchmarks)")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def best_time(fn, repeats=3):
    """Best wall-clock time (``time.perf_counter``) of ``repeats`` calls of ``fn``.

    Returns ``(seconds, result, warned)``: the result of the last call and the sorted names of
    the warning categories it raised (silenced, but reported in the tables).
    """
    best, result, warned = np.inf, None, []
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - start)
        warned = sorted({w.category.__name__ for w in caught})
    return best, result, warned


def warm_up():
    """Compile skvq's numba kernels once, so that timings exclude JIT compilation."""
    from skvq import L0LeastSquareQuantizer, L1LeastSquareQuantizer

    X = np.random.default_rng(0).normal(size=(4, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L0LeastSquareQuantizer(n_values=3).fit(X)
        L1LeastSquareQuantizer(alpha=0.1).fit(X)
        L1LeastSquareQuantizer(alpha=0.1, negative_l2=1e-4).fit(X)


def _git_state():
    """Short commit of the repository, and whether skvq/ differs from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "skvq"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit {commit}" + (" with uncommitted changes in skvq/" if dirty else "")


def header(title, args, repeats, note="after a warm-up that compiles skvq's numba kernels"):
    """Title and provenance: the exact command, date, machine, package versions, timing rule."""
    import numba
    import scipy
    import sklearn

    import skvq

    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    python = shutil.which("python")
    same = python is not None and Path(python).resolve() == Path(sys.executable).resolve()
    command = " ".join(["python" if same else sys.executable, str(script)] + sys.argv[1:])
    versions = (f"Python {platform.python_version()}, numpy {np.__version__}, scipy "
                f"{scipy.__version__}, scikit-learn {sklearn.__version__}, numba "
                f"{numba.__version__}, skvq {skvq.__version__} ({_git_state()})")
    try:
        import matplotlib
        versions += f", matplotlib {matplotlib.__version__}"
    except ImportError:
        pass
    lines = [
        f"# {title}",
        "",
        f"Produced by `{command}` (from the repository root) on "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs. "
        f"{versions}.",
        "",
        f"Times: wall clock (`time.perf_counter`), best of {repeats} run"
        f"{'s' if repeats > 1 else ''} unless stated, {note}.",
        "",
    ]
    if args.quick:
        lines += ["**Quick smoke run (`--quick`): not the results.**", ""]
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


def verdict(ok):
    return "**PASS**" if ok else "**FAIL**"


def write(path, lines):
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def savefig(fig, path):
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def l0learn_available():
    try:
        import l0learn  # noqa: F401
    except ImportError:
        return False
    return True
