"""``Tensor``: an array (``.data``) plus what autograd needs (``.grad``, ``.requires_grad``,
``.grad_fn``).

    x = tl.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()          # x.grad == 2 * x

Operators and methods build ``Function`` objects from the modules above this one (``ops``,
``elementwise``, ``reductions``, ``shape_ops``, ``functional``); the arithmetic itself happens
there, one Function per operation, forward and backward side by side. The arithmetic operators
come from ``tinyllm.tensor_operators``, the other methods from ``tinyllm.tensor_methods``.
``Tensor`` implements the node protocol of ``tinyllm.autograd`` (which never imports this module).

Semantics follow PyTorch; where they differ the method says so (``max``/``min`` with an axis
return values only; ``var``/``std`` default to the population variance; ``size`` is a property).
Comparisons (``==``, ``<``, ...) give boolean tensors; ``hash`` stays by identity, so tensors
work as dict keys and in sets (and ``t in list`` compares elementwise, as in PyTorch).
"""

from __future__ import annotations

from tinyllm import backend, ops, shape_ops
from tinyllm.autograd import Node, operand_data, run_backward
from tinyllm.backend import np
from tinyllm.tensor_methods import TensorMethods, _sizes
from tinyllm.tensor_operators import TensorOperators


class Tensor(TensorOperators, TensorMethods, Node):
    __slots__ = ("data", "grad", "requires_grad", "grad_fn", "_retain_grad", "__weakref__")
    __array_priority__ = 1000  # numpy_array * tensor calls Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None):
        """Wrap ``data`` as ``tl.as_tensor`` does (an array is not copied); ``tl.tensor`` copies."""
        if isinstance(data, Tensor):
            data = data.data
        self.data = backend.as_array(data, dtype=dtype, device=device)
        self.grad = None
        self.grad_fn = None
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
        """The number of elements (a property here; PyTorch's ``size()`` is ``shape``)."""
        return self.data.size

    def numel(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return backend.get_device(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

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

    # ------------------------------------------------------------------ the node protocol
    @staticmethod
    def _new(array) -> Tensor:
        return _wrap(array)

    def _new_constant(self, value) -> Tensor:
        return as_tensor_like(value, self)

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
        return _wrap(self.data)

    def to(self, device=None, dtype=None) -> Tensor:
        """Move to ``device`` ('cpu' or 'cuda') and/or cast to ``dtype``.

        The cast is differentiable; a device move makes a new leaf (move parameters with
        ``Module.to`` before building the graph, not in the middle of it)."""
        out = self
        if device is not None and backend.get_device(self.data) != device:
            out = _wrap(backend.to_device(self.data, device))
            out.requires_grad = self.requires_grad
        if dtype is not None and np.dtype(dtype) != out.dtype:
            out = ops.Cast(np.dtype(dtype))(out)
        return out

    def float(self) -> Tensor:
        return self.to(dtype="float32")

    def double(self) -> Tensor:
        return self.to(dtype="float64")

    def contiguous(self) -> Tensor:
        """This tensor if its data is C-contiguous, else a contiguous copy (differentiable)."""
        return self if self.data.flags.c_contiguous else shape_ops.Copy()(self)

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
        run_backward(self, seed)

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ comparisons
    def _compare(self, other, fn):
        """A boolean tensor, outside the graph; NotImplemented for non-numeric ``other``."""
        if isinstance(other, (Tensor, list, tuple)) or hasattr(other, "dtype"):
            other = operand_data(other, self.device, "the other side of a comparison")
        elif not isinstance(other, (int, float)):
            return NotImplemented
        return _wrap(backend.get_array_module(self.data).asarray(fn(self.data, other)))  # 0-d: an array

    def __eq__(self, other):
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def eq(self, other):
        return self == other

    def isclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False):
        """|self - other| <= atol + rtol |other| elementwise, as a boolean tensor."""
        xp = backend.get_array_module(self.data)
        return self._compare(other, lambda a, b: xp.isclose(a, b, rtol, atol, equal_nan))


# ---------------------------------------------------------------------- making tensors
def _wrap(array) -> Tensor:
    """A tensor around a backend array, as is (no checks, no copy): the engine's own wrapper."""
    t = Tensor.__new__(Tensor)
    t.data, t.grad, t.grad_fn, t._retain_grad, t.requires_grad = array, None, None, False, False
    return t


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """``data`` as a tensor, sharing memory when it can (``torch.as_tensor``).

    A NumPy or CuPy array is wrapped as it is (the tensor and the array share memory) unless a
    different ``dtype`` or ``device`` is asked for; a tensor comes back as it is (or cast and
    moved); Python numbers and lists become a new array (floats as float32).
    """
    if isinstance(data, Tensor):
        return data if dtype is None and device is None else data.to(device, dtype)
    if dtype is None and device is None and (isinstance(data, np.ndarray)
                                             or backend.get_device(data) == "cuda"):
        return _wrap(data)
    return _wrap(backend.as_array(data, dtype=dtype, device=device))


def from_numpy(array) -> Tensor:
    """A CPU tensor sharing memory with the NumPy ``array`` (``torch.from_numpy``): writing to
    one changes the other."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy needs a NumPy array, got {type(array).__name__}")
    return _wrap(array)


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """A new tensor holding a copy of ``data`` (``torch.tensor``): numbers, nested lists, a
    NumPy/CuPy array or another tensor. Changing ``data`` later does not change the tensor.

    NumPy float arrays keep their dtype (float64 stays float64, for gradient checks); Python
    floats and lists of them become float32; integers stay integers (and cannot require grad).
    """
    if isinstance(data, Tensor):
        data = data.data
    elif isinstance(data, (list, tuple)) and _holds_arrays(data):
        data = _stack_nested(data)  # a fresh array
    array = backend.as_array(data, dtype=dtype, device=device)
    t = _wrap(array.copy() if array is data else array)
    return t.requires_grad_(True) if requires_grad else t


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

    A Python number takes ``like``'s float dtype, so ``x * 0.5`` never upcasts float32 to float64
    (and a Python int beside an integer tensor takes its dtype, as in PyTorch).
    """
    if like is not None and isinstance(x, (int, float)) and not isinstance(x, bool):
        kind = like.dtype.kind
        if kind == "f" or (kind in "iu" and isinstance(x, int)):  # int32 + 1 stays int32
            return _wrap(backend.get_array_module(like.data).asarray(x, dtype=like.dtype))
    device = like.device if like is not None else None
    return _wrap(backend.as_array(x, device=device))


def zeros(*shape, dtype="float32", requires_grad=False, device=None) -> Tensor:
    return Tensor(np.zeros(_sizes(shape), dtype=dtype), requires_grad, device=device)


def ones(*shape, dtype="float32", requires_grad=False, device=None) -> Tensor:
    return Tensor(np.ones(_sizes(shape), dtype=dtype), requires_grad, device=device)


def randn(*shape, dtype="float32", requires_grad=False, device=None) -> Tensor:
    """Standard normal values from tinyllm's seeded generator (``tl.manual_seed``)."""
    data = backend.rng().standard_normal(_sizes(shape), dtype="float64").astype(dtype)
    return Tensor(data, requires_grad, device=device)


def arange(*args, dtype=None, device=None) -> Tensor:
    return Tensor(np.arange(*args, dtype=dtype), device=device)


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (``np.concatenate``); the gradient is split back."""
    return shape_ops.Concatenate(axis)(*tensors)


cat = concatenate


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors along a new axis (``np.stack``)."""
    return shape_ops.Stack(axis)(*tensors)


where = shape_ops.where


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
