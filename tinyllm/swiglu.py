"""SiLU and the SwiGLU gate (Shazeer 2020, "GLU Variants Improve Transformer").

GPT's feed-forward is W2 gelu(W1 x). A *gated linear unit* multiplies two projections of x, one
of them passed through an activation that acts as a soft gate:

    SwiGLU(x) = W_down (silu(W_gate x) * (W_up x)),     silu(a) = a * sigmoid(a)

(SiLU is also called Swish with beta = 1; ``tinyllm.activations.SiLU``, re-exported here, is the
activation alone.) This file has the elementwise part,
``swiglu(gate, up) = silu(gate) * up``, as one Function; the three projections are Linear layers
(``tinyllm.nn.llama_layers.SwiGLUFeedForward``). With s = sigmoid(a):

    d silu(a) / da = s + a s (1 - s) = s (1 + a (1 - s))
    d/d gate = dy * up * s (1 + gate (1 - s)),   d/d up = dy * silu(gate)

Shapes: gate and up (..., F) -> (..., F).
"""

from __future__ import annotations

from tinyllm.activations import SiLU, silu  # the activation itself (also F.silu)
from tinyllm.autograd import Function
from tinyllm.backend import get_array_module

__all__ = ["SiLU", "SwiGLU", "silu", "swiglu"]


def _sigmoid(a):
    """sigmoid(a) = (1 + tanh(a / 2)) / 2: no overflow of exp(-a) for large negative a."""
    xp = get_array_module(a)
    s = xp.tanh(a * a.dtype.type(0.5))
    s += 1
    s *= a.dtype.type(0.5)
    return s


class SwiGLU(Function):
    """y = silu(gate) * up; see the module docstring for the gradient."""

    def forward(self, gate, up):
        if gate.shape != up.shape:
            raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must "
                             "have the same shape (two projections of x to d_ff channels)")
        s = _sigmoid(gate)
        self.gate, self.up, self.s = gate, up, s
        # BEGIN SOLUTION
        return gate * s * up
        # END SOLUTION

    def backward(self, gy):
        gate, up, s = self.gate, self.up, self.s
        g_gate = g_up = None
        # BEGIN SOLUTION
        if self.needs_grad[0]:
            g_gate = gy * up * s * (1 + gate * (1 - s))
        if self.needs_grad[1]:
            g_up = gy * gate * s
        # END SOLUTION
        return g_gate, g_up


def swiglu(gate, up):
    """The gated unit of SwiGLU, silu(gate) * up (the two projections of x, (..., F) each)."""
    return SwiGLU()(gate, up)
