"""The methods of ``Tensor`` that are not operators: elementwise functions, the elementwise
maximum, minimum and clip, reductions, and the shape changes, each one line (or a few) calling
its Function. ``tinyllm.tensor.Tensor`` inherits them; the operators (``+``, ``*``, ``**``,
``@``, comparisons) and conversions live there.

Argument names: NumPy's ``axis``/``keepdims``, with PyTorch's ``dim``/``keepdim`` accepted as
keywords. Reductions take an int, a tuple, or None / () for every axis (PyTorch's rule).
"""

from __future__ import annotations

from tinyllm import backend, elementwise, functional, ops, reductions, shape_ops
from tinyllm.autograd import operand_data


class TensorMethods:
    """Mixed into ``Tensor``: everything here works on ``self.data`` through Functions."""

    __slots__ = ()

    def maximum(self, other):
        return elementwise.Maximum()(self, other)

    def minimum(self, other):
        return elementwise.Minimum()(self, other)

    def clip(self, min=None, max=None):  # noqa: A002  (PyTorch's names)
        """Clamp into [min, max] (numbers; either may be None)."""
        return elementwise.Clip(min, max)(self)

    clamp = clip

    # ------------------------------------------------------------------ elementwise
    def exp(self):
        return ops.Exp()(self)

    def log(self):
        return ops.Log()(self)

    def sqrt(self):
        return ops.Sqrt()(self)

    def tanh(self):
        return ops.Tanh()(self)

    def relu(self):
        return ops.ReLU()(self)

    def sigmoid(self):
        return ops.Sigmoid()(self)

    def abs(self):
        return ops.Abs()(self)

    def log2(self):
        return elementwise.Log2()(self)

    def exp2(self):
        return elementwise.Exp2()(self)

    def rsqrt(self):
        return elementwise.Rsqrt()(self)

    # ------------------------------------------------------------------ reductions
    # axis (or PyTorch's dim): an int, a tuple, or None / () for all axes; keepdims (or keepdim)
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.Sum(_axis(axis, dim), _keep(keepdims, keepdim))(self)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.Mean(_axis(axis, dim), _keep(keepdims, keepdim))(self)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The maximum values (PyTorch's ``amax``: no indices even with an axis; see argmax)."""
        return reductions.Max(_axis(axis, dim), _keep(keepdims, keepdim))(self)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The minimum values (PyTorch's ``amin``: no indices even with an axis)."""
        return reductions.Min(_axis(axis, dim), _keep(keepdims, keepdim))(self)

    amax, amin = max, min

    def prod(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return reductions.Prod(_axis(axis, dim), _keep(keepdims, keepdim))(self)

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=None, correction=0):
        """sum((x - mean)^2) / (N - correction): the population variance by default (what
        LayerNorm uses; PyTorch defaults to correction=1). Too few elements give nan/inf."""
        return reductions.Var(_axis(axis, dim), _keep(keepdims, keepdim), correction)(self)

    def std(self, axis=None, keepdims=False, *, dim=None, keepdim=None, correction=0):
        """sqrt(var); population by default, like ``var``."""
        return self.var(axis, keepdims, dim=dim, keepdim=keepdim, correction=correction).sqrt()

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """log(sum(exp(x))), computed without overflow."""
        return reductions.LogSumExp(_axis(axis, dim), _keep(keepdims, keepdim))(self)

    def cumsum(self, axis=None, *, dim=None):
        return reductions.CumSum(_axis(axis, dim))(self)

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Indices of the maxima (in the flattened tensor when axis is None); no gradient."""
        axis = _axis(axis, dim)
        xp = backend.get_array_module(self.data)
        a = xp.asarray(self.data.argmax(axis=axis))
        if _keep(keepdims, keepdim) and axis is not None:
            a = xp.expand_dims(a, axis)
        return self._new(a)

    def softmax(self, axis=-1, *, dim=None):
        return functional.softmax(self, _axis(axis, dim))

    def log_softmax(self, axis=-1, *, dim=None):
        return functional.log_softmax(self, _axis(axis, dim))

    # ------------------------------------------------------------------ shapes
    def reshape(self, *shape):
        return shape_ops.Reshape(_sizes(shape))(self)

    view = reshape

    def flatten(self):
        return self.reshape(-1)

    def transpose(self, *axes):
        """Two axes swap those two (PyTorch's ``transpose(dim0, dim1)``, at any ndim: so
        ``k.transpose(-2, -1)`` is right for (T, D) and (B, H, T, D)); no axes reverse them
        all; a full permutation (``x.transpose(2, 0, 1)`` or a tuple) permutes NumPy-style."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            return self.permute(*axes[0])
        if len(axes) == 2:
            return self.swapaxes(*axes)
        return shape_ops.Transpose(axes or None)(self)

    def permute(self, *axes):
        return shape_ops.Transpose(_sizes(axes))(self)

    def swapaxes(self, a, b):
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return shape_ops.Transpose(tuple(perm))(self)

    @property
    def T(self):
        return shape_ops.Transpose(None)(self)

    def squeeze(self, axis=None, *, dim=None):
        """Drop axes of length 1 (all of them, or those of ``axis`` that have length 1)."""
        axis = _axis(axis, dim)
        drop = (range(self.ndim) if axis is None else
                [a % max(self.ndim, 1) for a in ((axis,) if isinstance(axis, int) else axis)])
        return self.reshape([n for i, n in enumerate(self.shape) if not (i in drop and n == 1)])

    def unsqueeze(self, axis=None, *, dim=None):
        """Insert an axis of length 1 at position ``axis`` (-1: at the end)."""
        axis = _axis(axis, dim)
        if not -self.ndim - 1 <= axis <= self.ndim:
            raise ValueError(f"unsqueeze: axis {axis} is out of range for {self.ndim} dimensions")
        shape = list(self.shape)
        shape.insert(axis % (self.ndim + 1), 1)
        return self.reshape(shape)

    def expand(self, *sizes):
        """Broadcast to ``sizes`` without copying (-1 keeps an axis; new axes go in front)."""
        sizes = _sizes(sizes)
        lead = len(sizes) - self.ndim
        shape = [self.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(sizes)]
        return shape_ops.Expand(shape)(self)

    def flip(self, *axes, dims=None):
        return shape_ops.Flip(_sizes(axes) if dims is None else _sizes((dims,)))(self)

    def roll(self, shifts, axis=None, *, dims=None):
        """Shift cyclically along ``axis`` (None: over the flattened tensor, shape kept)."""
        axis = _axis(axis, dims)
        as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
        return shape_ops.Roll(as_tuple(shifts), as_tuple(axis))(self)

    def repeat(self, *reps):
        """Tile: ``x.repeat(2, 3)`` repeats a (a, b) tensor into (2a, 3b) (PyTorch's repeat)."""
        return shape_ops.Repeat(_sizes(reps))(self)

    def split(self, split_size_or_sections, axis=0, *, dim=None):
        """Pieces along ``axis``: of ``split_size`` each (the last may be shorter), or of the
        listed sizes. Each is a differentiable slice."""
        axis = _axis(axis, dim) % max(self.ndim, 1)
        n = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            k = split_size_or_sections
            if k <= 0:
                raise ValueError(f"split size must be positive, got {k}")
            sizes = [k] * (n // k) + ([n % k] if n % k or n == 0 else [])
        else:
            sizes = [int(k) for k in split_size_or_sections]
            if sum(sizes) != n:
                raise ValueError(f"split sizes {sizes} add up to {sum(sizes)}, but axis {axis} "
                                 f"has length {n}")
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        lead = (slice(None),) * axis
        return tuple(self[lead + (slice(s, s + k),)] for s, k in zip(starts, sizes))

    def chunk(self, chunks: int, axis=0, *, dim=None):
        """``chunks`` pieces of equal length along ``axis`` (the last may be shorter, and fewer
        pieces come back when the length does not allow as many, as in PyTorch)."""
        axis = _axis(axis, dim)
        n = self.shape[axis % max(self.ndim, 1)]
        return self.split(max(-(-n // chunks), 1), axis)

    def gather(self, axis, index, *, dim=None):
        """out[i][j] = x[index[i][j]][j] along axis 0 (``torch.gather``); index is integer."""
        idx = operand_data(index, self.device, "gather's index")
        return shape_ops.Gather(axis if dim is None else dim, idx)(self)

    def diagonal(self, offset=0, axis1=0, axis2=1, *, dim1=None, dim2=None):
        """The diagonal of the (axis1, axis2) planes, as the last axis."""
        return shape_ops.Diagonal(offset, _axis(axis1, dim1), _axis(axis2, dim2))(self)

    def __getitem__(self, index):
        """Indexing as in PyTorch: ints, slices, None, ..., integer and boolean arrays or
        tensors; where integers and arrays mix, the integers apply first (see
        ``shape_ops.index_steps``)."""
        out = self
        for step in shape_ops.index_steps(index):  # GetItem unwraps (and moves) the arrays
            out = shape_ops.GetItem(step)(out)
        return out

    def masked_fill(self, mask, value):
        """Where ``mask`` is True, put ``value``; elsewhere keep ``self`` (gradient flows there)."""
        return shape_ops.where(mask, value, self)


def _axis(axis, dim):
    return dim if dim is not None else axis


def _keep(keepdims, keepdim):
    return bool(keepdim) if keepdim is not None else keepdims


def _sizes(args) -> tuple:
    """``f(2, 3)`` or ``f((2, 3))`` as the tuple (2, 3)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)
