"""The primitive operations, each one ``Function``: its forward and its local gradient side by side.

Conventions: ``forward`` receives backend arrays (NumPy or CuPy) and returns one; ``backward``
receives ``gy`` = dL/d(output) and returns one gradient per input (``None`` where
``self.needs_grad[i]`` is False). ``xp`` is the array module of the data
(``backend.get_array_module``), so the same code runs on the CPU and the GPU.

Binary operations broadcast like NumPy; their backward passes undo the broadcast with
``unbroadcast`` (a gradient flowing to a smaller operand is summed over the broadcast axes).
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


def _broadcast_error(name, a, b):
    return ValueError(
        f"cannot {name} tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}: they do not "
        "broadcast (trailing axes must be equal or 1); reshape one of them"
    )


# ---------------------------------------------------------------------------- arithmetic
class Add(Function):
    def forward(self, a, b):
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
    def forward(self, a, b):
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
    """x ** p for a constant exponent p."""

    def __init__(self, p: float):
        self.p = p

    def forward(self, x):
        self.x = x
        p = self.p
        return x * x if p == 2.0 else x ** x.dtype.type(p)

    def backward(self, gy):
        x, p = self.x, self.p
        # BEGIN SOLUTION
        if p == 2.0:
            return (gy * 2 * x,)
        return (gy * p * x ** x.dtype.type(p - 1),)
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
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        # BEGIN SOLUTION
        return (gy * self.y,)
        # END SOLUTION


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        # BEGIN SOLUTION
        return (gy / self.x,)
        # END SOLUTION


class Sqrt(Function):
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return (gy / (2 * self.y),)


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        # BEGIN SOLUTION
        return (gy * (1 - self.y * self.y),)
        # END SOLUTION


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1)  # stable for large |x|
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
        self.a, self.b = a, b
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
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for ax in axes:
        if not -max(ndim, 1) <= ax < max(ndim, 1):
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
        if ndim:  # a 0-d tensor accepts axis 0 / -1 (as PyTorch does) and reduces nothing
            out.append(ax % ndim)
    return tuple(out)


def _expand_reduced(gy, shape, axes, keepdims):
    """Reshape a reduced gradient so that it broadcasts against the input's ``shape``."""
    if keepdims or not shape:
        return gy
    kept = [1 if i in axes else n for i, n in enumerate(shape)]
    return gy.reshape(kept)


class Sum(Function):
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
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _norm_axes(self.axis, x.ndim)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        n = 1
        for ax in self.axes:
            n *= self.shape[ax]
        # BEGIN SOLUTION
        g = _expand_reduced(gy, self.shape, self.axes, self.keepdims) / n
        return (get_array_module(g).broadcast_to(g, self.shape),)
        # END SOLUTION


class Max(Function):
    """Maximum over axes; the gradient goes to the maximal entries (split evenly between ties)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        if x.size == 0:
            raise ValueError(f"max of an empty tensor (shape {tuple(x.shape)})")
        self.x = x
        self.axes = _norm_axes(self.axis, x.ndim)
        self.y = x.max(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        g = _expand_reduced(gy, self.x.shape, self.axes, self.keepdims)
        hit = self.x == self.y
        count = hit.sum(axis=self.axes, keepdims=True)
        return (hit * (g / count).astype(self.x.dtype),)
