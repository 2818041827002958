"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

    src (B, S) -> embed * sqrt(C) + sinusoid -> N encoder blocks (self-attention, source padding
    mask) -> memory (B, S, C)
    tgt_in (B, T) -> embed * sqrt(C) + sinusoid -> N decoder blocks (causal self-attention,
    cross-attention to memory, source padding mask) -> logits (B, T, V)

The blocks are ``nn.TransformerBlock``; the decoder's cross-attention is ``CrossAttention``
below, which can reuse the encoder output's keys and values across decoding steps
(``Seq2SeqCache``). Post-LN as in the paper by default (``norm_first=False``), pre-LN on request;
pre-LN needs a final LayerNorm after each stack (``final_norm`` defaults to ``norm_first``;
``torch.nn.Transformer`` always has them). Decoding (greedy, beam search) lives in
``tinyllm.models.seq2seq_decoding``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.backend import get_array_module
from tinyllm.nn.attention import KVCache, MultiHeadAttention, merge_heads, split_heads
from tinyllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from tinyllm.nn.module import Module, ModuleList
from tinyllm.nn.positional import SinusoidalPositionalEncoding
from tinyllm.nn.transformer import ACTIVATIONS, TransformerBlock
from tinyllm.tensor import Tensor, as_tensor, operand_data


