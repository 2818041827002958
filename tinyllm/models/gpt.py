"""GPT: a decoder-only Transformer language model (GPT-2's architecture, nanoGPT's shape).

    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    logits, loss = model(idx, targets)          # idx, targets (B, T) integer arrays
    out = model.generate(idx, max_new_tokens=100, do_sample=True, top_k=40)

The whole model is in this file, from ids to logits, on the engine's functions (``F.linear``,
``F.layer_norm``, ``F.scaled_dot_product_attention``, ...):

    x = drop(wte[idx] + wpe[positions])                         (B, T, C)
    each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))  causal self-attention, pre-LN
    logits = ln_f(x) @ wte^T                                    (B, T, V)

The token ids are embedded (``wte``), a learned vector per position is added (``wpe``), pre-LN
blocks mix the positions (each attends to itself and the ones before), a final LayerNorm
(``ln_f``) normalises, and the logits are the dot products with the token embeddings again: the
head is *tied* to ``wte``, one (V, C) matrix reads tokens in and writes them out.

Shapes: ``B`` batch, ``T`` positions, ``C`` = n_embd (the width), ``V`` = vocab_size,
``H`` = n_head heads of ``D`` = C / H channels; ``S`` positions of keys (T plus the cached ones).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from tinyllm import functional as F
from tinyllm.activation_checkpoint import checkpoint
from tinyllm.backend import np, to_device
from tinyllm.ids import as_ids, as_mask, mask_positions
from tinyllm.models.generation import GenerationMixin
from tinyllm.models.hub import PretrainedMixin
from tinyllm.models.presets import PRESETS, preset_config
from tinyllm.nn.attention import KVCache, merge_heads, split_heads
from tinyllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from tinyllm.nn.module import Module, ModuleList
from tinyllm.nn.positional import LearnedPositionalEmbedding
from tinyllm.nn.transformer import ACTIVATIONS, FeedForward

__all__ = ["GPTConfig", "GPT", "Block", "CausalSelfAttention"]


@dataclass
class GPTConfig:
    """Sizes of a GPT. ``block_size`` is the longest context (the number of learned positions)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: True)
    activation: str = "gelu"  # GPT-2 checkpoints use "gelu_new" (the tanh approximation)
    layer_norm_eps: float = 1e-5
    checkpoint_blocks: bool = False  # recompute each block in backward (tl.checkpoint): less memory

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by "
                             f"n_head={self.n_head} (each head gets n_embd // n_head channels)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GPTConfig.activation {self.activation!r} is unknown; choose from "
                             f"{sorted(ACTIVATIONS)}")
        if not isinstance(self.checkpoint_blocks, bool):
            raise ValueError(f"GPTConfig.checkpoint_blocks must be true or false, got "
                             f"{self.checkpoint_blocks!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"GPTConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPTConfig:
        """A config from a named preset (``tinyllm.models.PRESETS``); keywords override its sizes.

        ``vocab_size`` comes from the tokenizer/corpus, e.g.
        ``GPTConfig.from_preset("baby-shakespeare", vocab_size=65)``.
        """
        kwargs = preset_config(name)
        kwargs.update(overrides)
        if "vocab_size" not in kwargs:
            raise ValueError(f"preset {name!r} needs vocab_size=... (the tokenizer's vocabulary "
                             "size, e.g. 65 for character-level Tiny Shakespeare)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"GPTConfig has no field(s) {unknown}; fields are {sorted(known)}")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


# GPT-2's initialisation: N(0, 0.02) everywhere, zero biases, and the two projections into the
# residual stream of each block scaled by 1/sqrt(2 n_layer) (two residual adds per block).
INIT_STD = 0.02


class CausalSelfAttention(Module):
    """Multi-head causal self-attention, q, k and v from one packed projection C -> 3C.

    x (B, T, C) -> (B, T, C): each head h computes softmax(q_h k_h^T / sqrt(D)) v_h, where query
    i sees keys j <= i; the heads are concatenated and projected back (``proj``). With a
    ``cache`` (decoding) the keys include the cached earlier positions; ``mask`` (B, 1, 1, S),
    True at real tokens, also hides padding.
    """

    def __init__(self, config: GPTConfig, proj_std: float):
        super().__init__()
        c = config.n_embd
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = Linear(c, 3 * c, bias=config.bias, init_std=INIT_STD)
        self.proj = Linear(c, c, bias=config.bias, init_std=proj_std)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, mask=None, cache: KVCache | None = None):
        h = self.n_head
        # qkv's channels are [q | k | v], each H heads of D: one split into 3H heads, then
        # slices along the head axis give the three
        qkv = split_heads(self.qkv(x), 3 * h)  # (B, 3H, T, D)
        q, k, v = qkv[:, :h], qkv[:, h:2 * h], qkv[:, 2 * h:]
        if cache is not None:  # decoding: the earlier positions' keys and values too (lesson 10)
            k, v = cache.append(k, v)  # (B, H, S, D)
        p = self.dropout if self.training else 0.0  # dropout on the attention weights
        y = F.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True, dropout_p=p)
        return self.resid_dropout(self.proj(merge_heads(y)))


