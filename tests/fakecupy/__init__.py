"""A strict stand-in for CuPy, for tests: ``TINYLLM_TEST_DEVICE=fake-cuda`` makes the test suite
install it as ``cupy`` (and ``fakecupy.cupyx`` as ``cupyx``), so ``device="cuda"`` runs on it.

Its arrays keep their values in NumPy arrays, but behave the way CuPy's do where code written
for NumPy goes wrong on a GPU, and a little more strictly:

* no implicit conversion to NumPy: ``np.asarray(a)``, and any NumPy function or ufunc given a
  device array, raise TypeError ("Implicit conversion to a NumPy array is not allowed").
  (Real CuPy dispatches ``np.exp(a)`` to itself; tinyllm's rule is ``xp.exp``, so here it fails.
  A NumPy *scalar* times a device array works, as in CuPy.)
* a host ``numpy.ndarray`` mixed into a device operation (operand, index, assigned value,
  argument of a ``cupy`` function) raises TypeError; Python and NumPy scalars are fine.
* every copy to the host is counted in ``counters.to_host``, with where it happened in
  ``counters.host_copies``: ``asnumpy``, ``.get()``, ``float()``, ``int()``, ``bool()``,
  ``.item()``, ``.tolist()``, printing. Copies from the host are ``counters.to_device``.
* reductions return 0-d device arrays, as CuPy's do (never NumPy scalars).
* device memory is accounted: ``counters.allocations`` counts the buffers made,
  ``get_default_memory_pool().used_bytes()`` the bytes of the live ones.
* ``cupy.random`` has its own seeded stream, different from NumPy's for the same seed.

The namespace holds the part of CuPy's that tinyllm and its tests use; a name missing here is
a name to check against CuPy's documentation before adding it.
"""

from __future__ import annotations

import builtins
import sys

import numpy as _np

from fakecupy import cuda, random
from fakecupy._core import IMPLICIT, _index, _out, _wrap, call, counters, memory_pool, ndarray
from fakecupy._core import _in as _unwrap

__all__ = ["ndarray", "asarray", "array", "asnumpy", "get_array_module", "counters", "reset",
           "install", "uninstall", "installed", "cuda", "random", "IMPLICIT"]

# ---------------------------------------------------------------------------- dtypes and constants
_FROM_NUMPY = """
    bool_ int8 int16 int32 int64 intp uint8 uint16 uint32 uint64 float16 float32 float64
    complex64 complex128 dtype finfo iinfo issubdtype promote_types
    broadcast_shapes e inf nan newaxis pi
""".split()  # CuPy re-exports these NumPy names as they are
for _name in _FROM_NUMPY:
    globals()[_name] = getattr(_np, _name)

# ---------------------------------------------------------------------------- routines
_ROUTINES = """
    empty zeros ones full arange eye identity linspace tri empty_like zeros_like ones_like
    full_like tril triu copy
    reshape ravel transpose swapaxes moveaxis broadcast_to broadcast_arrays expand_dims squeeze
    concatenate stack vstack hstack split array_split repeat tile flip roll unique pad
    take take_along_axis put_along_axis where nonzero flatnonzero argwhere diagonal
    tril_indices triu_indices searchsorted
    dot matmul vdot einsum outer tensordot inner
    allclose isclose array_equal isin all any count_nonzero
    sum prod cumsum cumprod mean var std max min amax amin argmax argmin argsort sort partition
    argpartition clip round diff
""".split()

_UFUNCS = """
    add subtract multiply divide true_divide floor_divide power negative reciprocal abs absolute
    sign exp exp2 log log2 log10 log1p expm1 sqrt square tanh sinh cosh sin cos arctan
    maximum minimum fmax fmin copysign floor ceil rint logaddexp
    equal not_equal less less_equal greater greater_equal
    logical_and logical_or logical_not logical_xor isfinite isnan isinf
""".split()


