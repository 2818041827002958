"""The layers of today's decoder (Llama): RMSNorm, rotary positions, SwiGLU, grouped-query attention.

A Llama block is GPT-2's pre-norm block with four pieces swapped:

    GPT-2                                   Llama
    LayerNorm (mean, variance, bias)        RMSNorm (root mean square only, no bias)
    learned position vectors, added once    RoPE: queries and keys rotated in every layer
    GELU MLP, C -> 4C -> C                  SwiGLU, down(silu(gate(x)) * up(x)), C -> F -> C
    n_head key/value heads                  n_kv_head <= n_head, shared by groups of queries
    biases in every Linear                  no biases

    x = x + Attention(RMSNorm(x));   x = x + SwiGLU(RMSNorm(x))

Shapes: x (B, T, C); queries (B, n_head, T, D), keys and values (B, n_kv_head, T, D) with
D = C / n_head; cos and sin tables (T, D).
"""

from __future__ import annotations

from tinyllm import functional as F
from tinyllm.backend import get_array_module
from tinyllm.nn import init
from tinyllm.nn.attention import KVCache, merge_heads, split_heads
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module, Parameter
from tinyllm.repeat_kv import repeat_kv
from tinyllm.rms_norm import rms_norm
from tinyllm.rope import apply_rope, rope_cos_sin
from tinyllm.swiglu import swiglu

try:
    from tinyllm.tensor import as_tensor
except ImportError:  # until the engine's as_tensor reaches main: tl.tensor wraps without a copy
    from tinyllm.tensor import tensor as as_tensor

__all__ = ["RMSNorm", "RotaryEmbedding", "SwiGLUFeedForward", "GroupedQueryAttention",
           "LlamaBlock"]


class RMSNorm(Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (C,); the weight starts at ones."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(init.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class RotaryEmbedding(Module):
    """The cos/sin tables of RoPE for positions 0 .. max_positions - 1 (no parameters).

    ``tables(offset, length, like)`` returns the rows offset .. offset + length - 1, in the dtype
    and on the device of the array ``like``; the full table is computed once per dtype and
    device (in float64, then cast) and sliced afterwards, so a decoding step costs a slice.
    ``rows(positions, like)`` gathers one row of positions per batch row instead.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim (pairs of channels), got {head_dim}")
        self.head_dim, self.max_positions, self.base = head_dim, max_positions, float(base)
        self._tables = {}

    def tables(self, offset: int, length: int, like):
        xp = get_array_module(like)
        if offset + length > self.max_positions:  # longer than planned: compute these rows only
            return rope_cos_sin(xp.arange(offset, offset + length), self.head_dim, self.base,
                                like.dtype)
        key = (xp.__name__, str(like.dtype))
        if key not in self._tables:
            self._tables[key] = rope_cos_sin(xp.arange(self.max_positions), self.head_dim,
                                             self.base, like.dtype)
        cos, sin = self._tables[key]
        return cos[offset:offset + length], sin[offset:offset + length]

    def rows(self, positions, like):
        """Tables (B, T, D) for integer positions (B, T), each batch row its own (a padded batch
        numbers its real tokens from 0); positions must be below ``max_positions``."""
        cos, sin = self.tables(0, self.max_positions, like)
        return cos[positions], sin[positions]

    def extra_repr(self):
        return f"head_dim={self.head_dim}, max_positions={self.max_positions}, base={self.base:g}"


class SwiGLUFeedForward(Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)): C -> d_ff (twice) -> C, no biases. (B, T, C)."""

    def __init__(self, d_model: int, d_ff: int, init_std: float = 0.02):
        super().__init__()
        self.gate_proj = Linear(d_model, d_ff, bias=False, init_std=init_std)
        self.up_proj = Linear(d_model, d_ff, bias=False, init_std=init_std)
        self.down_proj = Linear(d_ff, d_model, bias=False, init_std=init_std)

    def forward(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class GroupedQueryAttention(Module):
    """Causal self-attention with ``n_head`` query heads and ``n_kv_head`` key/value heads.

    ``n_kv_head`` divides ``n_head``; query head h reads key/value head h // (n_head / n_kv_head).
    n_kv_head = n_head is multi-head attention, n_kv_head = 1 multi-query attention. Queries and
    keys are rotated by RoPE before the scores (the cached keys already rotated), and the cache
    holds only the n_kv_head key/value heads: they are repeated for the product, not stored twice.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, dropout: float = 0.0,
                 init_std: float = 0.02):
        super().__init__()
        if d_model % n_head or n_head % n_kv_head:
            raise ValueError(f"grouped-query attention needs n_head ({n_head}) to divide d_model "
                             f"({d_model}) and n_kv_head ({n_kv_head}) to divide n_head")
        self.d_model, self.n_head, self.n_kv_head = d_model, n_head, n_kv_head
        self.head_dim, self.dropout_p = d_model // n_head, dropout
        kv_dim = n_kv_head * self.head_dim
        self.q_proj = Linear(d_model, d_model, bias=False, init_std=init_std)
        self.k_proj = Linear(d_model, kv_dim, bias=False, init_std=init_std)
        self.v_proj = Linear(d_model, kv_dim, bias=False, init_std=init_std)
        self.o_proj = Linear(d_model, d_model, bias=False, init_std=init_std)

    def forward(self, x, cos, sin, cache: KVCache = None, mask=None, return_weights=False):
        """x (B, T, C), cos/sin (T, D) of the new positions -> (B, T, C) (and the weights
        (B, n_head, T, S) with ``return_weights``). ``mask`` (bool, True = attend) broadcasts to
        (B, n_head, T, S) and is combined with causality."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"attention expects input (B, T, {self.d_model}), got {tuple(x.shape)}")
        q = apply_rope(split_heads(self.q_proj(x), self.n_head), cos, sin)
        k = apply_rope(split_heads(self.k_proj(x), self.n_kv_head), cos, sin)
        v = split_heads(self.v_proj(x), self.n_kv_head)
        if cache is not None:  # (B, n_kv_head, S, D): only the shared heads are kept
            ks, vs = cache.update(k.data, v.data)
            k, v = as_tensor(ks), as_tensor(vs)
        n_rep = self.n_head // self.n_kv_head
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True, dropout_p=p,
                                             return_weights=return_weights)
        if return_weights:
            out, weights = out
        y = self.o_proj(merge_heads(out))
        return (y, weights) if return_weights else y

    def extra_repr(self):
        return f"d_model={self.d_model}, n_head={self.n_head}, n_kv_head={self.n_kv_head}"


class LlamaBlock(Module):
    """x = x + attn(attn_norm(x)); x = x + mlp(mlp_norm(x)). (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, n_head: int, n_kv_head: int, d_ff: int, eps: float = 1e-6,
                 dropout: float = 0.0, init_std: float = 0.02):
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = GroupedQueryAttention(d_model, n_head, n_kv_head, dropout, init_std)
        self.mlp_norm = RMSNorm(d_model, eps)
        self.mlp = SwiGLUFeedForward(d_model, d_ff, init_std)

    def forward(self, x, cos, sin, cache=None, mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache=cache, mask=mask)
        return x + self.mlp(self.mlp_norm(x))
