"""Tensor's arithmetic operators: ``+ - * / ** @`` and unary minus, each one line that calls the
lesson's Function (``tinyllm.ops``; a tensor exponent calls ``elementwise.Power``).

``tinyllm.tensor.Tensor`` inherits them, so that ``a * b`` builds ``ops.Mul`` with a and b as its
inputs, and the reflected forms (``2 * a``, ``array @ a``) put the other operand first. The method
names ``add``, ``sub``, ``mul``, ``div``, ``pow`` are PyTorch's spellings of the same operators.
"""

from __future__ import annotations

from tinyllm import elementwise, ops
from tinyllm.backend import np


class TensorOperators:
    """Mixed into ``Tensor``: the arithmetic operators, each building its Function."""

    __slots__ = ()

    def __add__(self, other):
        return ops.Add()(self, other)

    def __radd__(self, other):
        return ops.Add()(other, self)

    def add(self, other, alpha=1):
        """self + alpha * other."""
        return self + (other if alpha == 1 else other * alpha)

    def __sub__(self, other):
        return ops.Sub()(self, other)

    def __rsub__(self, other):
        return ops.Sub()(other, self)

    def sub(self, other, alpha=1):
        """self - alpha * other."""
        return self - (other if alpha == 1 else other * alpha)

    def __mul__(self, other):
        return ops.Mul()(self, other)

    def __rmul__(self, other):
        return ops.Mul()(other, self)

    def mul(self, other):
        return self * other

    def __truediv__(self, other):
        return ops.Div()(self, other)

    def __rtruediv__(self, other):
        return ops.Div()(other, self)

    def div(self, other):
        return self / other

    def __neg__(self):
        return ops.Neg()(self)

    def __pow__(self, exponent):
        """x ** p: a Python number p is a constant (``ops.Pow``); a tensor or array exponent gets
        its own gradient (``elementwise.Power``)."""
        if isinstance(exponent, (int, float, np.generic)):
            return ops.Pow(exponent)(self)
        return elementwise.Power()(self, exponent)

    def __rpow__(self, base):
        return elementwise.Power()(base, self)

    def pow(self, exponent):
        return self ** exponent

    def __matmul__(self, other):
        return ops.MatMul()(self, other)

    def __rmatmul__(self, other):
        return ops.MatMul()(other, self)
