"""The fake device array and its bookkeeping: what is copied between host and device, what is
allocated and what is still alive.

A ``ndarray`` holds a NumPy array (its "device memory") and forwards arithmetic to it, checking
every operand on the way in and wrapping every result on the way out:

* ``_in`` unwraps device arrays and lets Python and NumPy scalars through (CuPy takes both);
  a host ``numpy.ndarray`` (0-d included) is refused: mixing host and device arrays is an error.
* ``_out`` wraps NumPy results as device arrays; NumPy scalars become 0-d device arrays, as
  CuPy's reductions return them (so ``float(a.sum())`` is a visible transfer, not a free one).
"""

from __future__ import annotations

import operator
import sys
import weakref
from pathlib import Path

import numpy as np

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly.")
MIXED = ("Unsupported type <class 'numpy.ndarray'>: a host NumPy array mixed into an operation "
         "on the device; move it there first (cupy.asarray) or use device arrays throughout")

_HERE = str(Path(__file__).resolve().parent)


class Counters:
    """What crossed between host and device, and what was allocated, since the last ``reset()``.

    ``to_host`` counts device-to-host copies (each a synchronisation on a real GPU) and
    ``host_copies`` says where each one was made (``"float() at tinyllm/optim/clip.py:19"``);
    ``bytes_to_host`` is their size; ``to_device`` counts host-to-device copies;
    ``allocations`` counts device buffers created.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.to_host = 0
        self.bytes_to_host = 0
        self.to_device = 0
        self.allocations = 0
        self.host_copies: list[str] = []

    def copied_to_host(self, what: str, nbytes: int) -> None:
        self.to_host += 1
        self.bytes_to_host += nbytes
        self.host_copies.append(f"{what} at {_caller()}")


counters = Counters()


def _caller() -> str:
    """file:line of the first frame outside this package (the code that asked for the copy)."""
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_HERE):
        f = f.f_back
    if f is None:
        return "?"
    name = f.f_code.co_filename
    for marker in ("/tinyllm/", "/tests/"):
        if marker in name:
            name = marker[1:] + name.rsplit(marker, 1)[1]
            break
    return f"{name}:{f.f_lineno}"


class MemoryPool:
    """Device memory in use, by buffer: a buffer is counted from the moment a device array
    owning it is made until the last array (or view) using it is gone (``cupy.get_default_memory_pool``)."""

    def __init__(self):
        self._live: dict[int, tuple] = {}  # id(root NumPy array) -> (weak reference, nbytes)
        self._used = 0

    def track(self, a: np.ndarray) -> None:
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        key = id(root)
        if key in self._live:
            return
        self._live[key] = (weakref.ref(root, lambda _, k=key: self._release(k)), root.nbytes)
        self._used += root.nbytes
        counters.allocations += 1

    def _release(self, key) -> None:
        _, nbytes = self._live.pop(key)
        self._used -= nbytes

    def used_bytes(self) -> int:
        return self._used

    def total_bytes(self) -> int:
        return self._used

    def n_buffers(self) -> int:
        return len(self._live)

    def free_all_blocks(self) -> None:
        pass


memory_pool = MemoryPool()


# ---------------------------------------------------------------------------- in and out
def _is_scalar(x) -> bool:
    return isinstance(x, (bool, int, float, complex, np.generic))


def _in(x):
    """An operand on its way into NumPy: device arrays unwrapped, host arrays refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(MIXED)
    if isinstance(x, (list, tuple)):
        return type(x)(_in(v) for v in x)
    return x


def _in_kwargs(kwargs: dict) -> dict:
    return {k: _in(v) for k, v in kwargs.items()}


def _index(key):
    """An index on its way into NumPy: device index arrays unwrapped, host index arrays refused
    (Python lists of ints are allowed, as CuPy copies them over itself)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, np.ndarray):
        raise TypeError(f"{MIXED} (as an index)")
    return key


def _wrap(a: np.ndarray) -> ndarray:
    out = ndarray.__new__(ndarray)
    out._a = a
    memory_pool.track(a)
    return out


def _out(r):
    """A NumPy result on its way out: arrays and NumPy scalars become device arrays."""
    if isinstance(r, np.ndarray):
        return _wrap(r)
    if isinstance(r, np.generic):
        return _wrap(np.asarray(r))
    if isinstance(r, (list, tuple)):
        return type(r)(_out(v) for v in r)
    return r


def call(fn, args, kwargs):
    """``fn(*args, **kwargs)`` on the device; with ``out=`` the caller's device array is returned."""
    r = fn(*_in(args), **_in_kwargs(kwargs))
    out = kwargs.get("out")
    return out if isinstance(out, ndarray) else _out(r)


