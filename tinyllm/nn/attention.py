"""Multi-head attention: self-attention, cross-attention, masks and the key/value cache.

Each head h projects the input to queries, keys and values of size D = C / n_head and computes
softmax(Q_h K_h^T / sqrt(D)) V_h; the heads' outputs are concatenated and projected back to C.

Shapes: x (B, T, C); heads (B, n_head, T, D); memory for cross-attention (B, S, C).
"""

from __future__ import annotations

from tinyllm import functional as F
from tinyllm.backend import get_array_module
from tinyllm.nn.layers import Dropout, Linear
from tinyllm.nn.module import Module
from tinyllm.tensor import as_tensor


def split_heads(x, n_head: int):
    """(B, T, C) -> (B, n_head, T, C // n_head): each head sees its own slice of the channels."""
    b, t, c = x.shape
    # BEGIN SOLUTION
    return x.reshape(b, t, n_head, c // n_head).transpose(0, 2, 1, 3)
    # END SOLUTION


def merge_heads(x):
    """(B, n_head, T, D) -> (B, T, n_head * D): the inverse of ``split_heads``."""
    b, h, t, d = x.shape
    # BEGIN SOLUTION
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)
    # END SOLUTION


class KVCache:
    """Keys and values of the positions already processed, for incremental decoding.

    Generating token t+1 needs the keys and values of positions 0..t; recomputing them each step
    costs the whole prefix. The cache keeps them in buffers of ``max_len`` positions (B, H, L, D)
    and appends the new ones, so each step costs one position's projections.
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k = self.v = None  # backend arrays (B, H, max_len, D)
        self.length = 0

    def update(self, k, v):
        """Append ``k``, ``v`` (B, H, T_new, D) and return all cached keys and values (B, H, S, D)."""
        xp = get_array_module(k)
        b, h, t, d = k.shape
        if self.length + t > self.max_len:
            raise ValueError(f"the key/value cache holds {self.max_len} positions; cannot add {t} "
                             f"more to {self.length}")
        if self.k is None:
            self.k = xp.empty((b, h, self.max_len, d), dtype=k.dtype)
            self.v = xp.empty((b, h, self.max_len, d), dtype=v.dtype)
        # BEGIN SOLUTION
        end = self.length + t
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]
        # END SOLUTION

    def reorder(self, index) -> None:
        """Keep the batch rows ``index`` (beam search re-ranks its hypotheses every step)."""
        if self.k is not None:
            self.k, self.v = self.k[index], self.v[index]


class MultiHeadAttention(Module):
    """``MultiHeadAttention(d_model, n_head, dropout=0.0, bias=True, cross=False)``.

    Self-attention projects x to queries, keys and values with one Linear (C -> 3C); with
    ``cross=True`` the queries come from x and the keys and values from ``memory``
    (the encoder's output), through separate ``q`` (C -> C) and ``kv`` (C -> 2C) projections.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 cross: bool = False, init_std=None, proj_init_std=None):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.d_model, self.n_head, self.cross, self.dropout_p = d_model, n_head, cross, dropout
        if cross:
            self.q = Linear(d_model, d_model, bias=bias, init_std=init_std)
            self.kv = Linear(d_model, 2 * d_model, bias=bias, init_std=init_std)
        else:
            self.qkv = Linear(d_model, 3 * d_model, bias=bias, init_std=init_std)
        self.proj = Linear(d_model, d_model, bias=bias, init_std=proj_init_std or init_std)
        self.resid_dropout = Dropout(dropout)

    def forward(self, x, memory=None, mask=None, is_causal: bool = False, cache: KVCache = None,
                return_weights: bool = False):
        """x (B, T, C) -> (B, T, C); with ``return_weights`` also the weights (B, n_head, T, S).

        ``mask`` is boolean, True = may attend, broadcasting to (B, n_head, T, S), e.g. a padding
        mask (B, 1, 1, S). ``cache`` (self-attention only) holds earlier positions' keys and values.
        """
        c, h = self.d_model, self.n_head
        if x.ndim != 3 or x.shape[-1] != c:
            raise ValueError(f"attention expects input (B, T, {c}), got {tuple(x.shape)}")
        # The packed projections' channels are [q | k | v], each C = n_head * D wide, so one
        # split into 3 * n_head heads and a slice along the head axis give each of them.
        if self.cross:
            if memory is None:
                raise ValueError("cross-attention needs memory=(B, S, C), the encoder output")
            q = split_heads(self.q(x), h)
            kv = split_heads(self.kv(memory), 2 * h)
            k, v = kv[:, :h], kv[:, h:]
        else:
            qkv = split_heads(self.qkv(x), 3 * h)  # (B, 3 n_head, T, D)
            q, k, v = qkv[:, :h], qkv[:, h:2 * h], qkv[:, 2 * h:]
        if cache is not None:
            ks, vs = cache.update(k.data, v.data)
            k, v = as_tensor(ks), as_tensor(vs)
        p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                                             dropout_p=p, return_weights=return_weights)
        if return_weights:
            out, weights = out
        y = self.resid_dropout(self.proj(merge_heads(out)))
        return (y, weights) if return_weights else y

    def extra_repr(self):
        return f"d_model={self.d_model}, n_head={self.n_head}, cross={self.cross}"
