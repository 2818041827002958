"""Elementwise Functions beyond the lessons' primitives: powers with a tensor exponent, the
elementwise maximum and minimum, clipping, and the base-2 and reciprocal-root functions.

Same conventions as ``tinyllm.ops``: ``forward`` on backend arrays, ``backward`` returns one
gradient per input, binary operations broadcast (and ``unbroadcast`` their gradients), and
integer input to a fractional result becomes float32.
"""

from __future__ import annotations

import math

from tinyllm.autograd import Function
from tinyllm.backend import get_array_module
from tinyllm.ops import promote, to_float, unbroadcast


class Power(Function):
    """a ** b with a tensor exponent (``x ** y``, and ``2.0 ** x`` through ``__rpow__``).

    d/da = b a^(b-1); d/db = a^b log(a). Where a = 0 and b >= 0 the exponent's gradient is 0
    (the limit along b), as PyTorch defines it, instead of 0 * log(0).
    """

    def forward(self, a, b):
        a, b = promote(a, b)
        if a.dtype.kind != "f" and b.dtype.kind != "f" and bool((b < 0).any()):
            raise ValueError("integers cannot be raised to negative integer powers; make the "
                             "exponent float")
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        a, b, y = self.a, self.b, self.y
        ga = gb = None
        if self.needs_grad[0]:
            ga = unbroadcast(gy * b * a ** (b - 1), a.shape)
        if self.needs_grad[1]:
            at_zero = (a == 0) & (b >= 0)
            log_a = xp.log(xp.where(at_zero, 1, a))  # log(1) = 0 where the limit is 0
            gb = unbroadcast(gy * y * log_a, b.shape)
        return ga, gb


class Maximum(Function):
    """Elementwise max(a, b); where a == b each side gets half the gradient (as PyTorch)."""

    def forward(self, a, b):
        a, b = promote(a, b)
        self.a, self.b = a, b
        return get_array_module(a).maximum(a, b)

    def backward(self, gy):
        return _split_by_winner(gy, self.a > self.b, self.a == self.b, self)


class Minimum(Function):
    """Elementwise min(a, b); ties split the gradient like ``Maximum``."""

    def forward(self, a, b):
        a, b = promote(a, b)
        self.a, self.b = a, b
        return get_array_module(a).minimum(a, b)

    def backward(self, gy):
        return _split_by_winner(gy, self.a < self.b, self.a == self.b, self)


def _split_by_winner(gy, a_wins, tie, fn):
    """Gradient of max/min: all of it to the winning side, half to each side on a tie."""
    to_a = gy * (a_wins + gy.dtype.type(0.5) * tie)  # a's share: 1, 0.5 or 0 of gy
    ga = unbroadcast(to_a, fn.a.shape) if fn.needs_grad[0] else None
    gb = unbroadcast(gy - to_a, fn.b.shape) if fn.needs_grad[1] else None
    return ga, gb


class Clip(Function):
    """Clamp to [lo, hi] (either may be None); the gradient flows where lo <= x <= hi."""

    def __init__(self, lo=None, hi=None):
        # Python numbers: a NumPy float64 bound would promote float32 data
        self.lo, self.hi = (v.item() if hasattr(v, "item") else v for v in (lo, hi))

    def forward(self, x):
        xp = get_array_module(x)
        if isinstance(self.lo, float) or isinstance(self.hi, float):
            x = to_float(x)  # integers clipped to a float bound become float32 (PyTorch)
        self.x = y = x
        if self.lo is not None:
            y = xp.maximum(y, self.lo)
        if self.hi is not None:
            y = xp.minimum(y, self.hi)
        return y

    def backward(self, gy):
        inside = gy.dtype.type(1)
        if self.lo is not None:
            inside = inside * (self.x >= self.lo)
        if self.hi is not None:
            inside = inside * (self.x <= self.hi)
        return (gy * inside,)


class Log2(Function):
    """y = log2(x); dy/dx = 1 / (x ln 2)."""

    def forward(self, x):
        self.x = x = to_float(x)
        return get_array_module(x).log2(x)

    def backward(self, gy):
        return (gy / (self.x * math.log(2)),)


class Exp2(Function):
    """y = 2^x; dy/dx = 2^x ln 2 = y ln 2."""

    def forward(self, x):
        self.y = get_array_module(x).exp2(to_float(x))
        return self.y

    def backward(self, gy):
        return (gy * self.y * math.log(2),)


class Rsqrt(Function):
    """y = 1 / sqrt(x); dy/dx = -x^(-3/2) / 2 = -y^3 / 2."""

    def forward(self, x):
        self.y = 1 / get_array_module(x).sqrt(to_float(x))
        return self.y

    def backward(self, gy):
        y = self.y
        return (gy * (-0.5 * y * y * y),)
