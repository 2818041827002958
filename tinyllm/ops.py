"""The primitive operations, each one ``Function``: its forward and its local gradient side by side.

Conventions: ``forward`` receives backend arrays (NumPy or CuPy) and returns one; ``backward``
receives ``gy`` = dL/d(output) and returns one gradient per input (``None`` where
``self.needs_grad[i]`` is False). ``xp`` is the array module of the data
(``backend.get_array_module``), so the same code runs on the CPU and the GPU.

Binary operations broadcast like NumPy; their backward passes undo the broadcast with
``unbroadcast`` (a gradient flowing to a smaller operand is summed over the broadcast axes).

dtypes follow PyTorch's promotion: an integer operand beside a float one takes the float's dtype
(``int64 * float32`` is float32, where NumPy would give float64), and an operation whose result
is fractional (``/``, ``exp``, ``log``, ``sqrt``, ``tanh``, ``sigmoid``, a fractional power)
turns integer input into float32, the default float dtype.

This file holds the primitives lessons 02 and 03 build (their exercises live here);
``elementwise``, ``reductions`` and ``shape_ops`` hold the others.
"""

from __future__ import annotations

from tinyllm.autograd import Function
from tinyllm.backend import get_array_module


def unbroadcast(g, shape):
    """Sum gradient ``g`` down to ``shape``: the inverse of broadcasting ``shape`` up to g.shape.

    Broadcasting copies an operand along new leading axes and along axes of length 1; each copy
    received a share of the gradient, so the operand's gradient is their sum.
    (3, 4) -> (4,) sums axis 0; (3, 4) -> (3, 1) sums axis 1 keeping it.
    """
    if g.shape == shape:
        return g
    # BEGIN SOLUTION
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and g.shape[extra + i] != 1
    )
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)
    # END SOLUTION


def to_float(x):
    """Integer or boolean input as float32 (the default float dtype); float input unchanged."""
    return x if x.dtype.kind == "f" else x.astype("float32")


def promote(a, b):
    """An integer or boolean operand beside a float one takes the float's dtype (PyTorch)."""
    if a.dtype != b.dtype:
        if a.dtype.kind == "f" and b.dtype.kind != "f":
            return a, b.astype(a.dtype)
        if b.dtype.kind == "f" and a.dtype.kind != "f":
            return a.astype(b.dtype), b
    return a, b


def _broadcast_error(name, a, b):
    return ValueError(
        f"cannot {name} tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}: they do not "
        "broadcast (trailing axes must be equal or 1); reshape one of them"
    )


# ---------------------------------------------------------------------------- arithmetic
class Add(Function):
    def forward(self, a, b):
        a, b = promote(a, b)
        self.shapes = a.shape, b.shape
        try:
            return a + b
        except ValueError:
            raise _broadcast_error("add", a, b) from None

    def backward(self, gy):
        sa, sb = self.shapes
        return (unbroadcast(gy, sa) if self.needs_grad[0] else None,
                unbroadcast(gy, sb) if self.needs_grad[1] else None)


