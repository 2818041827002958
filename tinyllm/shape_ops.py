"""Operations that move elements without computing new values: reshape, transpose, indexing,
concatenate, stack, where, expand, flip, roll, repeat, pad, gather, diagonal.

Their backward passes move the gradient back the same way: reshape it back, transpose it back,
scatter it back to where the elements came from (adding where an element was picked twice).
Same conventions as ``tinyllm.ops``: ``forward`` on backend arrays, ``backward`` returns one
gradient per input.
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.autograd import Function, Node, operand_data
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


def unwrap_index(index):
    """The index with tensors replaced by their arrays."""
    if isinstance(index, Node):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Node) else i for i in index)
    return index


def _is_integer(i) -> bool:
    """A Python or NumPy integer, or a 0-d integer array (not a bool)."""
    if isinstance(i, bool):
        return False
    return isinstance(i, int) or (getattr(i, "ndim", None) == 0 and i.dtype.kind in "iu")


def index_steps(index) -> list:
    """The indices to apply one after the other for PyTorch's rule of mixed indexing.

    Where an index mixes integers with arrays (``x[1, :, idx]``), NumPy treats the integers as
    arrays too, and arrays separated by a slice put their axes first; PyTorch applies the
    integers first (each removes its axis) and only then the arrays. tinyllm follows PyTorch:
    ``x[1, :, idx]`` is ``x[1][:, idx]``. Any other index is one step, as NumPy has it.
    """
    items = index if isinstance(index, tuple) else (index,)
    basic = [i is None or i is Ellipsis or isinstance(i, slice) for i in items]
    ints = [_is_integer(i) for i in items]
    if not any(ints) or all(b or k for b, k in zip(basic, ints)):
        return [index]
    first, then = [], []
    for i, is_basic, is_int in zip(items, basic, ints):
        if is_int:  # removes its axis in the first step
            first.append(i)
        elif is_basic:  # None makes its axis in the first step; slices and ... are kept
            first.append(i)
            then.append(Ellipsis if i is Ellipsis else slice(None))
        else:  # an array: a boolean one covers as many axes as it has dimensions
            boolean = getattr(i, "dtype", None) is not None and i.dtype.kind == "b"
            first.extend([slice(None)] * (i.ndim if boolean else 1))
            then.append(i)
    return [tuple(first), tuple(then)]


def _index_on(index, device):
    """The index with its arrays on ``device`` (host index arrays are moved, as every operand;
    a tensor on another device is refused)."""

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
        self.index = index if backend.cupy_loaded() else unwrap_index(index)

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


class Expand(Function):
    """Broadcast to a larger ``shape`` (a view); the gradient sums over the copies."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return get_array_module(x).broadcast_to(x, self.shape)
        except ValueError:
            raise ValueError(f"cannot expand a tensor of shape {tuple(x.shape)} to {self.shape}: "
                             "only axes of length 1 can grow (or new leading axes)") from None

    def backward(self, gy):
        return (unbroadcast(gy, self.in_shape),)


class Flip(Function):
    """Reverse the order of elements along ``axes``; the gradient is flipped back."""

    def __init__(self, axes):
        self.axes = tuple(axes)

    def forward(self, x):
        return get_array_module(x).flip(x, axis=self.axes)

    def backward(self, gy):
        return (get_array_module(gy).flip(gy, axis=self.axes),)


class Roll(Function):
    """Shift elements cyclically by ``shifts`` along ``axes`` (None: the flattened tensor);
    the gradient is rolled back by the opposite shifts."""

    def __init__(self, shifts, axes=None):
        self.shifts, self.axes = shifts, axes

    def forward(self, x):
        return get_array_module(x).roll(x, self.shifts, axis=self.axes)

    def backward(self, gy):
        back = tuple(-s for s in self.shifts) if isinstance(self.shifts, tuple) else -self.shifts
        return (get_array_module(gy).roll(gy, back, axis=self.axes),)


