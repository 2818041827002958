"""``Tensor``: an array (``.data``) plus what autograd needs (``.grad``, ``.requires_grad``, ``._ctx``).

    x = tl.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()          # x.grad == 2 * x

Operators and methods build ``Function`` objects from ``tinyllm.ops``; the arithmetic itself
happens there, one Function per operation, forward and backward side by side.
"""

from __future__ import annotations

from tinyllm import autograd, backend, ops, shape_ops
from tinyllm.backend import np


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_retain_grad", "__weakref__")
    __array_priority__ = 1000  # numpy_array * tensor calls Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None, _raw=False):
        if not _raw:
            if isinstance(data, Tensor):
                data = data.data
            data = backend.as_array(data, dtype=dtype, device=device)
        self.data = data
        self.grad = None
        self._ctx = None
        self._retain_grad = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return backend.get_device(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag and not backend.is_float(self.data.dtype):
            raise TypeError(
                f"only floating-point tensors can require gradients; this one is {self.dtype} "
                f"with shape {self.shape} (integer tensors hold ids or counts: make it float "
                "with tl.tensor(x, dtype='float32') if it should be learned)"
            )
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` on this intermediate tensor after backward (leaves always keep it)."""
        self._retain_grad = True
        return self

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), precision=4, separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.data)

    def __hash__(self):
        return id(self)

    # ------------------------------------------------------------------ conversion
    def numpy(self):
        """A host NumPy array with the values (a copy when the tensor lives on the GPU)."""
        d = self.data
        return d if isinstance(d, np.ndarray) else backend.to_device(d, "cpu")

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """The same data, cut from the graph (no gradient flows through it)."""
        return Tensor(self.data, _raw=True)

    def to(self, device=None, dtype=None) -> Tensor:
        """Move to ``device`` ('cpu' or 'cuda') and/or cast to ``dtype``.

        The cast is differentiable; a device move makes a new leaf (move parameters with
        ``Module.to`` before building the graph, not in the middle of it)."""
        out = self
        if device is not None and backend.get_device(self.data) != device:
            out = Tensor(backend.to_device(self.data, device), _raw=True)
            out.requires_grad = self.requires_grad
        if dtype is not None and np.dtype(dtype) != out.dtype:
            out = ops.Cast(np.dtype(dtype))(out)
        return out

    def float(self) -> Tensor:
        return self.to(dtype="float32")

    def double(self) -> Tensor:
        return self.to(dtype="float64")

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None) -> None:
        """Compute d(self)/d(leaf) for every leaf in the graph and add it to ``leaf.grad``."""
        if not self.requires_grad:
            raise RuntimeError(
                f"backward() on a tensor of shape {self.shape} that does not require grad: it was "
                "made under tl.no_grad(), detached, or from tensors none of which require grad "
                "(create the leaves with requires_grad=True)"
            )
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient works only on a scalar output, but this "
                    f"tensor has shape {self.shape}: reduce it first (e.g. loss.mean()) or pass "
                    "grad=<array of that shape>"
                )
            seed = xp.ones(self.shape, dtype=self.dtype)
        else:
            seed = operand_data(grad, self.device, "backward's grad")
            seed = xp.asarray(seed, dtype=self.dtype)
            if seed.shape != self.shape:
                try:
                    seed = xp.broadcast_to(seed, self.shape).copy()
                except ValueError:
                    raise ValueError(
                        f"backward(grad) got a gradient of shape {seed.shape} for a tensor of "
                        f"shape {self.shape}; they must match"
                    ) from None
            if not bool(xp.isfinite(seed).all()):
                raise ValueError("backward(grad) got a gradient containing NaN or infinity")
        autograd.run_backward(self, seed)

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return ops.Add()(self, other)

    def __radd__(self, other):
        return ops.Add()(other, self)

    def __sub__(self, other):
        return ops.Sub()(self, other)

    def __rsub__(self, other):
        return ops.Sub()(other, self)

    def __mul__(self, other):
        return ops.Mul()(self, other)

    def __rmul__(self, other):
        return ops.Mul()(other, self)

    def __truediv__(self, other):
        return ops.Div()(self, other)

    def __rtruediv__(self, other):
        return ops.Div()(other, self)

    def __neg__(self):
        return ops.Neg()(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("x ** y needs a Python number as the exponent; use tl.exp(y * x.log())")
        return ops.Pow(float(exponent))(self)

    def __matmul__(self, other):
        return ops.MatMul()(self, other)

    def __rmatmul__(self, other):
        return ops.MatMul()(other, self)

    # comparisons give boolean tensors that carry no gradient (masks)
    def _compare(self, other, fn):
        if not isinstance(other, (int, float)):  # arrays and tensors: the rule of operand_data
            other = operand_data(other, self.device, "the other side of a comparison")
        return Tensor(fn(self.data, other), _raw=True)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def eq(self, other):
        return self._compare(other, lambda a, b: a == b)

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

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, *, dim=None):
        return ops.Sum(_axis(axis, dim), keepdims)(self)

    def mean(self, axis=None, keepdims=False, *, dim=None):
        return ops.Mean(_axis(axis, dim), keepdims)(self)

    def max(self, axis=None, keepdims=False, *, dim=None):
        return ops.Max(_axis(axis, dim), keepdims)(self)

    def var(self, axis=None, keepdims=False, *, dim=None, correction=0):
        """Variance (population variance by default, as LayerNorm uses)."""
        axis = _axis(axis, dim)
        mu = self.mean(axis, keepdims=True)
        sq = ((self - mu) ** 2).sum(axis, keepdims=keepdims)
        n = self.size // sq.size if sq.size else 0
        return sq / max(n - correction, 1)

    def argmax(self, axis=None):
        return Tensor(self.data.argmax(axis=axis), _raw=True)

    # ------------------------------------------------------------------ shapes
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return shape_ops.Reshape(shape)(self)

    view = reshape

    def flatten(self):
        return self.reshape(-1)

    def transpose(self, *axes):
        """Permute axes NumPy-style (``x.transpose(0, 2, 1)``; no axes reverses them all).

        Two axes on a tensor with more than two dimensions swap just those two (PyTorch's
        ``transpose(dim0, dim1)``), which attention code uses for ``k.transpose(-2, -1)``.
        """
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if len(axes) == 2 and self.ndim != 2:
            perm = list(range(self.ndim))
            a, b = (ax % self.ndim for ax in axes)
            perm[a], perm[b] = perm[b], perm[a]
            axes = tuple(perm)
        return shape_ops.Transpose(axes or None)(self)

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return shape_ops.Transpose(axes)(self)

    def swapaxes(self, a, b):
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return shape_ops.Transpose(tuple(perm))(self)

    @property
    def T(self):
        return shape_ops.Transpose(None)(self)

    def __getitem__(self, index):
        return shape_ops.GetItem(index)(self)

    def masked_fill(self, mask, value):
        """Where ``mask`` is True, put ``value``; elsewhere keep ``self`` (gradient flows there)."""
        return where(mask, value, self)


def _axis(axis, dim):
    return dim if axis is None else axis


# ---------------------------------------------------------------------- constructors
def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """Make a tensor from numbers, nested lists, a NumPy/CuPy array or another tensor.

    NumPy float arrays keep their dtype (float64 stays float64, for gradient checks); Python
    floats and lists of them become float32; integers stay integers (and cannot require grad).
    """
    if isinstance(data, Tensor):
        data = data.data
    elif isinstance(data, (list, tuple)) and _holds_arrays(data):
        data = _stack_nested(data)
    return Tensor(backend.as_array(data, dtype=dtype, device=device), requires_grad=requires_grad, _raw=True)


def _holds_arrays(data) -> bool:
    """Whether a nested list holds arrays or tensors (its first element is looked at)."""
    while isinstance(data, (list, tuple)) and data:
        data = data[0]
    return hasattr(data, "shape")


def _stack_nested(data):
    """``[a, b]`` of tensors or arrays (say two device scalars) -> one array, stacked on the
    device of the first array (host parts are moved there, as every operand)."""
    items = [_stack_nested(d) if isinstance(d, (list, tuple)) else d for d in data]
    items = [d.data if isinstance(d, Tensor) else d for d in items]
    device = next(backend.get_device(d) for d in items if hasattr(d, "shape"))
    items = [backend.as_array(d, device=device) for d in items]
    return backend.get_array_module(items[0]).stack(items)


def as_tensor_like(x, like: Tensor | None) -> Tensor:
    """Wrap a constant operand (a Python number or an array) next to tensor ``like``.

    A Python number takes ``like``'s float dtype, so ``x * 0.5`` never upcasts float32 to float64.
    """
    if like is not None and isinstance(x, (int, float)) and backend.is_float(like.dtype):
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(x, dtype=like.dtype), _raw=True)
    device = like.device if like is not None else None
    return Tensor(backend.as_array(x, device=device), _raw=True)


def operand_data(x, device: str, what: str):
    """The backend array of a data operand ``x`` (ids, targets, a mask, an index, the other side
    of a comparison) of an operation that runs on ``device``.

    tinyllm's one rule for mixing devices, the same as every Function call's: raw data (Python
    numbers and lists, NumPy or CuPy arrays) is moved to ``device`` (NumPy in at the edges); a
    Tensor must be there already, and one on another device is refused, as in PyTorch.
    """
    if isinstance(x, Tensor):
        if x.device != device:
            raise RuntimeError(
                f"{what} is a tensor on {x.device} (shape {x.shape}) but the operation runs on "
                f"{device}; move it first with .to({device!r}) (NumPy arrays are moved for you)")
        return x.data
    return backend.as_array(x, device=device)


def zeros(*shape, dtype="float32", requires_grad=False, device=None) -> Tensor:
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def ones(*shape, dtype="float32", requires_grad=False, device=None) -> Tensor:
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def randn(*shape, dtype="float32", requires_grad=False, device=None) -> Tensor:
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    data = backend.rng().standard_normal(shape, dtype="float64").astype(dtype)
    return tensor(data, requires_grad=requires_grad, device=device)


def arange(*args, dtype=None, device=None) -> Tensor:
    return tensor(np.arange(*args, dtype=dtype), device=device)


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (``np.concatenate``); the gradient is split back."""
    return shape_ops.Concatenate(axis)(*tensors)


cat = concatenate


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors along a new axis (``np.stack``)."""
    return shape_ops.Stack(axis)(*tensors)


def where(cond, a, b) -> Tensor:
    """``a`` where ``cond`` is True, else ``b``; gradients flow to the chosen side only."""
    like = a if isinstance(a, Tensor) else b
    if isinstance(like, Tensor):  # a host mask is moved beside the data, a host tensor refused
        c = operand_data(cond, like.device, "where's condition")
    else:
        c = cond.data if isinstance(cond, Tensor) else cond
    return shape_ops.Where(c)(a, b)


def exp(x):
    return ops.Exp()(x)


def log(x):
    return ops.Log()(x)


def sqrt(x):
    return ops.Sqrt()(x)


def tanh(x):
    return ops.Tanh()(x)


def is_tensor(x) -> bool:
    return isinstance(x, Tensor)

