"""Reductions beyond the lessons' sum and mean (``tinyllm.ops``): max and min, product,
log-sum-exp, variance, and the running sum.

Axis rules (shared with ``Sum``/``Mean``, see ``ops._norm_axes``): ``axis`` is an int, a tuple
or None; None and the empty tuple reduce every axis (PyTorch's rule for ``dim=()``); negative
axes count from the end; a 0-d tensor accepts axis 0 or -1 and reduces nothing. ``keepdims``
keeps the reduced axes with length 1. ``max``/``min`` with an axis return the values only
(PyTorch's ``amax``/``amin``; ``argmax`` gives the indices).
"""

from __future__ import annotations

import math

from tinyllm.autograd import Function
from tinyllm.backend import get_array_module
from tinyllm.ops import _expand_reduced, _norm_axes, to_float


def _check_not_empty(name, x, axes):
    for ax in axes:
        if x.shape[ax] == 0:
            raise ValueError(f"{name} over axis {ax} of a tensor of shape {tuple(x.shape)}: that "
                             "axis is empty, so there is no value to return")


def _drop(shape, axes):
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class Max(Function):
    """Maximum over axes; the gradient goes to the maximal entries (split evenly between ties).

    An input that is empty is fine as long as the reduced axes are not (the result is empty).
    """

    reduce = "max"

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        self.axes = _norm_axes(self.axis, x.ndim)
        _check_not_empty(self.reduce, x, self.axes)
        self.y = getattr(x, self.reduce)(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape(_drop(x.shape, self.axes))

    def backward(self, gy):
        g = _expand_reduced(gy, self.x.shape, self.axes, self.keepdims)
        hit = self.x == self.y
        count = hit.sum(axis=self.axes, keepdims=True)
        return (hit * (g / count).astype(self.x.dtype),)


class Min(Max):
    """Minimum over axes; the gradient goes to the minimal entries (ties split evenly)."""

    reduce = "min"


class Prod(Function):
    """Product over axes. d/dx_i = the product of the other elements of x_i's group, computed
    from running products from the left and from the right (no division, so zeros are fine)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        self.axes = _norm_axes(self.axis, x.ndim)
        return x.prod(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        x, axes = self.x, self.axes
        kept = [i for i in range(x.ndim) if i not in axes]
        xt = x.transpose(kept + list(axes))  # the reduced axes last, then as one axis of n
        n = math.prod(xt.shape[len(kept):])
        flat = xt.reshape(xt.shape[:len(kept)] + (n,))
        ones = xp.ones(flat.shape[:-1] + (1,), dtype=x.dtype)
        left = xp.concatenate([ones, xp.cumprod(flat, axis=-1)[..., :-1]], axis=-1)
        rflat = xp.flip(flat, axis=-1)
        right = xp.flip(xp.concatenate([ones, xp.cumprod(rflat, axis=-1)[..., :-1]], axis=-1), -1)
        others = (left * right).reshape(xt.shape)  # x_j for all j != i, multiplied
        inverse = [0] * x.ndim
        for pos, ax in enumerate(kept + list(axes)):
            inverse[ax] = pos
        g = _expand_reduced(gy, x.shape, axes, self.keepdims)
        return (others.transpose(inverse) * g,)


class LogSumExp(Function):
    """y = m + log(sum(exp(x - m))), m the maximum (so exp cannot overflow); dy/dx = softmax(x)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp = get_array_module(x)
        x = to_float(x)
        self.axes = _norm_axes(self.axis, x.ndim)
        _check_not_empty("logsumexp", x, self.axes)
        m = x.max(axis=self.axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # rows of -inf: exp(-inf - 0) = 0, log(0) = -inf
        y = m + xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True))
        self.x, self.y = x, y
        return y if self.keepdims else y.reshape(_drop(x.shape, self.axes))

    def backward(self, gy):
        g = _expand_reduced(gy, self.x.shape, self.axes, self.keepdims)
        return (g * get_array_module(g).exp(self.x - self.y),)


class Var(Function):
    """Variance sum((x - mean)^2) / (N - correction) over axes.

    dVar/dx_i = 2 (x_i - mean) / (N - correction) (the mean's own gradient cancels, since the
    deviations sum to 0). With N - correction <= 0 the result is nan (0/0) or inf, as in PyTorch.
    """

    def __init__(self, axis=None, keepdims=False, correction=0):
        self.axis, self.keepdims, self.correction = axis, keepdims, correction

    def forward(self, x):
        xp = get_array_module(x)
        x = to_float(x)
        self.axes = _norm_axes(self.axis, x.ndim)
        n = math.prod(x.shape[ax] for ax in self.axes)
        self.dof = n - self.correction
        self.dev = x - x.sum(axis=self.axes, keepdims=True) / max(n, 1)
        ss = (self.dev * self.dev).sum(axis=self.axes, keepdims=self.keepdims)
        if self.dof > 0:
            return ss / self.dof
        return xp.where(ss > 0, x.dtype.type(math.inf), x.dtype.type(math.nan))

    def backward(self, gy):
        xp = get_array_module(gy)
        if self.dof <= 0:
            return (xp.full(self.dev.shape, math.nan, dtype=self.dev.dtype),)
        g = _expand_reduced(gy, self.dev.shape, self.axes, self.keepdims)
        return (g * self.dev * (2 / self.dof),)


def _one_axis(axis, ndim, name):
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{name}: axis {axis} is out of range for a tensor with {ndim} dimensions")
    return axis % max(ndim, 1)


class CumSum(Function):
    """Running sum along one axis: y_i = x_1 + ... + x_i; dx_i = dy_i + ... + dy_n (the running
    sum of the gradient from the end)."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        self.ax = _one_axis(self.axis, x.ndim, "cumsum")
        if x.ndim == 0:
            return x.astype("int64") if x.dtype.kind in "biu" else x.copy()
        return get_array_module(x).cumsum(x, axis=self.ax)

    def backward(self, gy):
        if gy.ndim == 0:
            return (gy,)
        xp = get_array_module(gy)
        return (xp.flip(xp.cumsum(xp.flip(gy, self.ax), axis=self.ax), self.ax),)