class Repeat(Function):
    """Tile the tensor ``reps[i]`` times along axis i (PyTorch's ``repeat``, NumPy's ``tile``).

    With more reps than axes the tensor gets new leading axes of length 1 first. Each element
    appears prod(reps) times, so its gradient is the sum over its copies: seen as
    (r0, n0, r1, n1, ...), the gradient is summed over the r axes.
    """

    def __init__(self, reps):
        self.reps = tuple(reps)

    def forward(self, x):
        if len(self.reps) < x.ndim:
            raise ValueError(f"repeat needs at least one count per axis: {self.reps} for a tensor "
                             f"of shape {tuple(x.shape)}")
        self.in_shape = x.shape
        self.padded = (1,) * (len(self.reps) - x.ndim) + tuple(x.shape)
        return get_array_module(x).tile(x.reshape(self.padded), self.reps)

    def backward(self, gy):
        pairs = [n for r, s in zip(self.reps, self.padded) for n in (r, s)]
        g = gy.reshape(pairs).sum(axis=tuple(range(0, len(pairs), 2)))
        return (g.reshape(self.in_shape),)


class Pad(Function):
    """Constant padding. ``widths`` is one (before, after) pair per axis, first axis first; the
    gradient is the part of the output gradient that covers the input."""

    def __init__(self, widths, value=0.0):
        self.widths, self.value = tuple(widths), value

    def forward(self, x):
        self.inner = tuple(slice(b, b + n) for (b, _), n in zip(self.widths, x.shape))
        return get_array_module(x).pad(x, self.widths, constant_values=self.value)

    def backward(self, gy):
        return (gy[self.inner],)


class Gather(Function):
    """out[i][j][k] = x[index[i][j][k]][j][k] along ``axis`` 0 (likewise for the other axes), as
    ``torch.gather``: ``index`` has x's number of axes, and on the other axes it may be shorter
    (the leading part of x is used). The gradient scatter-adds back (an index used twice gets
    both gradients)."""

    def __init__(self, axis, index):
        self.axis, self.index = axis, index

    def forward(self, x):
        index, ax = self.index, self.axis % max(x.ndim, 1)
        if index.ndim != x.ndim or any(index.shape[d] > x.shape[d]
                                       for d in range(x.ndim) if d != ax):
            raise ValueError(f"gather: index of shape {tuple(index.shape)} does not fit a tensor "
                             f"of shape {tuple(x.shape)} along axis {self.axis} (same number of "
                             "axes, and no longer than the tensor on the other axes)")
        if index.size and (int(index.min()) < 0 or int(index.max()) >= x.shape[ax]):
            raise IndexError(f"gather: index values must be in [0, {x.shape[ax]}) along axis "
                             f"{self.axis}, got [{int(index.min())}, {int(index.max())}]")
        self.shape, self.dtype, self.ax = x.shape, x.dtype, ax
        lead = tuple(slice(None) if d == ax else slice(0, n) for d, n in enumerate(index.shape))
        return get_array_module(x).take_along_axis(x[lead], index, axis=ax)

    def backward(self, gy):
        xp = get_array_module(gy)
        where = []
        for d, n in enumerate(self.index.shape):  # the position of every output element
            line = [1] * gy.ndim
            line[d] = n
            where.append(self.index if d == self.ax else xp.arange(n).reshape(line))
        gx = xp.zeros(self.shape, dtype=self.dtype)
        scatter_add(gx, tuple(where), gy)
        return (gx,)


class Diagonal(Function):
    """The diagonal of the (axis1, axis2) planes as the last axis (``offset`` > 0 above the
    main diagonal); the gradient is written back onto that diagonal of a zero tensor."""

    def __init__(self, offset=0, axis1=0, axis2=1):
        self.offset, self.axis1, self.axis2 = offset, axis1, axis2

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return get_array_module(x).diagonal(x, self.offset, self.axis1, self.axis2)

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=self.dtype)
        planes = xp.moveaxis(gx, (self.axis1, self.axis2), (-2, -1))  # a view into gx
        i = xp.arange(gy.shape[-1])
        planes[..., i + max(-self.offset, 0), i + max(self.offset, 0)] = gy
        return (gx,)



def where(cond, a, b):
    """``a`` where ``cond`` is True, else ``b`` (``tl.where``); gradients flow to the chosen side
    only. ``cond`` is a boolean array or tensor; a host mask beside GPU data is moved there."""
    like = a if isinstance(a, Node) else b
    if isinstance(like, Node):  # a host mask is moved beside the data, a host tensor refused
        c = operand_data(cond, like.device, "where's condition")
    else:
        c = cond.data if isinstance(cond, Node) else cond
    return Where(c)(a, b)
