"""Operations that move elements without computing new values: reshape, transpose, indexing,
concatenate, stack, where.

Their backward passes move the gradient back the same way: reshape it back, transpose it back,
scatter it back to where the elements came from (adding where an element was picked twice).
Same conventions as ``tinyllm.ops``: ``forward`` on backend arrays, ``backward`` returns one
gradient per input.
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.autograd import Function
from tinyllm.backend import get_array_module, scatter_add
from tinyllm.ops import unbroadcast


class Reshape(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {tuple(x.shape)} ({x.size} elements) into "
                f"{self.shape}"
            ) from None

    def backward(self, gy):
        # BEGIN SOLUTION
        return (gy.reshape(self.in_shape),)
        # END SOLUTION


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        axes = self.axes
        if axes is not None and sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
            raise ValueError(f"transpose axes {axes} are not a permutation of the {x.ndim} axes "
                             f"of a tensor of shape {tuple(x.shape)}")
        return x.transpose(axes)

    def backward(self, gy):
        # BEGIN SOLUTION
        if self.axes is None:
            return (gy.transpose(),)
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a % len(self.axes)] = i
        return (gy.transpose(inverse),)
        # END SOLUTION


def _unwrap_index(index):
    from tinyllm.tensor import Tensor

    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def _index_on(index, device):
    """The index with its arrays on ``device`` (host index arrays are moved, as every operand)."""
    from tinyllm.tensor import operand_data

    def one(i):
        basic = i is None or i is Ellipsis or isinstance(i, (int, slice, backend.np.integer))
        return i if basic else operand_data(i, device, "an index")

    return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)


def _is_basic(index) -> bool:
    """True for indices made of ints, slices, None and Ellipsis only (no arrays or lists)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


class GetItem(Function):
    """x[index] for ints, slices, None, Ellipsis and integer or boolean arrays."""

    def __init__(self, index):
        self.index = index if backend.cupy_loaded() else _unwrap_index(index)

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        if backend.cupy_loaded():
            self.index = _index_on(self.index, backend.get_device(x))
        try:
            return x[self.index]
        except IndexError as e:
            raise IndexError(f"index {self.index!r} is out of range for a tensor of shape "
                             f"{tuple(x.shape)}: {e}") from None

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=self.dtype)
        # BEGIN SOLUTION
        if _is_basic(self.index):
            gx[self.index] = gy  # each element picked at most once
        else:
            scatter_add(gx, self.index, gy)  # repeated indices must add up, not overwrite
        # END SOLUTION
        return (gx,)


class Concatenate(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        try:
            return xp.concatenate(xs, axis=self.axis)
        except ValueError:
            shapes = ", ".join(str(tuple(x.shape)) for x in xs)
            raise ValueError(f"cannot concatenate shapes {shapes} along axis {self.axis}: all "
                             "other axes must match") from None

    def backward(self, gy):
        xp = get_array_module(gy)
        cuts = list(xp.cumsum(xp.asarray(self.sizes))[:-1].tolist())
        parts = xp.split(gy, cuts, axis=self.axis)
        return tuple(p if need else None for p, need in zip(parts, self.needs_grad))


class Stack(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        try:
            return xp.stack(xs, axis=self.axis)
        except ValueError:
            shapes = ", ".join(str(tuple(x.shape)) for x in xs)
            raise ValueError(f"cannot stack shapes {shapes}: they must all be equal") from None

    def backward(self, gy):
        xp = get_array_module(gy)
        n = gy.shape[self.axis]
        return tuple(xp.take(gy, i, axis=self.axis) if need else None
                     for i, need in zip(range(n), self.needs_grad))


class Where(Function):
    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        xp = get_array_module(a, b)
        self.shapes = a.shape, b.shape
        try:
            return xp.where(self.cond, a, b)
        except ValueError:
            raise ValueError(f"where: condition {tuple(self.cond.shape)} and values "
                             f"{tuple(a.shape)}, {tuple(b.shape)} do not broadcast") from None

    def backward(self, gy):
        zero = gy.dtype.type(0)
        xp = get_array_module(gy)
        ga = unbroadcast(xp.where(self.cond, gy, zero), self.shapes[0]) if self.needs_grad[0] else None
        gb = unbroadcast(xp.where(self.cond, zero, gy), self.shapes[1]) if self.needs_grad[1] else None
        return ga, gb


class Copy(Function):
    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return (gy,)