# their output's size depends on the data, so CuPy copies it to the host first (a sync)
_SIZED_BY_DATA = {"nonzero", "flatnonzero", "argwhere", "unique"}


def _routine(name):
    fn = getattr(_np, name)

    def routine(*args, **kwargs):
        if name in _SIZED_BY_DATA:
            counters.copied_to_host(f"cupy.{name}", 8)
        return call(fn, args, kwargs)

    routine.__name__ = routine.__qualname__ = name
    routine.__doc__ = f"cupy.{name} (NumPy's, on device arrays only)"
    return routine


class ufunc:  # noqa: N801  (CuPy's name)
    """A universal function on device arrays: call it, or use ``at`` (as ``cupy.add.at``)."""

    def __init__(self, np_ufunc):
        self._f = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout

    def __call__(self, *args, **kwargs):
        return call(self._f, args, kwargs)

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.{self.__name__}.at needs a device array to write into")
        args = (a._a, _index(indices)) + (() if b is None else (_unwrap(b),))
        self._f.at(*args)

    def reduce(self, *args, **kwargs):
        return call(self._f.reduce, args, kwargs)

    def __repr__(self):
        return f"<ufunc 'fakecupy.{self.__name__}'>"


for _name in _ROUTINES:
    globals()[_name] = _routine(_name)
for _name in _UFUNCS:
    globals()[_name] = ufunc(getattr(_np, _name))


# ---------------------------------------------------------------------------- host <-> device
def _holds_device(x) -> bool:
    if isinstance(x, ndarray):
        return True
    return isinstance(x, (list, tuple)) and builtins.any(_holds_device(v) for v in x)


def _from_host(obj, dtype):
    if _holds_device(obj):  # cupy.array([a, b]) of device arrays: stacked on the device
        return _out(_np.array(_unwrap(obj), dtype=dtype))
    try:
        arr = _np.array(obj, dtype=dtype)  # a copy: device memory is separate
    except TypeError as err:
        raise TypeError(f"Unsupported type {type(obj)}: {err}") from None
    if arr.dtype == object:
        raise TypeError(f"Unsupported type {type(obj)}")
    counters.to_device += 1
    return _wrap(arr)


def asarray(a, dtype=None, order=None, *, blocking=False):
    """A device array of ``a``: the same array when it is one already (of that dtype), else a copy
    from the host (counted in ``counters.to_device``)."""
    if isinstance(a, ndarray):
        return a if dtype is None or _np.dtype(dtype) == a.dtype else a.astype(dtype)
    return _from_host(a, dtype)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        return obj.astype(obj.dtype if dtype is None else dtype, copy=copy)
    return _from_host(obj, dtype)


ascontiguousarray = asarray


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A host NumPy copy of device array ``a`` (counted); host data passes through unchanged."""
    if isinstance(a, ndarray):
        return a.get()
    return _np.asarray(a, order=order)


def get_array_module(*args):
    on_device = builtins.any(isinstance(a, ndarray) for a in args)  # `any` is cupy.any here
    return sys.modules[__name__] if on_device else _np


def get_default_memory_pool():
    return memory_pool


def is_available() -> bool:
    return True


# ---------------------------------------------------------------------------- installing
def reset() -> None:
    """Zero the transfer and allocation counters (the memory pool keeps its live buffers)."""
    counters.reset()


_saved: dict = {}


def install() -> None:
    """Make ``import cupy`` / ``import cupyx`` give this package (before tinyllm asks for CuPy)."""
    from fakecupy import cupyx

    names = {"cupy": sys.modules[__name__], "cupy.cuda": cuda, "cupy.random": random,
             "cupyx": cupyx}
    for name, module in names.items():
        _saved.setdefault(name, sys.modules.get(name))
        sys.modules[name] = module


def uninstall() -> None:
    """Undo ``install()``: ``import cupy`` is again whatever it was before."""
    for name, module in _saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    _saved.clear()


def installed() -> bool:
    return sys.modules.get("cupy") is sys.modules[__name__]