class Sub(Function):
    def forward(self, a, b):
        a, b = promote(a, b)
        self.shapes = a.shape, b.shape
        try:
            return a - b
        except ValueError:
            raise _broadcast_error("subtract", a, b) from None

    def backward(self, gy):
        sa, sb = self.shapes
        return (unbroadcast(gy, sa) if self.needs_grad[0] else None,
                unbroadcast(-gy, sb) if self.needs_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        a, b = promote(a, b)
        self.a, self.b = a, b
        try:
            return a * b
        except ValueError:
            raise _broadcast_error("multiply", a, b) from None

    def backward(self, gy):
        a, b = self.a, self.b
        ga = gb = None
        # BEGIN SOLUTION
        if self.needs_grad[0]:
            ga = unbroadcast(gy * b, a.shape)
        if self.needs_grad[1]:
            gb = unbroadcast(gy * a, b.shape)
        # END SOLUTION
        return ga, gb


class Div(Function):
    """True division: integers divided by integers give float32 (as in PyTorch)."""

    def forward(self, a, b):
        a, b = promote(to_float(a), b)
        self.a, self.b = a, b
        try:
            return a / b
        except ValueError:
            raise _broadcast_error("divide", a, b) from None

    def backward(self, gy):
        a, b = self.a, self.b
        ga = gb = None
        # BEGIN SOLUTION
        gy_b = gy / b
        if self.needs_grad[0]:
            ga = unbroadcast(gy_b, a.shape)
        if self.needs_grad[1]:
            gb = unbroadcast(-gy_b * a / b, b.shape)
        # END SOLUTION
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class Pow(Function):
    """x ** p for a constant exponent p (a Python number).

    An integer tensor to a fractional power (``p`` a float) is computed in float32, as in
    PyTorch; to an integer power it stays integer (a negative integer power is an error).
    """

    def __init__(self, p):
        # a Python number: NumPy keeps float32 ** 1.5 float32 (a NumPy float64 would promote)
        self.p = p.item() if hasattr(p, "item") else p

    def forward(self, x):
        if x.dtype.kind != "f":
            if isinstance(self.p, float):
                x = to_float(x)
            elif self.p < 0:
                raise ValueError(f"an integer tensor ({x.dtype}) cannot be raised to the negative "
                                 f"integer power {self.p}; use a float exponent ({self.p}.0)")
        self.x = x
        return x ** self.p

    def backward(self, gy):
        x, p = self.x, self.p
        if p == 0:  # x ** 0 = 1 everywhere: the gradient is 0, also at x = 0 (not 0 * inf)
            return (get_array_module(gy).zeros_like(gy),)
        # BEGIN SOLUTION
        return (gy * p * x ** (p - 1),)
        # END SOLUTION


class Cast(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.src = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return (gy.astype(self.src),)


# ---------------------------------------------------------------------------- elementwise
class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(to_float(x))
        return self.y

    def backward(self, gy):
        # BEGIN SOLUTION
        return (gy * self.y,)
        # END SOLUTION


class Log(Function):
    def forward(self, x):
        self.x = x = to_float(x)
        return get_array_module(x).log(x)

    def backward(self, gy):
        # BEGIN SOLUTION
        return (gy / self.x,)
        # END SOLUTION


class Sqrt(Function):
    def forward(self, x):
        self.y = get_array_module(x).sqrt(to_float(x))
        return self.y

    def backward(self, gy):
        return (gy / (2 * self.y),)


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(to_float(x))
        return self.y

    def backward(self, gy):
        # BEGIN SOLUTION
        return (gy * (1 - self.y * self.y),)
        # END SOLUTION


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        x = to_float(x)
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1)  # = 1 / (1 + exp(-x)), without overflow in exp
        return self.y

    def backward(self, gy):
        return (gy * self.y * (1 - self.y),)


class ReLU(Function):
    def forward(self, x):
        xp = get_array_module(x)
        y = xp.maximum(x, 0)
        self.y = y
        return y

    def backward(self, gy):
        return (gy * (self.y > 0),)


class Abs(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, gy):
        return (gy * get_array_module(gy).sign(self.x),)


# ---------------------------------------------------------------------------- matmul
class MatMul(Function):
    """a @ b for 1-D, 2-D and batched (broadcast) operands, like ``np.matmul``.

    With C = A @ B: dL/dA = dL/dC @ B^T and dL/dB = A^T @ dL/dC (on the last two axes); batch
    axes that were broadcast are summed back; 1-D operands are treated as a row (a) or a column
    (b) vector and the added axis is removed again.
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul needs tensors with at least one dimension; use * for scalars")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if ka != kb:
            raise ValueError(
                f"matmul shape mismatch: {tuple(a.shape)} @ {tuple(b.shape)} (the last axis of the "
                f"left operand, {ka}, must equal the {'second-to-last' if b.ndim > 1 else 'only'} "
                f"axis of the right one, {kb})"
            )
        self.a, self.b = a, b = promote(a, b)
        try:
            return a @ b
        except ValueError:
            raise _broadcast_error("matmul (batch axes of)", a, b) from None

    def backward(self, gy):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gy
        if b.ndim == 1:  # first: for 1-D @ 1-D, gy is 0-d
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        ga = gb = None
        # BEGIN SOLUTION
        if self.needs_grad[0]:
            ga = unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            gb = unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape)
        # END SOLUTION
        return ga, gb


# ---------------------------------------------------------------------------- reductions
def _norm_axes(axis, ndim):
    """The reduced axes as non-negative ints. ``None`` and an empty tuple mean every axis (the
    empty tuple as in PyTorch, where NumPy would reduce nothing)."""
    if axis is None or (not isinstance(axis, int) and len(axis) == 0):
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for ax in axes:
        if not -max(ndim, 1) <= ax < max(ndim, 1):
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
        if ndim:  # a 0-d tensor accepts axis 0 / -1 (as PyTorch does) and reduces nothing
            out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} names an axis twice")
    return tuple(out)


def _expand_reduced(gy, shape, axes, keepdims):
    """Reshape a reduced gradient so that it broadcasts against the input's ``shape``."""
    if keepdims or not shape:
        return gy
    kept = [1 if i in axes else n for i, n in enumerate(shape)]
    return gy.reshape(kept)


class Sum(Function):
    """Sum over ``axis`` (None or () = all axes); integers and booleans sum to int64."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _norm_axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        # BEGIN SOLUTION
        g = _expand_reduced(gy, self.shape, self.axes, self.keepdims)
        return (get_array_module(g).broadcast_to(g, self.shape),)
        # END SOLUTION


class Mean(Function):
    """Mean over ``axis``; integer input gives a float32 mean (PyTorch refuses integers)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _norm_axes(self.axis, x.ndim)
        return to_float(x).mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        n = 1
        for ax in self.axes:
            n *= self.shape[ax]
        # BEGIN SOLUTION
        g = _expand_reduced(gy, self.shape, self.axes, self.keepdims) / n
        return (get_array_module(g).broadcast_to(g, self.shape),)
        # END SOLUTION
