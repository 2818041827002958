"""RMSNorm (Zhang & Sennrich 2019): LayerNorm without the mean and without the bias.

    rms(x) = sqrt(mean(x^2) + eps),   xhat = x / rms(x),   y = w * xhat      (over the last axis C)

LayerNorm re-centres (subtracts the mean) and re-scales; RMSNorm only re-scales, which the paper
found to matter, and saves a reduction and the bias. Llama, Mistral, Qwen, Gemma use it.

Backward, with r = 1 / rms(x) and g = dy * w (the gradient reaching xhat):

    d xhat_j / d x_k = r (delta_jk - xhat_j xhat_k / C)
    dx = r * (g - xhat * mean(g * xhat)),    dw = sum over positions of dy * xhat

LayerNorm's dx has one more term, - mean(g): the projection out of the all-ones direction that
its mean subtraction makes. RMSNorm keeps only the projection out of xhat (scaling x does not
change xhat).

Shapes: x (..., C), w (C,).
"""

from __future__ import annotations

from tinyllm.autograd import Function
from tinyllm.backend import get_array_module

__all__ = ["RMSNorm", "rms_norm"]


class RMSNorm(Function):
    """y = x / sqrt(mean(x^2) + eps) * w over the last axis; see the module docstring."""

    def __init__(self, eps=1e-6):
        self.eps = eps

    def forward(self, x, w):
        xp = get_array_module(x)
        eps = x.dtype.type(self.eps)
        # BEGIN SOLUTION
        mean_sq = (x * x).mean(axis=-1, keepdims=True)
        rstd = 1 / xp.sqrt(mean_sq + eps)
        xhat = x * rstd
        # END SOLUTION
        self.xhat, self.rstd, self.w = xhat, rstd, w
        return xhat * w

    def backward(self, gy):
        xhat, rstd, w = self.xhat, self.rstd, self.w
        c = xhat.shape[-1]
        gx = gw = None
        if self.needs_grad[0]:
            # BEGIN SOLUTION
            g = gy * w
            gx = rstd * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
            # END SOLUTION
        if self.needs_grad[1]:
            gw = (gy * xhat).reshape(-1, c).sum(axis=0)
        return gx, gw


def rms_norm(x, weight, eps: float = 1e-6):
    """Root-mean-square normalisation over the last axis: x (..., C), weight (C,) -> (..., C)."""
    c = x.shape[-1]
    if tuple(weight.shape) != (c,):
        raise ValueError(f"rms_norm: input (..., {c}) needs a weight of shape ({c},), got "
                         f"{tuple(weight.shape)}")
    if not eps > 0:
        raise ValueError(f"rms_norm: eps must be positive, got {eps!r}")
    return RMSNorm(eps)(x, weight)