@dataclass
class TransformerConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 128
    n_head: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    d_ff: int | None = None  # None: 4 * d_model
    dropout: float = 0.1
    max_len: int = 256
    norm_first: bool = False  # the paper is post-LN
    share_embeddings: bool = False  # one table for source and target (needs equal vocabularies)
    tie_output: bool = True  # output projection = target embedding (transposed)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    activation: str = "relu"
    final_norm: bool | None = None  # LayerNorm after each stack; None: same as norm_first
    eps: float = 1e-5

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"TransformerConfig: {msg}")

        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_head", "max_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                bad(f"{name} must be a positive integer, got {v!r}")
        for name in ("num_encoder_layers", "num_decoder_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                bad(f"{name} must be a non-negative integer, got {v!r}")
        if self.d_model % self.n_head:
            bad(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if self.d_model % 2:
            bad(f"d_model={self.d_model} must be even (the sinusoidal table pairs sin and cos)")
        if self.d_ff is not None and (not isinstance(self.d_ff, int) or self.d_ff < 1):
            bad(f"d_ff must be a positive integer or None, got {self.d_ff!r}")
        if not 0.0 <= self.dropout < 1.0:
            bad(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ACTIVATIONS:
            bad(f"unknown activation {self.activation!r}; choose from {sorted(ACTIVATIONS)}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            bad(f"share_embeddings=True needs src_vocab_size == tgt_vocab_size, got "
                f"{self.src_vocab_size} and {self.tgt_vocab_size}")
        for name in ("pad_id", "bos_id", "eos_id"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < self.tgt_vocab_size:
                bad(f"{name}={v!r} is outside the target vocabulary [0, {self.tgt_vocab_size})")
        if not self.pad_id < self.src_vocab_size:
            bad(f"pad_id={self.pad_id} is outside the source vocabulary [0, {self.src_vocab_size})")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            bad(f"pad_id, bos_id and eos_id must differ, got {self.pad_id}, {self.bos_id}, "
                f"{self.eos_id}")

    def to_dict(self) -> dict:
        return asdict(self)


def _ids(x, device):
    """Token ids as a backend integer array (from a Tensor on ``device``, an array or lists);
    host ids stay on the host, checked there and moved by the embedding."""
    a = operand_data(x, device, "token ids") if isinstance(x, Tensor) else backend.as_array(
        x, device=backend.get_device(x))
    if a.ndim != 2 or backend.is_float(a.dtype) or a.dtype == bool:
        raise ValueError(f"token ids must be an integer array (B, L), got dtype {a.dtype} and "
                         f"shape {tuple(a.shape)}")
    return a


# ---------------------------------------------------------------------------- the masks
def make_masks(src, tgt_in, pad_id: int):
    """Boolean attention masks (True = may attend) from padded ids src (B, S), tgt_in (B, T).

    src_mask (B, 1, 1, S): the source positions that are not padding, for the encoder's
    self-attention and the decoder's cross-attention. tgt_mask (B, 1, T, T): the decoder's
    self-attention, causal (position i sees j <= i) and not at padding.
    """
    src = src.data if isinstance(src, Tensor) else src
    tgt_in = tgt_in.data if isinstance(tgt_in, Tensor) else tgt_in
    xp = get_array_module(src)
    # BEGIN SOLUTION
    src_mask = (src != pad_id)[:, None, None, :]
    t = tgt_in.shape[1]
    causal = xp.tril(xp.ones((t, t), dtype=bool))
    tgt_mask = causal[None, None] & (tgt_in != pad_id)[:, None, None, :]
    # END SOLUTION
    return src_mask, tgt_mask


def _as_src_mask(mask, device):
    """A (B, S) or (B, 1, 1, S) boolean source mask as (B, 1, 1, S)."""
    m = operand_data(mask, device, "src_mask")
    if m.dtype != bool or m.ndim not in (2, 4):
        raise ValueError(f"src_mask must be boolean (B, S) or (B, 1, 1, S), True at real tokens; "
                         f"got dtype {m.dtype}, shape {tuple(m.shape)}")
    return m[:, None, None, :] if m.ndim == 2 else m


# ---------------------------------------------------------------------------- cross-attention
def memory_keys_values(attn: MultiHeadAttention, memory):
    """The keys and values of the encoder output for one cross-attention layer.

    memory (B, S, C) -> k, v, each (B, n_head, S, D), through ``attn.kv`` (C -> 2C: keys first).
    """
    c, h = attn.d_model, attn.n_head
    # BEGIN SOLUTION
    kv = attn.kv(memory)
    return split_heads(kv[..., :c], h), split_heads(kv[..., c:], h)
    # END SOLUTION


def cross_attention(attn: MultiHeadAttention, x, k, v, mask=None):
    """Decoder positions x (B, T, C) attend to the encoder's keys and values k, v (B, H, S, D).

    The queries are ``attn.q(x)`` split into heads; ``mask`` (B, 1, 1, S), True = attend, hides
    the source padding. Returns (out (B, T, C) after ``attn.proj``, weights (B, H, T, S)).
    """
    p = attn.dropout_p if attn.training else 0.0
    # BEGIN SOLUTION
    q = split_heads(attn.q(x), attn.n_head)
    out, weights = F.scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=p,
                                                  return_weights=True)
    y = attn.proj(merge_heads(out))
    # END SOLUTION
    return attn.resid_dropout(y), weights


class CrossAttention(MultiHeadAttention):
    """``MultiHeadAttention(cross=True)`` whose ``memory`` may also be precomputed keys and values
    ``(k, v)`` from ``memory_keys_values`` (the encoder output does not change while decoding)."""

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__(d_model, n_head, dropout, bias, cross=True)

    def forward(self, x, memory=None, mask=None, is_causal: bool = False, cache=None,
                return_weights: bool = False):
        if memory is None:
            raise ValueError("cross-attention needs memory=(B, S, C), the encoder output")
        if is_causal or cache is not None:
            raise ValueError("cross-attention is neither causal nor cached per step: the encoder "
                             "output's keys and values are computed once (Seq2SeqCache)")
        k, v = memory if isinstance(memory, tuple) else memory_keys_values(self, memory)
        y, weights = cross_attention(self, x, k, v, mask)
        return (y, weights) if return_weights else y


class Seq2SeqCache:
    """Decoder state for incremental decoding: one ``KVCache`` per decoder layer for the
    self-attention, and each layer's cross-attention keys/values of the encoder output
    (computed on the first ``decode`` call that gets this cache)."""

    def __init__(self, num_layers: int, max_len: int):
        self.self_attn = [KVCache(max_len) for _ in range(num_layers)]
        self.cross = None  # list of (k, v) Tensors (B, H, S, D), one per layer

    @property
    def length(self) -> int:
        return self.self_attn[0].length if self.self_attn else 0

    def reorder(self, index) -> None:
        """Keep the batch rows ``index`` (beam search)."""
        for c in self.self_attn:
            c.reorder(index)
        if self.cross is not None:
            self.cross = [(as_tensor(k.data[index]), as_tensor(v.data[index]))
                          for k, v in self.cross]


# ---------------------------------------------------------------------------- the model
class Transformer(Module):
    """Encoder-decoder Transformer. ``forward(src, tgt_in, targets=None)`` -> logits (B, T, V),
    or (logits, loss) with ``targets`` (B, T), whose ``pad_id`` positions are ignored."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = cfg = config
        c = cfg.d_model
        std = c ** -0.5  # with the sqrt(C) scale, embeddings start at unit variance
        self.src_embed = Embedding(cfg.src_vocab_size, c, init_std=std)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else Embedding(
            cfg.tgt_vocab_size, c, init_std=std)
        self.pos = SinusoidalPositionalEncoding(cfg.max_len, c)
        self.drop = Dropout(cfg.dropout)
        block = dict(d_model=c, n_head=cfg.n_head, d_ff=cfg.d_ff, dropout=cfg.dropout,
                     norm_first=cfg.norm_first, activation=cfg.activation, eps=cfg.eps)
        self.encoder = ModuleList([TransformerBlock(**block)
                                   for _ in range(cfg.num_encoder_layers)])
        self.decoder = ModuleList()
        for _ in range(cfg.num_decoder_layers):
            layer = TransformerBlock(**block, cross_attention=True)
            layer.cross_attn = CrossAttention(c, cfg.n_head, cfg.dropout)
            self.decoder.append(layer)
        final_norm = cfg.norm_first if cfg.final_norm is None else cfg.final_norm
        self.encoder_norm = LayerNorm(c, cfg.eps) if final_norm else None
        self.decoder_norm = LayerNorm(c, cfg.eps) if final_norm else None
        self.lm_head = None if cfg.tie_output else Linear(c, cfg.tgt_vocab_size, bias=False)

    @property
    def device(self) -> str:
        return self.src_embed.weight.device

    def embed(self, ids, table: Embedding, offset: int = 0):
        """Token ids (B, L) -> table(ids) * sqrt(C) + positions offset..offset+L-1, dropout."""
        x = table(ids) * math.sqrt(self.config.d_model)
        return self.drop(x + self.pos(ids.shape[1], offset))

    def encode(self, src, src_mask=None):
        """src ids (B, S) -> memory (B, S, C). ``src_mask`` (B, S) or (B, 1, 1, S), True at real
        tokens; default: the positions whose id is not ``pad_id``."""
        src = _ids(src, self.device)
        if src_mask is None:
            src_mask = (src != self.config.pad_id)[:, None, None, :]
        src_mask = _as_src_mask(src_mask, self.device)
        x = self.embed(src, self.src_embed)
        for layer in self.encoder:
            x = layer(x, mask=src_mask)
        return self.encoder_norm(x) if self.encoder_norm is not None else x

    def decode(self, tgt_in, memory, src_mask=None, cache: Seq2SeqCache | None = None,
               tgt_mask=None):
        """tgt_in ids (B, T), memory (B, S, C) -> logits (B, T, V).

        ``src_mask`` (B, S) or (B, 1, 1, S) hides source padding from the cross-attention (pass
        the one given to ``encode``; None attends everywhere). Self-attention is causal, or
        ``tgt_mask`` (B, 1, T, T) when given. With ``cache`` (``new_cache``) tgt_in holds only the
        new positions, which follow the ``cache.length`` already decoded.
        """
        tgt_in = _ids(tgt_in, self.device)
        if src_mask is not None:
            src_mask = _as_src_mask(src_mask, self.device)
        offset = 0 if cache is None else cache.length
        x = self.embed(tgt_in, self.tgt_embed, offset)
        if cache is not None and cache.cross is None:
            cache.cross = [memory_keys_values(layer.cross_attn, memory) for layer in self.decoder]
        for i, layer in enumerate(self.decoder):
            mem = memory if cache is None else cache.cross[i]
            layer_cache = None if cache is None else cache.self_attn[i]
            causal = tgt_mask is None
            x = layer(x, mask=tgt_mask, is_causal=causal, memory=mem, memory_mask=src_mask,
                      cache=layer_cache)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if self.lm_head is not None:
            return self.lm_head(x)
        return F.linear(x, self.tgt_embed.weight)

    def forward(self, src, tgt_in, targets=None):
        src, tgt_in = _ids(src, self.device), _ids(tgt_in, self.device)
        if src.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"src {tuple(src.shape)} and tgt_in {tuple(tgt_in.shape)} must have "
                             "the same batch size")
        src_mask, tgt_mask = make_masks(src, tgt_in, self.config.pad_id)
        memory = self.encode(src, src_mask)
        logits = self.decode(tgt_in, memory, src_mask, tgt_mask=tgt_mask)
        if targets is None:
            return logits
        t = _ids(targets, self.device)
        if t.shape != tgt_in.shape:
            raise ValueError(f"targets {tuple(t.shape)} must have the shape of tgt_in "
                             f"{tuple(tgt_in.shape)}")
        xp = get_array_module(t)
        t = xp.where(t == self.config.pad_id, -100, t)
        return logits, F.cross_entropy(logits, t, ignore_index=-100)

    def new_cache(self, max_len: int | None = None) -> Seq2SeqCache:
        """An empty decoder cache holding up to ``max_len`` target positions (default: max_len)."""
        return Seq2SeqCache(len(self.decoder), max_len or self.config.max_len)

    def generate(self, src, max_new_tokens: int, num_beams: int = 1, length_penalty: float = 1.0,
                 use_cache: bool = True, src_mask=None, do_sample: bool = False,
                 temperature: float = 1.0, top_k=None, top_p=None, seed=None):
        """Decode each source greedily (``num_beams=1``), by sampling (``do_sample=True``, with
        ``temperature``, ``top_k``, ``top_p`` and ``seed`` as in ``GPT.generate``) or with beam
        search. Returns a NumPy int64 array (B, L <= max_new_tokens) of the generated ids,
        without ``bos``, each row ending at its ``eos`` and padded with ``pad_id`` after it.
        """
        from tinyllm.models.seq2seq_decoding import beam_search, sample_decode

        if do_sample and num_beams > 1:
            raise ValueError("generate: beam search with do_sample=True (beam sampling) is not "
                             "supported; use num_beams=1 to sample or do_sample=False for beams")
        if num_beams == 1:
            return sample_decode(self, src, max_new_tokens, use_cache=use_cache, src_mask=src_mask,
                                 do_sample=do_sample, temperature=temperature, top_k=top_k,
                                 top_p=top_p, seed=seed)
        return beam_search(self, src, max_new_tokens, num_beams=num_beams,
                           length_penalty=length_penalty, use_cache=use_cache, src_mask=src_mask)

    def extra_repr(self):
        c = self.config
        return (f"d_model={c.d_model}, n_head={c.n_head}, layers={c.num_encoder_layers}+"
                f"{c.num_decoder_layers}, norm_first={c.norm_first}")
