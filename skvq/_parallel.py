"""Thread parallelism that follows the user's thread limits (one place for it).

skvq's heavy kernels are BLAS products and numba functions compiled with ``nogil=True``, so
Python threads run them in parallel. The number of threads is the BLAS library's current
setting, which is what ``threadpoolctl.threadpool_limits`` (and ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``) control: a user who limits BLAS to one thread gets one thread from
skvq too.
"""

import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["effective_n_threads", "map_threads"]

_CONTROLLERS = None


def _blas_controllers():
    global _CONTROLLERS
    if _CONTROLLERS is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLERS = ThreadpoolController().select(user_api="blas").lib_controllers
    return _CONTROLLERS


def effective_n_threads():
    """Threads skvq may use now: the BLAS thread setting (at least 1, at most the CPUs)."""
    cpus = os.cpu_count() or 1
    try:
        controllers = _blas_controllers()
        counts = [c.get_num_threads() for c in controllers]
    except Exception:  # pragma: no cover - threadpoolctl cannot read the library
        counts = []
    counts = [c for c in counts if c]
    return max(1, min([cpus] + counts)) if counts else 1


def map_threads(func, items, n_threads=None):
    """``[func(item) for item in items]``, on up to ``n_threads`` threads (in order)."""
    items = list(items)
    n_threads = effective_n_threads() if n_threads is None else n_threads
    n_threads = min(int(n_threads), len(items))
    if n_threads <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(func, items))
