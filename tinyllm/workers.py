"""Worker threads on the CPU: independent pieces of work spread over the cores of one process.

NumPy's loops and OpenBLAS's matmuls release Python's GIL, so threads that each run NumPy on
their own arrays compute at the same time. Two users:

- ``tinyllm.train.threads`` runs the parts of a batch, forward and backward, one per thread;
- the per-parameter loops after them (adding the parts' gradients, the clipping norm, the
  optimizer's update) each touch one parameter at a time, independently of the others, so
  ``for_each`` splits the parameters over the threads:

    with workers.use(2):                 # the step of ``tinyllm train --set threads=2``
        workers.for_each(update, params, sizes=[p.size for p in params])

Every item is computed exactly as it would be in the plain loop (no item is split, none
depends on another), so the results are the same bit for bit whatever the thread count. The
count is per calling thread (``use``), so a loop inside a worker runs inline: no worker waits
for another. Outside ``use`` (the default) every loop is the plain one, on the caller's thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["use", "count", "pool", "for_each", "map_ordered"]

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()
_local = threading.local()

# handing one group to a waiting thread costs tens of microseconds: below this many elements
# in all, the plain loop is faster
MIN_ELEMENTS = 1 << 16


def count() -> int:
    """The threads this thread's loops may use now (1 outside ``use``)."""
    return getattr(_local, "n", 1)


@contextlib.contextmanager
def use(n: int):
    """Inside ``with workers.use(n):`` this thread's ``for_each`` and ``map_ordered`` run on
    ``n`` threads (this one included); the previous count comes back on leaving."""
    previous = count()
    _local.n = max(1, int(n))
    try:
        yield
    finally:
        _local.n = previous


def pool(n: int) -> ThreadPoolExecutor:
    """The process's pool with at least ``n`` threads (made, or grown, on first need)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="tinyllm-worker"), n
        return _pool


def _forget_pool() -> None:  # a forked child inherits the pool object but not its threads
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _groups(sizes, n: int) -> list[list[int]]:
    """Item indices in ``n`` groups of about equal cost: the largest item first, each to the
    group with the least so far (a fixed cost per item stands for its Python calls)."""
    load, groups = [0] * n, [[] for _ in range(n)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += sizes[i] + 4096
    return [sorted(g) for g in groups if g]


def map_ordered(fn, items, sizes=None) -> list:
    """``[fn(item) for item in items]``, on ``count()`` threads when there is enough work
    (``sizes``: each item's element count, for balancing and that threshold; without it every
    item counts as enough work)."""
    items = list(items)
    n = min(count(), len(items))
    if sizes is None:
        sizes = [MIN_ELEMENTS] * len(items)
    if n <= 1 or sum(sizes) < MIN_ELEMENTS:
        return [fn(item) for item in items]
    groups = _groups(sizes, n)
    results = [None] * len(items)

    def run(group):
        for i in group:
            results[i] = fn(items[i])

    futures = [pool(n - 1).submit(run, g) for g in groups[1:]]
    try:
        run(groups[0])
    finally:  # wait for the others even when this group failed, then raise the first error
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return results


def for_each(fn, items, sizes=None) -> None:
    """``fn(item)`` for every item, on ``count()`` threads when there is enough work."""
    map_ordered(fn, items, sizes)
