"""Llama: today's decoder-only language model (Touvron et al. 2023; Llama 2 and 3's shape).

    config = LlamaConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_kv_head=2,
                         n_embd=128, intermediate_size=384)
    model = Llama(config)
    logits, loss = model(idx, targets)          # idx, targets (B, T) integer arrays
    out = model.generate(idx, max_new_tokens=100, do_sample=True, top_k=40)
    model = Llama.from_pretrained("path/to/hf-llama-folder")

The token ids are embedded (``wte``) and nothing else: there is no position table. A stack of
pre-norm blocks (``tinyllm.nn.llama_layers.LlamaBlock``: RMSNorm, grouped-query attention with
rotary position embeddings, RMSNorm, SwiGLU) mixes the positions, each block rotating its queries
and keys by their positions' angles; a final RMSNorm (``norm_f``) and the LM head (``lm_head``,
or the token table again with ``tie_word_embeddings``) give the logits. No biases anywhere.

Shapes: ``B`` batch, ``T`` positions, ``C`` = n_embd, ``V`` = vocab_size, ``D`` = C / n_head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.backend import np
from tinyllm.ids import as_ids, as_mask, mask_positions
from tinyllm.models.generation import GenerationMixin
from tinyllm.models.hub import PretrainedMixin
from tinyllm.nn.attention import KVCache
from tinyllm.nn.layers import Embedding, Linear
from tinyllm.nn.llama_layers import LlamaBlock, RMSNorm, RotaryEmbedding
from tinyllm.nn.module import Module, ModuleList

__all__ = ["LlamaConfig", "Llama", "swiglu_hidden_size"]


def swiglu_hidden_size(n_embd: int, multiple_of: int = 32) -> int:
    """Llama's feed-forward width: 2/3 of GPT's 4C (three matrices instead of two hold the same
    parameters), rounded up to a multiple of ``multiple_of`` (Meta's code uses 256)."""
    return multiple_of * math.ceil(8 * n_embd / 3 / multiple_of)


@dataclass
class LlamaConfig:
    """Sizes of a Llama. ``block_size`` is the longest context (Hugging Face's
    ``max_position_embeddings``); ``n_kv_head`` the key/value heads (None: ``n_head``, multi-head
    attention; 1: multi-query); ``intermediate_size`` the SwiGLU width (None:
    ``swiglu_hidden_size(n_embd)``); ``rope_base`` is RoPE's base (``rope_theta``)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_kv_head: int | None = None
    intermediate_size: int | None = None
    rope_base: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    dropout: float = 0.0  # on the attention weights (Hugging Face's attention_dropout)
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = swiglu_hidden_size(self.n_embd)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_kv_head",
                     "intermediate_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"LlamaConfig: n_embd={self.n_embd} must be n_head={self.n_head} "
                             "times an even head size (RoPE rotates pairs of channels)")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"LlamaConfig: n_kv_head={self.n_kv_head} must divide "
                             f"n_head={self.n_head} (each key/value head serves a whole group)")
        for name in ("rope_base", "rms_norm_eps", "initializer_range"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise ValueError(f"LlamaConfig.{name} must be a positive number, got "
                                 f"{getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LlamaConfig.dropout must be in [0, 1), got {self.dropout!r}")
        self.tie_word_embeddings = bool(self.tie_word_embeddings)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


class Llama(PretrainedMixin, GenerationMixin, Module):
    """The Llama language model: ``Llama(config)``; ``model(idx, targets=None)``;
    ``Llama.from_pretrained(directory, dtype="float32")`` and ``save_pretrained(directory)``
    read and write Hugging Face Llama folders (``config.json`` + ``model.safetensors``)."""

    hf_format = ("tinyllm.models.hf_llama", "load_llama", "save_llama")

    def __init__(self, config: LlamaConfig):
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"Llama(config) needs a LlamaConfig, got {type(config).__name__}")
        self.config = c = config
        std = c.initializer_range  # Llama's initialisation: N(0, 0.02) for every matrix
        self.wte = Embedding(c.vocab_size, c.n_embd, init_std=std)
        self.rope = RotaryEmbedding(c.head_dim, c.block_size, c.rope_base)
        self.blocks = ModuleList(
            LlamaBlock(c.n_embd, c.n_head, c.n_kv_head, c.intermediate_size, c.rms_norm_eps,
                       c.dropout, std) for _ in range(c.n_layer))
        self.norm_f = RMSNorm(c.n_embd, c.rms_norm_eps)
        self.lm_head = None if c.tie_word_embeddings else Linear(c.n_embd, c.vocab_size,
                                                                  bias=False, init_std=std)

    # ------------------------------------------------------------------ forward
    def forward(self, idx, targets=None, kv_caches=None, attention_mask=None):
        """idx (B, T) integer ids -> logits (B, T, V); with ``targets`` (B, T) -> (logits, loss).

        ``loss`` is the mean cross-entropy over the positions whose target is not -100.
        ``kv_caches`` (one ``KVCache`` per block, see ``new_kv_caches``) makes the positions of
        ``idx`` continue the cached ones: their rotations start at the cached length.
        ``attention_mask`` (B, S), 1 at real tokens and 0 at padding, for the S = cached + T
        positions: padding is hidden from attention and each token's position counts only the
        real tokens before it, as transformers' generate numbers them (a left-padded row then
        computes what it would alone; padding itself gets position 1).
        """
        logits = self._logits(idx, kv_caches, attention_mask)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, targets, ignore_index=-100)

    def _logits(self, idx, kv_caches=None, attention_mask=None, last_only=False):
        ids = self._check_ids(idx, kv_caches)
        x = self.wte(ids)
        cos, sin, mask = self._rotations(ids, kv_caches, attention_mask, x.data)
        for block, cache in zip(self.blocks, kv_caches or [None] * len(self.blocks)):
            x = block(x, cos, sin, cache=cache, mask=mask)
        if last_only:  # generation needs only the last position's distribution
            x = x[:, -1:, :]
        x = self.norm_f(x)
        return F.linear(x, self.wte.weight) if self.lm_head is None else self.lm_head(x)

    def _rotations(self, ids, kv_caches, attention_mask, like):
        """(cos, sin, key mask) for the new positions: tables (T, D) for the positions
        offset .. offset + T - 1 and no mask, or with an attention mask (B, S) tables (B, T, D)
        for the positions cumsum(mask) - 1 and the mask as (B, 1, 1, S). One set for all layers."""
        b, t = ids.shape
        offset = kv_caches[0].length if kv_caches else 0
        if attention_mask is None:
            return (*self.rope.tables(offset, t, like), None)
        dev = backend.get_device(like)
        real = as_mask(attention_mask, "attention_mask", device=dev)
        if tuple(real.shape) != (b, offset + t):
            raise ValueError(f"attention_mask must have shape (B, cached + T) = {(b, offset + t)}"
                             f" (one entry per cached and new position), got {tuple(real.shape)}")
        real = backend.to_device(real, dev)
        pos = mask_positions(real, offset)
        return (*self.rope.rows(pos, like), real[:, None, None, :])

    def _check_ids(self, idx, kv_caches):
        """idx as integer ids (B, T) where they live (the embedding checks their range)."""
        ids = as_ids(idx, "idx", ndim=2, device=self.wte.weight.device)
        c = self.config
        if kv_caches is not None and len(kv_caches) != len(self.blocks):
            raise ValueError(f"kv_caches has {len(kv_caches)} caches; this Llama has "
                             f"{len(self.blocks)} blocks (use model.new_kv_caches())")
        offset = kv_caches[0].length if kv_caches else 0
        if offset + ids.shape[1] > c.block_size:
            raise ValueError(f"sequence of length {offset + ids.shape[1]} (input T={ids.shape[1]}"
                             f"{f', after {offset} cached positions' if offset else ''}) is longer "
                             f"than block_size={c.block_size}; crop it to the last {c.block_size} "
                             "tokens")
        return ids

    # ------------------------------------------------------------------ generation hooks
    @property
    def block_size(self) -> int:
        return self.config.block_size

    def next_token_logits(self, ids, kv_caches=None, attention_mask=None):
        """Logits (N, V) of the last position of ``ids`` (N, T), which continue ``kv_caches``
        (``attention_mask`` as in ``forward``)."""
        return self._logits(ids, kv_caches, attention_mask, last_only=True)[:, -1, :]

    def new_kv_caches(self) -> list:
        """One empty ``KVCache`` per block for up to ``block_size`` positions; each will hold
        (N, n_kv_head, positions, head_dim) keys and values, the shared heads only."""
        return [KVCache(self.config.block_size) for _ in self.blocks]

    def kv_cache_bytes_per_token(self, dtype="float32") -> int:
        """Bytes the caches hold per position: keys and values, n_kv_head heads, every layer."""
        c = self.config
        return 2 * c.n_layer * c.n_kv_head * c.head_dim * np.dtype(dtype).itemsize

    # ------------------------------------------------------------------ training helpers
    def configure_optimizers(self, weight_decay: float = 0.1, lr: float = 6e-4,
                             betas=(0.9, 0.95), eps: float = 1e-8):
        """AdamW with two groups: matrices decayed, RMSNorm weights not."""
        from tinyllm.optim import AdamW, decay_groups  # noqa: PLC0415  (loaded lazily)

        return AdamW(decay_groups(self.parameters(), weight_decay), lr=lr, betas=betas, eps=eps)

    def extra_repr(self) -> str:
        c = self.config
        return (f"vocab_size={c.vocab_size}, block_size={c.block_size}, n_layer={c.n_layer}, "
                f"n_head={c.n_head}, n_kv_head={c.n_kv_head}, n_embd={c.n_embd}")
