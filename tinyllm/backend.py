"""The backend seam: every array operation on tensor data goes through here.

tinyllm runs on NumPy by default and on CuPy (an NVIDIA GPU) when asked. The two libraries
share one API, so op code asks ``get_array_module(array)`` for the module that owns its data
and calls ``xp.exp``, ``xp.matmul`` ... on it: the same code then runs on both (the idea of
DeZero's ``cuda.get_array_module``). CuPy is imported only when a CUDA device is requested.

Nothing else in the engine imports NumPy for array math; this module re-exports it as ``np``
for the few host-side conversions (``Tensor.numpy()``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

import numpy as np

__all__ = [
    "np", "get_array_module", "get_device", "as_array", "to_device", "cupy_or_error",
    "set_default_device", "get_default_device", "manual_seed", "rng", "is_float", "scatter_add",
    "dropout_mask", "cupy_loaded", "tune_malloc", "fast_paths", "fast_paths_enabled",
    "thread_rng",
]

_cupy = None
_default_device = "cpu"


def tune_malloc() -> bool:
    """Ask glibc to keep freed blocks instead of returning them to the OS; True if it did.

    A training step frees and re-allocates the same few megabytes of activations every step;
    with glibc's defaults large blocks are ``mmap``-ed and handed back, so every step pays
    thousands of page faults for fresh zeroed pages. Raising the mmap and trim thresholds keeps
    them in the heap (measured in ``tinyllm bench --suite malloc``). It changes the whole
    process, so the programs that train call it (the trainer, the ``tinyllm`` command, the
    bench), not ``import tinyllm``. ``TINYLLM_MALLOPT=0`` turns it off.
    """
    if os.environ.get("TINYLLM_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    return True


_fast_paths = os.environ.get("TINYLLM_FAST_PATHS", "1") != "0"


def fast_paths_enabled() -> bool:
    """Whether Functions may run their tuned ``fast_forward`` instead of the plain ``forward``
    (``tinyllm.autograd``); ``TINYLLM_FAST_PATHS=0`` or ``tl.fast_paths(False)`` turn them off."""
    return _fast_paths


@contextlib.contextmanager
def fast_paths(enabled: bool = True):
    """``with tl.fast_paths(False):`` runs every Function's plain, lesson form (grading does)."""
    global _fast_paths
    previous, _fast_paths = _fast_paths, bool(enabled)
    try:
        yield
    finally:
        _fast_paths = previous


def cupy_loaded() -> bool:
    """True once CuPy (or the test suite's stand-in for it) has been loaded for a GPU device."""
    return _cupy is not None


def cupy_or_error():
    """Import CuPy on first use, or explain exactly what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy  # noqa: PLC0415  (imported only when a GPU is asked for)
    except ImportError as e:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed. Install it with "
            "`pip install tinyllm[gpu]` (CuPy for CUDA 12) on a machine with an NVIDIA GPU, "
            "or use device='cpu'."
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise RuntimeError(
            f"device 'cuda' needs an NVIDIA GPU, but CuPy cannot reach one ({e}). "
            "Use device='cpu' on this machine."
        ) from e
    if n == 0:
        raise RuntimeError("device 'cuda' needs an NVIDIA GPU and none was found; use device='cpu'.")
    _cupy = cupy
    return cupy


def get_array_module(*arrays):
    """Return the array module (numpy or cupy) that owns ``arrays``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def get_device(array) -> str:
    return "cuda" if (_cupy is not None and isinstance(array, _cupy.ndarray)) else "cpu"


def _check_device(device: str) -> str:
    if device is None:
        return _default_device
    device = str(device)
    if device.startswith("cuda"):
        return "cuda"
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    return device


def to_device(array, device: str):
    """Move a backend array to ``device`` ('cpu' or 'cuda'); a no-op when it is already there."""
    device = _check_device(device)
    if device == "cuda":
        cp = cupy_or_error()
        return array if isinstance(array, cp.ndarray) else cp.asarray(array)
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return array


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def as_array(data, dtype=None, device=None):
    """Turn Python data, NumPy or CuPy arrays into a backend array.

    dtype rules: NumPy floating input keeps its dtype; Python scalars and lists of floats
    become float32; integer and boolean input keeps an integer/bool dtype.
    """
    device = _check_device(device) if device is not None else None
    xp = get_array_module(data)
    if xp is np and not isinstance(data, np.ndarray):
        if isinstance(data, np.generic):
            arr = np.asarray(data)
        else:
            arr = np.asarray(data)
            if arr.dtype == np.float64:  # Python floats: the float32 default
                arr = arr.astype(np.float32)
            elif arr.dtype.kind == "O":
                raise TypeError(f"cannot make a tensor from {type(data).__name__} data: "
                                "give numbers, nested lists of numbers or an array")
    else:
        arr = data
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if device is None:
        device = get_device(arr) if xp is not np else _default_device
    return to_device(arr, device)


def set_default_device(device: str) -> None:
    """Set the device that new tensors are created on ('cpu' or 'cuda')."""
    global _default_device
    device = _check_device(device)
    if device == "cuda":
        cupy_or_error()
    _default_device = device


def get_default_device() -> str:
    return _default_device


_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed every random draw tinyllm makes (initialisation, dropout, sampling)."""
    global _rng
    _rng = np.random.default_rng(seed)
    if _cupy is not None:
        _cupy.random.seed(seed)


_thread = threading.local()


def rng() -> np.random.Generator:
    """The host random generator that initialisation, dropout masks and sampling draw from
    (this thread's own one inside ``thread_rng``)."""
    return getattr(_thread, "rng", None) or _rng


@contextlib.contextmanager
def thread_rng(generator: np.random.Generator):
    """Inside, ``rng()`` on this thread is ``generator``: threads that compute parts of one
    step draw their dropout masks from streams of their own, so the masks do not depend on
    which thread happens to draw first."""
    previous = getattr(_thread, "rng", None)
    _thread.rng = generator
    try:
        yield
    finally:
        _thread.rng = previous


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` where repeated indices add up (``np.add.at``), in place."""
    if isinstance(target, np.ndarray):
        if (isinstance(index, np.ndarray) and index.ndim == 1 and target.ndim == 2
                and values.ndim == 2 and index.size > 64 and index.min() >= 0):
            # rows of a table (the embedding gradient): sort the ids and sum each run of equal
            # ids with one reduceat, several times faster than add.at's element-wise loop
            order = np.argsort(index, kind="stable")
            ids = index[order]
            starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
            target[ids[starts]] += np.add.reduceat(values[order], starts, axis=0)
            return
        np.add.at(target, index, values)
    else:
        import cupyx  # noqa: PLC0415

        cupyx.scatter_add(target, index, values)


def dropout_mask(xp, shape, p: float, dtype):
    """1/(1-p) where an entry is kept and 0 where it is dropped (inverted dropout), drawn from
    tinyllm's seeded generator on the CPU (CuPy's on the GPU)."""
    if xp is np:
        u = rng().random(shape, dtype="float32")
    else:
        u = xp.random.random(shape, dtype="float32")
    return (u >= p).astype(dtype) * dtype.type(1.0 / (1.0 - p))