class Block(Module):
    """A pre-LN Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). (B, T, C) -> same.

    The residual stream x passes through untouched; each sub-layer reads a normalised copy and
    adds its result. ``mlp`` is Linear(C, 4C) -> activation -> Linear(4C, C) -> dropout.
    """

    def __init__(self, config: GPTConfig, proj_std: float):
        super().__init__()
        c = config
        self.ln_1 = LayerNorm(c.n_embd, c.layer_norm_eps, bias=c.bias)
        self.attn = CausalSelfAttention(c, proj_std)
        self.ln_2 = LayerNorm(c.n_embd, c.layer_norm_eps, bias=c.bias)
        self.mlp = FeedForward(c.n_embd, 4 * c.n_embd, c.dropout, c.bias, c.activation,
                               init_std=INIT_STD, proj_init_std=proj_std)

    def forward(self, x, mask=None, cache: KVCache | None = None):
        """x (B, T, C) -> (B, T, C); ``mask`` and ``cache`` are the attention's."""
        # BEGIN SOLUTION
        x = x + self.attn(self.ln_1(x), mask, cache)
        x = x + self.mlp(self.ln_2(x))
        # END SOLUTION
        return x

    use_checkpoint = False  # set from GPTConfig.checkpoint_blocks by GPT

    def __call__(self, x, mask=None, cache: KVCache | None = None):
        """``forward``; with ``use_checkpoint`` (and no cache) through ``tl.checkpoint``, which
        keeps only the block's input and reruns its forward during backward (lesson 14)."""
        if self.use_checkpoint and cache is None:
            return checkpoint(self.forward, x, mask, None)
        return self.forward(x, mask, cache)


