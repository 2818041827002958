"""Grouped-query attention's key/value sharing: ``repeat_kv`` (Ainslie et al. 2023, "GQA").

Multi-head attention gives each of the n_head query heads its own key and value head. Grouped-
query attention keeps n_head query heads but only n_kv_head key/value heads (n_kv_head divides
n_head): consecutive groups of n_rep = n_head / n_kv_head query heads share one. Multi-query
attention (Shazeer 2019) is n_kv_head = 1; multi-head is n_kv_head = n_head. The key/value cache
of decoding then holds n_kv_head heads instead of n_head, n_rep times less memory per token.

For the attention product the shared heads are repeated in order, query head h reading
key/value head h // n_rep (Hugging Face's ``repeat_kv``, ``torch.repeat_interleave``):

    kv heads [a, b], n_rep = 3  ->  [a, a, a, b, b, b]        (not [a, b, a, b, a, b])

Backward: each key/value head received the gradients of its n_rep copies, so they are summed,
dx[:, j] = sum over r of dy[:, j * n_rep + r].

Shapes: x (B, n_kv_head, T, D) -> (B, n_kv_head * n_rep, T, D); any leading axes before the
head axis work the same (the head axis is the third from the end).
"""

from __future__ import annotations

from tinyllm.autograd import Function
from tinyllm.backend import get_array_module

__all__ = ["RepeatKV", "repeat_kv"]


class RepeatKV(Function):
    """Repeat each head (axis -3) ``n_rep`` times in place: head h of the output is head
    h // n_rep of the input; the gradient sums the copies back."""

    def __init__(self, n_rep: int):
        self.n_rep = n_rep

    def forward(self, x):
        xp = get_array_module(x)
        self.shape = x.shape
        # BEGIN SOLUTION
        return xp.repeat(x, self.n_rep, axis=-3)
        # END SOLUTION

    def backward(self, gy):
        *lead, h, t, d = self.shape
        # BEGIN SOLUTION
        return (gy.reshape(*lead, h, self.n_rep, t, d).sum(axis=-3),)
        # END SOLUTION


def repeat_kv(x, n_rep: int):
    """Key or value heads (..., n_kv_head, T, D) -> (..., n_kv_head * n_rep, T, D), each head
    repeated ``n_rep`` times in order; ``n_rep = 1`` returns ``x`` itself."""
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"repeat_kv: n_rep must be a positive integer, got {n_rep!r}")
    if x.ndim < 3:
        raise ValueError(f"repeat_kv: x must have shape (..., n_kv_head, T, D), got "
                         f"{tuple(x.shape)}")
    return x if n_rep == 1 else RepeatKV(n_rep)(x)
