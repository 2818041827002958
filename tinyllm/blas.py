"""The BLAS library's own threads: how many OpenBLAS uses for one matmul, changed at run time.

NumPy's matmuls run on OpenBLAS, which splits a large product over its worker threads. When
tinyllm runs the halves of a batch on two threads of its own (``tinyllm.train.threads``), each
half's matmuls must run on one BLAS thread: two callers that each ask OpenBLAS for every core
queue behind each other, and its workers spin on the cores the other half needs. OpenBLAS
reads ``OPENBLAS_NUM_THREADS`` once, at load time; ``openblas_set_num_threads`` changes it
later, and this module calls it through ctypes on the copy NumPy loaded (no extra package).

Where no OpenBLAS is loaded (Accelerate or MKL builds, other systems) ``threads`` returns None
and ``limit`` changes nothing: correct, only not as fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

from tinyllm import backend

# NumPy's wheels bundle OpenBLAS with a prefix and a 64-bit-integer suffix (scipy-openblas);
# a system OpenBLAS keeps the plain names
_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "")
_lib, _searched = None, False
_lock = threading.Lock()


def _loaded_openblas():
    """ctypes handles of OpenBLAS's get/set_num_threads, or None: the shared library that this
    process has mapped (Linux's /proc/self/maps) whose name contains 'openblas'."""
    global _lib, _searched
    if _searched:
        return _lib
    _searched = True
    assert backend.np  # NumPy (imported by the backend) has mapped its BLAS by now
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()
                     and line.split()[-1].startswith("/")}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                    _lib = (get, set_)
                    return _lib
    return None


def threads() -> int | None:
    """How many threads OpenBLAS uses for one call now (None: no OpenBLAS found)."""
    lib = _loaded_openblas()
    return None if lib is None else int(lib[0]())


@contextlib.contextmanager
def limit(n: int | None):
    """Inside ``with blas.limit(1):`` each matmul runs on at most ``n`` BLAS threads (None:
    no limit); the previous count comes back on leaving. Process-wide (OpenBLAS has one
    setting), so the caller that limits it must be the one driving the threads."""
    lib = _loaded_openblas() if n is not None else None
    if lib is None or os.environ.get("TINYLLM_BLAS_LIMIT", "1") == "0":
        yield
        return
    with _lock:
        previous = int(lib[0]())
        lib[1](min(n, previous))
    try:
        yield
    finally:
        with _lock:
            lib[1](previous)
