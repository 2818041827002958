"""GPT: a decoder-only Transformer language model (GPT-2's architecture, nanoGPT's shape).

    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(config)
    logits, loss = model(idx, targets)          # idx, targets (B, T) integer arrays
    out = model.generate(idx, max_new_tokens=100, do_sample=True, top_k=40)

The token ids are embedded (``wte``), a learned vector per position is added (``wpe``), a stack of
pre-LayerNorm Transformer blocks with causal self-attention mixes the positions, a final
LayerNorm (``ln_f``) normalises, and the logits are the dot products with the token embeddings
again (the LM head is *tied* to ``wte``: one (V, C) matrix reads tokens in and writes them out).

Shapes: ``B`` batch, ``T`` positions, ``C`` = n_embd, ``V`` = vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from tinyllm import functional as F
from tinyllm.activation_checkpoint import checkpoint
from tinyllm.backend import np
from tinyllm.models.generation import GenerationMixin
from tinyllm.models.presets import PRESETS, preset_config
from tinyllm.nn.attention import KVCache
from tinyllm.nn.layers import Dropout, Embedding, LayerNorm
from tinyllm.nn.module import Module, ModuleList
from tinyllm.nn.positional import LearnedPositionalEmbedding
from tinyllm.nn.transformer import ACTIVATIONS, TransformerBlock
from tinyllm.tensor import Tensor

__all__ = ["GPTConfig", "GPT"]


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


class GPT(GenerationMixin, Module):
    """The GPT language model: ``GPT(config)``; ``model(idx, targets=None)``."""

    presets = PRESETS

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT(config) needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        c = config
        # GPT-2's initialisation: N(0, 0.02) everywhere, zero biases, and the two residual
        # projections of each block scaled by 1/sqrt(2 n_layer) (2 residual adds per block).
        std, proj_std = 0.02, 0.02 / math.sqrt(2 * c.n_layer)
        self.wte = Embedding(c.vocab_size, c.n_embd, init_std=std)
        self.wpe = LearnedPositionalEmbedding(c.block_size, c.n_embd, init_std=std)
        self.drop = Dropout(c.dropout)
        self.blocks = ModuleList(
            TransformerBlock(c.n_embd, c.n_head, dropout=c.dropout, bias=c.bias, norm_first=True,
                             activation=c.activation, eps=c.layer_norm_eps, init_std=std,
                             proj_init_std=proj_std)
            for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.n_embd, c.layer_norm_eps, bias=c.bias)

    # ------------------------------------------------------------------ forward
    def forward(self, idx, targets=None, kv_caches=None):
        """idx (B, T) integer ids -> logits (B, T, V); with ``targets`` (B, T) -> (logits, loss).

        ``loss`` is the mean cross-entropy over the positions whose target is not -100.
        ``kv_caches`` (one ``KVCache`` per block, see ``new_kv_caches``) makes the positions of
        ``idx`` continue the cached ones: generation feeds one new token at a time.
        """
        logits = self._logits(idx, kv_caches)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, targets, ignore_index=-100)

    def _logits(self, idx, kv_caches=None, last_only=False):
        ids = self._check_ids(idx, kv_caches)
        offset = kv_caches[0].length if kv_caches else 0
        t = ids.shape[1]
        x = self.drop(self.wte(ids) + self.wpe(t, offset))
        caches = kv_caches or [None] * len(self.blocks)
        for block, cache in zip(self.blocks, caches):
            if self.config.checkpoint_blocks and cache is None:  # keep only the block's input
                x = checkpoint(block, x, None, True)
            else:
                x = block(x, is_causal=True, cache=cache)
        if last_only:  # generation needs only the last position's distribution
            x = x[:, -1:, :]
        return F.linear(self.ln_f(x), self.wte.weight)

    def _check_ids(self, idx, kv_caches):
        ids = idx.data if isinstance(idx, Tensor) else idx
        if not hasattr(ids, "dtype"):
            ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"GPT input ids must be integers, got dtype {ids.dtype}")
        if ids.ndim != 2:
            raise ValueError(f"GPT input ids must have shape (B, T), got {tuple(ids.shape)} "
                             "(add a batch axis: idx[None])")
        c = self.config
        offset = kv_caches[0].length if kv_caches else 0
        if kv_caches is not None and len(kv_caches) != len(self.blocks):
            raise ValueError(f"kv_caches has {len(kv_caches)} caches; this GPT has "
                             f"{len(self.blocks)} blocks (use model.new_kv_caches())")
        if offset + ids.shape[1] > c.block_size:
            raise ValueError(f"sequence of length {offset + ids.shape[1]} (input T={ids.shape[1]}"
                             f"{f', after {offset} cached positions' if offset else ''}) is longer "
                             f"than block_size={c.block_size}; crop it to the last {c.block_size} "
                             "tokens")
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= c.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is outside the vocabulary [0, {c.vocab_size}) "
                                 "of this GPT (vocab_size in its config)")
        return ids

    # ------------------------------------------------------------------ generation hooks
    @property
    def block_size(self) -> int:
        return self.config.block_size

    def next_token_logits(self, ids, kv_caches=None):
        """Logits (N, V) of the last position of ``ids`` (N, T), which continue ``kv_caches``."""
        return self._logits(ids, kv_caches, last_only=True)[:, -1, :]

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

    # ------------------------------------------------------------------ Hugging Face GPT-2 files
    @classmethod
    def from_pretrained(cls, path, dtype="float32") -> GPT:
        """Load a Hugging Face GPT-2 directory (``config.json`` + ``model.safetensors``)."""
        from tinyllm.models.hf_gpt2 import load_gpt2  # noqa: PLC0415

        return load_gpt2(cls, path, dtype=dtype)

    def save_pretrained(self, path) -> None:
        """Write a Hugging Face GPT-2 directory that ``transformers`` and ``from_pretrained`` read."""
        from tinyllm.models.hf_gpt2 import save_gpt2  # noqa: PLC0415

        save_gpt2(self, path)

    def extra_repr(self) -> str:
        c = self.config
        return (f"vocab_size={c.vocab_size}, block_size={c.block_size}, n_layer={c.n_layer}, "
                f"n_head={c.n_head}, n_embd={c.n_embd}")
