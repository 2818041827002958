"""The Transformer block: attention and a feed-forward network, each wrapped in a residual
connection and a LayerNorm.

Pre-LN (GPT-2):   x = x + Attn(LN(x));   x = x + FF(LN(x))
Post-LN (BERT, the original Transformer):   x = LN(x + Attn(x));   x = LN(x + FF(x))

Pre-LN keeps an untouched residual path from the input to the output, so gradients reach the
early layers undiminished and deep stacks train without a careful warm-up.
"""

from __future__ import annotations

from tinyllm import functional as F
from tinyllm.nn.attention import MultiHeadAttention
from tinyllm.nn.layers import Dropout, LayerNorm, Linear
from tinyllm.nn.module import Module


def gelu_tanh(x):
    """GELU's tanh approximation (GPT-2's ``gelu_new``)."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": gelu_tanh, "gelu_new": gelu_tanh, "relu": F.relu}


class FeedForward(Module):
    """Position-wise MLP: Linear(C, d_ff) -> activation -> Linear(d_ff, C) -> dropout. (B, T, C)."""

    def __init__(self, d_model: int, d_ff=None, dropout: float = 0.0, bias: bool = True,
                 activation: str = "gelu", init_std=None, proj_init_std=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        d_ff = d_ff or 4 * d_model
        self.activation = activation
        self.fc = Linear(d_model, d_ff, bias=bias, init_std=init_std)
        self.proj = Linear(d_ff, d_model, bias=bias, init_std=proj_init_std or init_std)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(ACTIVATIONS[self.activation](self.fc(x))))

    def extra_repr(self):
        return f"activation={self.activation!r}"


class TransformerBlock(Module):
    """Self-attention (+ cross-attention in a decoder) + feed-forward, pre- or post-LayerNorm.

    ``TransformerBlock(d_model, n_head, d_ff=None, dropout=0.0, bias=True, norm_first=True,
    activation="gelu", cross_attention=False, eps=1e-5)``. x (B, T, C) -> (B, T, C).
    ``cross_attention=True`` adds a ``MultiHeadAttention(cross=True)``; a module instead is used
    as the cross-attention itself (the encoder-decoder passes one that reuses the memory's keys
    and values). GPT has a block of its own, without these branches (``tinyllm.models.gpt``).
    """

    def __init__(self, d_model: int, n_head: int, d_ff=None, dropout: float = 0.0,
                 bias: bool = True, norm_first: bool = True, activation: str = "gelu",
                 cross_attention: bool = False, eps: float = 1e-5, init_std=None,
                 proj_init_std=None):
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = LayerNorm(d_model, eps, bias=bias)
        self.attn = MultiHeadAttention(d_model, n_head, dropout, bias, init_std=init_std,
                                       proj_init_std=proj_init_std)
        if isinstance(cross_attention, Module):
            self.ln_cross = LayerNorm(d_model, eps, bias=bias)
            self.cross_attn = cross_attention
        elif cross_attention:
            self.ln_cross = LayerNorm(d_model, eps, bias=bias)
            self.cross_attn = MultiHeadAttention(d_model, n_head, dropout, bias, cross=True,
                                                 init_std=init_std, proj_init_std=proj_init_std)
        else:
            self.cross_attn = None
        self.ln_2 = LayerNorm(d_model, eps, bias=bias)
        self.mlp = FeedForward(d_model, d_ff, dropout, bias, activation, init_std, proj_init_std)

    def forward(self, x, mask=None, is_causal: bool = False, memory=None, memory_mask=None,
                cache=None):
        """``mask``/``is_causal`` shape self-attention; ``memory`` (B, S, C) and ``memory_mask``
        (broadcasting to (B, H, T, S)) feed cross-attention; ``cache`` is this layer's KVCache."""
        attn = lambda h: self.attn(h, mask=mask, is_causal=is_causal, cache=cache)  # noqa: E731
        cross = lambda h: self.cross_attn(h, memory=memory, mask=memory_mask)  # noqa: E731
        # BEGIN SOLUTION
        if self.norm_first:
            x = x + attn(self.ln_1(x))
            if self.cross_attn is not None:
                x = x + cross(self.ln_cross(x))
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + attn(x))
            if self.cross_attn is not None:
                x = self.ln_cross(x + cross(x))
            x = self.ln_2(x + self.mlp(x))
        # END SOLUTION
        return x