class GPT(PretrainedMixin, GenerationMixin, Module):
    """The GPT language model: ``GPT(config)``; ``model(idx, targets=None)``."""

    presets = PRESETS
    hf_format = ("tinyllm.models.hf_gpt2", "load_gpt2", "save_gpt2")  # GPT-2 directories

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT(config) needs a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        proj_std = INIT_STD / math.sqrt(2 * c.n_layer)
        self.wte = Embedding(c.vocab_size, c.n_embd, init_std=INIT_STD)
        self.wpe = LearnedPositionalEmbedding(c.block_size, c.n_embd, init_std=INIT_STD)
        self.drop = Dropout(c.dropout)
        self.blocks = ModuleList(Block(c, proj_std) for _ in range(c.n_layer))
        for block in self.blocks:
            block.use_checkpoint = c.checkpoint_blocks
        self.ln_f = LayerNorm(c.n_embd, c.layer_norm_eps, bias=c.bias)

    # ------------------------------------------------------------------ forward
    def forward(self, idx, targets=None, kv_caches=None, attention_mask=None):
        """idx (B, T) integer ids -> logits (B, T, V); with ``targets`` (B, T) -> (logits, loss).

        ``loss`` is the mean cross-entropy over the positions whose target is not -100.
        ``kv_caches`` (one ``KVCache`` per block, see ``new_kv_caches``) makes the positions of
        ``idx`` continue the cached ones: generation feeds one new token at a time.
        ``attention_mask`` (B, S), 1 at real tokens and 0 at padding, for the S = cached + T
        positions: padding is hidden from attention and each token's position counts only the
        real tokens before it (a left-padded row computes what it would alone).
        """
        x = self.hidden_states(idx, kv_caches, attention_mask)
        # BEGIN SOLUTION
        logits = F.linear(x, self.wte.weight)  # the tied head: logits = x wte^T
        # END SOLUTION
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, targets, ignore_index=-100)

    def hidden_states(self, idx, kv_caches=None, attention_mask=None):
        """idx (B, T) -> the final hidden states (B, T, C), after ``ln_f``: everything but the
        head. The arguments are ``forward``'s."""
        ids = as_ids(idx, "idx", ndim=2, device=self.wte.weight.device)
        pos, mask = self._positions(ids, kv_caches, attention_mask)
        caches = kv_caches or [None] * len(self.blocks)
        # BEGIN SOLUTION
        x = self.drop(self.wte(ids) + self.wpe(pos))
        for block, cache in zip(self.blocks, caches):
            x = block(x, mask, cache)
        return self.ln_f(x)
        # END SOLUTION

    def _positions(self, ids, kv_caches, attention_mask):
        """(positions of the tokens, key mask): ``range(offset, offset + T)`` and None, or with
        an attention mask (B, S) the positions cumsum(mask) - 1 (B, T), as transformers numbers
        them for GPT-2 (padding gets position 1, a dummy), and the mask as (B, 1, 1, S)."""
        b, t = ids.shape
        if kv_caches is not None and len(kv_caches) != len(self.blocks):
            raise ValueError(f"kv_caches has {len(kv_caches)} caches; this GPT has "
                             f"{len(self.blocks)} blocks (use model.new_kv_caches())")
        offset = kv_caches[0].length if kv_caches else 0
        block_size = self.config.block_size
        if offset + t > block_size:
            raise ValueError(f"sequence of length {offset + t} (input T={t}"
                             f"{f', after {offset} cached positions' if offset else ''}) is longer "
                             f"than block_size={block_size}; crop it to the last {block_size} "
                             "tokens")
        if attention_mask is None:
            return range(offset, offset + t), None
        # one entry per cached and new position
        dev = self.wte.weight.device
        real = as_mask(attention_mask, "attention_mask", (b, offset + t), dev)
        pos = mask_positions(real, offset, dummy=min(1, block_size - 1))  # where the mask lives
        return pos, to_device(real[:, None, None, :], dev)  # moved once, for every block

    # ------------------------------------------------------------------ generation hooks
    @property
    def block_size(self) -> int:
        return self.config.block_size

    def next_token_logits(self, ids, kv_caches=None, attention_mask=None):
        """Logits (N, V) of the last position of ``ids`` (N, T), which continue ``kv_caches``:
        the head only where generation needs it."""
        return F.linear(self.hidden_states(ids, kv_caches, attention_mask)[:, -1],
                        self.wte.weight)

    def new_kv_caches(self) -> list:
        """One empty ``KVCache`` per block, each holding up to ``block_size`` positions."""
        return [KVCache(self.config.block_size) for _ in self.blocks]

    # ------------------------------------------------------------------ training helpers
    def configure_optimizers(self, weight_decay: float = 0.1, lr: float = 6e-4,
                             betas=(0.9, 0.95), eps: float = 1e-8):
        """AdamW with two groups (nanoGPT): every parameter with 2+ dimensions (the Linear
        weights and the embeddings) is decayed; biases and LayerNorm weights are not."""
        from tinyllm.optim import AdamW, decay_groups  # noqa: PLC0415  (loaded lazily)

        return AdamW(decay_groups(self.parameters(), weight_decay), lr=lr, betas=betas, eps=eps)

    def num_parameters(self, trainable_only: bool = False, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the position table (nanoGPT's count,
        the token table is shared with the LM head and so stays in)."""
        n = super().num_parameters(trainable_only)
        return n - self.wpe.weight.size if non_embedding else n

    def extra_repr(self) -> str:
        c = self.config
        return (f"vocab_size={c.vocab_size}, block_size={c.block_size}, n_layer={c.n_layer}, "
                f"n_head={c.n_head}, n_embd={c.n_embd}")
