"""Thread parallelism that follows the user's thread limits (one place for it).

skvq's heavy kernels are BLAS products and numba functions compiled with ``nogil=True``, so
Python threads run them in parallel. The number of threads is the BLAS library's current
setting, which is what ``threadpoolctl.threadpool_limits`` (and ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``) control: a user who limits BLAS to one thread gets one thread from
skvq too.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

__all__ = ["effective_n_threads", "map_threads"]

_CONTROLLERS = None
# One pool for the process (starting threads on every call costs about 0.1 ms, as much as a
# small decode); its workers run tasks serially if a task calls map_threads again.
_POOL = None
_POOL_LOCK = threading.Lock()
_IN_WORKER = threading.local()


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


def _pool():
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                       thread_name_prefix="skvq")
        return _POOL


def _run_in_worker(func, item):
    _IN_WORKER.active = True
    try:
        return func(item)
    finally:
        _IN_WORKER.active = False


def map_threads(func, items, n_threads=None):
    """``[func(item) for item in items]``, on up to ``n_threads`` threads (in order).

    The calling thread takes its share of the work; at most ``n_threads - 1`` of the pool's
    threads help it, so that the thread limit holds whatever else runs.
    """
    items = list(items)
    n_threads = effective_n_threads() if n_threads is None else n_threads
    n_threads = min(int(n_threads), len(items))
    if n_threads <= 1 or getattr(_IN_WORKER, "active", False):
        return [func(item) for item in items]
    # items are dealt round-robin to n_threads lanes; lane 0 runs here
    lanes = [items[i::n_threads] for i in range(n_threads)]

    def run_lane(lane):
        return [func(item) for item in lane]

    futures = [_pool().submit(_run_in_worker, run_lane, lane) for lane in lanes[1:]]
    try:
        first = run_lane(lanes[0])
    finally:
        wait(futures)  # never return (or raise) while a lane still writes
    results = [first] + [f.result() for f in futures]
    out = [None] * len(items)
    for i, lane_results in enumerate(results):
        out[i::n_threads] = lane_results
    return out