# ---------------------------------------------------------------------------- the array
class ndarray:  # noqa: N801  (CuPy's name)
    """A device array: a NumPy array behind a wall that only explicit copies cross."""

    __slots__ = ("_a", "__weakref__")
    __hash__ = None

    def __init__(self, shape, dtype=float):
        self._a = np.empty(shape, dtype=dtype)
        memory_pool.track(self._a)

    # what crosses to the host, counted
    def get(self, stream=None) -> np.ndarray:
        counters.copied_to_host(".get()", self._a.nbytes)
        return self._a.copy()

    def item(self):
        counters.copied_to_host(".item()", self._a.nbytes)
        return self._a.item()

    def tolist(self):
        counters.copied_to_host(".tolist()", self._a.nbytes)
        return self._a.tolist()

    def __float__(self):
        counters.copied_to_host("float()", self._a.nbytes)
        return float(self._a)

    def __int__(self):
        counters.copied_to_host("int()", self._a.nbytes)
        return int(self._a)

    def __index__(self):
        counters.copied_to_host("operator.index()", self._a.nbytes)
        return operator.index(self._a)

    def __complex__(self):
        counters.copied_to_host("complex()", self._a.nbytes)
        return complex(self._a)

    def __bool__(self):
        if self._a.size != 1:  # NumPy's error, before any copy
            return bool(self._a)
        counters.copied_to_host("bool()", self._a.nbytes)
        return bool(self._a)

    def __repr__(self):
        counters.copied_to_host("repr()", self._a.nbytes)
        return repr(self._a).replace("array(", "fakecupy.array(", 1)

    def __str__(self):
        counters.copied_to_host("str()", self._a.nbytes)
        return str(self._a)

    def __format__(self, spec):
        counters.copied_to_host("format()", self._a.nbytes)
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    # what NumPy must not do with a device array
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} on a device array: {IMPLICIT} (use the "
                        "array's module, xp = backend.get_array_module(a))")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # `numpy_scalar * device_array` reaches here through NumPy's scalar operators; CuPy
        # serves it (a scalar is no host array), so do we. Every other NumPy ufunc is refused.
        if (method == "__call__" and not kwargs and len(inputs) == 2
                and any(_is_scalar(x) for x in inputs) and any(isinstance(x, ndarray) for x in inputs)):
            return _out(ufunc(*_in(inputs)))
        if any(isinstance(x, np.ndarray) for x in inputs):
            raise TypeError(MIXED)
        raise TypeError(f"numpy.{ufunc.__name__} on a device array: {IMPLICIT} (use the "
                        "array's module, xp = backend.get_array_module(a))")

    # metadata (no copy)
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))

    @property
    def device(self):
        from fakecupy.cuda import Device

        return Device(0)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield _out(self._a[i])

    def __getitem__(self, key):
        key = _index(key)
        if any(isinstance(k, np.ndarray) and k.dtype == bool and k.ndim
               for k in (key if isinstance(key, tuple) else (key,))):
            # the result's size depends on the data: CuPy copies the count to the host
            counters.copied_to_host("boolean-mask index", 8)
        return _out(self._a[key])

    def __setitem__(self, key, value):
        self._a[_index(key)] = _in(value)

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())


def _method(name):
    def method(self, *args, **kwargs):
        return call(getattr(self._a, name), args, kwargs)

    method.__name__ = name
    return method


_METHODS = ("all any argmax argmin argsort astype clip copy cumsum dot fill flatten max mean min "
            "prod ravel repeat reshape round sort squeeze std sum swapaxes take transpose "
            "var view").split()
for _name in _METHODS:
    setattr(ndarray, _name, _method(_name))


def _nonzero(self):
    counters.copied_to_host(".nonzero()", 8)  # how many: known only on the host
    return call(self._a.nonzero, (), {})


ndarray.nonzero = _nonzero


def _binary(fn):
    def forward(self, other):
        return _out(fn(self._a, _in(other)))

    def reflected(self, other):
        return _out(fn(_in(other), self._a))

    return forward, reflected


def _inplace(fn):
    def method(self, other):
        fn(self._a, _in(other))
        return self

    return method


for _name in "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift".split():
    _fn = getattr(operator, _name + "_" if _name in ("and", "or") else _name)
    _fwd, _ref = _binary(_fn)
    setattr(ndarray, f"__{_name}__", _fwd)
    setattr(ndarray, f"__r{_name}__", _ref)
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in "lt le gt ge eq ne".split():
    setattr(ndarray, f"__{_name}__", _binary(getattr(operator, _name))[0])
for _name in "neg pos abs invert".split():
    setattr(ndarray, f"__{_name}__", (lambda fn: lambda self: _out(fn(self._a)))(getattr(operator, _name)))
