"""Sparse attention patterns (Child et al., 2019, "Generating Long Sequences with Sparse
Transformers") as boolean masks for ``F.scaled_dot_product_attention(..., mask=...)``.

Dense causal attention lets query i see every key j <= i: T (T + 1) / 2 scores, quadratic in
the context length. A sparse pattern keeps a subset of those pairs:

* **local** (a sliding window of ``w``): j in [i - w + 1, i], at most w keys per query;
* **strided** (stride ``l``): the local window of l keys plus every l-th earlier key,
  (i - j) mod l == 0, so with l ~ sqrt(T) each query sees about 2 sqrt(T) keys and any position
  reaches any earlier one in two layers (one hop along the stride, one within the window).

Masks are (T, T), True = may attend; they already include causality, so they can be used with
or without ``is_causal=True``. ``attention_cost`` counts the attended pairs against dense causal
attention, the quantity that sets both the compute and the memory of the score matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.backend import get_array_module
from tinyllm.tensor import Tensor

__all__ = ["local_attention_mask", "strided_attention_mask", "AttentionCost", "attention_cost",
           "lm_logits_with_attention_mask"]


def _offsets(t: int, xp):
    """(T, T) integer array of i - j: how far key j lies behind query i."""
    i = xp.arange(t)
    return i[:, None] - i[None, :]


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def local_attention_mask(t: int, window: int, xp=None):
    """(T, T) mask: query i attends keys j with 0 <= i - j < window (itself and window - 1
    earlier positions)."""
    xp = xp or backend.np
    _positive("t", t)
    _positive("window", window)
    d = _offsets(t, xp)
    # BEGIN SOLUTION
    return (d >= 0) & (d < window)
    # END SOLUTION


def strided_attention_mask(t: int, stride: int, xp=None):
    """(T, T) mask: query i attends keys j <= i with i - j < stride (the local window) or
    (i - j) a multiple of stride (the strided positions)."""
    xp = xp or backend.np
    _positive("t", t)
    _positive("stride", stride)
    d = _offsets(t, xp)
    # BEGIN SOLUTION
    return (d >= 0) & ((d < stride) | (d % stride == 0))
    # END SOLUTION


@dataclass(frozen=True)
class AttentionCost:
    pairs: int  # query-key pairs the mask lets attend (and causality allows)
    dense_pairs: int  # pairs of dense causal attention, T (T + 1) / 2 per (T, T) block

    @property
    def fraction(self) -> float:
        """Attended pairs as a fraction of dense causal attention."""
        return self.pairs / self.dense_pairs


def attention_cost(mask) -> AttentionCost:
    """Count the attended pairs of a boolean mask (..., T, T) (True = attend) that causality
    allows, against dense causal attention over the same leading axes."""
    m = mask.data if isinstance(mask, Tensor) else mask
    xp = get_array_module(m)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2] or m.dtype != bool:
        raise ValueError(f"attention_cost needs a boolean (..., T, T) mask, got {m.dtype} "
                         f"{tuple(m.shape)}")
    t = m.shape[-1]
    causal = xp.tril(xp.ones((t, t), dtype=bool))
    blocks = m.size // (t * t)
    return AttentionCost(int((m & causal).sum()), blocks * t * (t + 1) // 2)


def lm_logits_with_attention_mask(model, idx, mask):
    """A GPT's logits (B, T, V) with every block's self-attention limited to ``mask`` (T, T),
    on top of causality: the GPT's own forward pass with the mask handed to each block.

    Useful to measure what a pattern costs a model trained densely (no retraining)."""
    ids = model._check_ids(idx, None)
    t = ids.shape[1]
    x = model.drop(model.wte(ids) + model.wpe(t, 0))
    for block in model.blocks:
        x = block(x, mask=mask, is_causal=True)
    return F.linear(model.ln_f(x), model.wte.weight)
