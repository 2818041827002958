"""BERT (and RoBERTa): a bidirectional Transformer encoder trained by masked-language modelling.

    input_ids (B, T) --word + position + token-type embeddings, LayerNorm, dropout--> (B, T, H)
      --> num_hidden_layers post-LN Transformer blocks (padding masked out) --> (B, T, H)
      --> pooler: tanh(dense(h[:, 0])) on the [CLS] position --> (B, H)

``BertForPreTraining`` adds the two pre-training heads: masked-LM (a transform, then a decoder
tied to the word embeddings) and next-sentence prediction (a Linear on the pooled output).
RoBERTa is the same network with another recipe: ``roberta_config(...)`` (one token type, no
NSP, positions counted from ``pad_token_id + 1``) and ``BertForMaskedLM``.

Weights from Hugging Face: ``BertModel.from_pretrained(dir)`` (see ``tinyllm.models.hf_bert``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from tinyllm.nn.module import Module, ModuleList, Parameter
from tinyllm.nn.transformer import ACTIVATIONS, TransformerBlock
from tinyllm.tensor import Tensor, operand_data

__all__ = ["BertConfig", "roberta_config", "BertEmbeddings", "BertModel", "MLMHead",
           "BertForPreTraining", "BertForMaskedLM", "BertPreTrainingOutput", "pretraining_loss"]

IGNORE_INDEX = -100
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "gelu_tanh": "gelu_tanh", "relu": "relu"}


@dataclass
class BertConfig:
    """The hyper-parameters, with Hugging Face's field names (``config.json`` reads directly).

    ``position_offset`` = 0 numbers positions 0..T-1 (BERT). RoBERTa uses ``pad_token_id + 1``:
    real tokens are numbered from there and padding gets position ``pad_token_id``, exactly
    HF's ``create_position_ids_from_input_ids``.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_offset: int = 0
    initializer_range: float = 0.02
    model_type: str = "bert"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in _HF_ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; choose from "
                             f"{sorted(_HF_ACTIVATIONS)}")
        if self.position_offset >= self.max_position_embeddings:
            raise ValueError(f"position_offset={self.position_offset} leaves no positions in "
                             f"max_position_embeddings={self.max_position_embeddings}")

    @property
    def activation(self) -> str:
        """tinyllm's name of ``hidden_act`` (``nn.transformer.ACTIVATIONS``)."""
        return _HF_ACTIVATIONS[self.hidden_act]

    @classmethod
    def from_dict(cls, d: dict) -> BertConfig:
        """Build from a dict such as HF's ``config.json``; unknown keys are ignored.

        A RoBERTa config (``model_type: "roberta"``) without ``position_offset`` gets
        ``pad_token_id + 1``, as HF RoBERTa numbers its positions."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if kwargs.get("model_type") == "roberta" and "position_offset" not in kwargs:
            kwargs["position_offset"] = int(kwargs.get("pad_token_id", 1)) + 1
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path) -> BertConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no BERT config at {path}: expected a Hugging Face "
                                    "config.json") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(d).__name__}")
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def roberta_config(vocab_size: int = 50265, **kwargs) -> BertConfig:
    """A RoBERTa configuration: one token type, ``pad_token_id`` 1, positions offset by 2.

    Defaults are roberta-base's (514 positions = 512 usable + the offset, eps 1e-5); any
    BertConfig field may be overridden. Pair it with ``BertForMaskedLM`` (RoBERTa has no NSP)."""
    d = dict(vocab_size=vocab_size, max_position_embeddings=514, type_vocab_size=1,
             layer_norm_eps=1e-5, pad_token_id=1, model_type="roberta")
    d.update(kwargs)
    d.setdefault("position_offset", d["pad_token_id"] + 1)
    return BertConfig(**d)


# ------------------------------------------------------------------------------ inputs
def _ids_array(x, name: str, like_shape=None, device=None):
    """A backend integer array from a NumPy array, list or Tensor, checked. Host ids stay on
    the host (checked there, moved by the embedding); a tensor must be on ``device``."""
    a = operand_data(x, device, name) if isinstance(x, Tensor) else backend.as_array(
        x, device=backend.get_device(x))
    if backend.is_float(a.dtype) or a.dtype == bool and name == "input_ids":
        raise TypeError(f"{name} must hold integers, got {a.dtype}")
    if like_shape is None and a.ndim != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(a.shape)} "
                         "(wrap a single sequence as [ids])")
    if like_shape is not None and tuple(a.shape) != tuple(like_shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)} but input_ids has shape "
                         f"{tuple(like_shape)}; they must match")
    return a


def _check_range(a, n: int, name: str, what: str):
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n):
        bad = int(a.max()) if int(a.max()) >= n else int(a.min())
        raise IndexError(f"{name} holds {bad}, outside [0, {n}) ({what})")


class BertEmbeddings(Module):
    """word + position + token-type embeddings, LayerNorm, dropout: ids (B, T) -> (B, T, H)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        h, std = config.hidden_size, config.initializer_range
        self.word_embeddings = Embedding(config.vocab_size, h, std)
        self.position_embeddings = Embedding(config.max_position_embeddings, h, std)
        self.token_type_embeddings = Embedding(config.type_vocab_size, h, std)
        self.ln = LayerNorm(h, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def position_ids(self, ids):
        """(B, T) position ids: 0..T-1, or RoBERTa's padding-aware numbering (position_offset)."""
        xp = backend.get_array_module(ids)
        b, t = ids.shape
        off = self.config.position_offset
        if off == 0:
            return xp.broadcast_to(xp.arange(t), (b, t))
        real = (ids != self.config.pad_token_id).astype(ids.dtype)
        return xp.cumsum(real, axis=1) * real + (off - 1)

    def forward(self, ids, token_type_ids):
        c = self.config
        t = ids.shape[1]
        if t + c.position_offset > c.max_position_embeddings:
            raise ValueError(f"sequence length {t} is longer than this model's "
                             f"{c.max_position_embeddings - c.position_offset} positions "
                             "(max_position_embeddings); truncate the input")
        x = self.word_embeddings(ids) + self.position_embeddings(self.position_ids(ids))
        x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.ln(x))


class BertModel(Module):
    """``BertModel(config)``: the encoder. ``model(input_ids, attention_mask=None,
    token_type_ids=None, output_hidden_states=False)`` -> last hidden state (B, T, H), or
    ``(last_hidden_state, hidden_states)`` with the embeddings output and every layer's output.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        h, std = config.hidden_size, config.initializer_range
        self.embeddings = BertEmbeddings(config)
        self.layers = ModuleList()
        for _ in range(config.num_hidden_layers):
            block = TransformerBlock(h, config.num_attention_heads, config.intermediate_size,
                                     config.hidden_dropout_prob, bias=True, norm_first=False,
                                     activation=config.activation, eps=config.layer_norm_eps,
                                     init_std=std)
            # BERT drops attention probabilities with their own rate; the block's other dropouts
            # (after the attention output projection and after the MLP) use hidden_dropout_prob.
            block.attn.dropout_p = config.attention_probs_dropout_prob
            self.layers.append(block)
        self.pooler = Linear(h, h, init_std=std)
        assert config.activation in ACTIVATIONS

    def check_inputs(self, input_ids, attention_mask=None, token_type_ids=None):
        """Backend arrays (ids, bool mask (B,1,1,T) or None, token types), with clear errors."""
        c, dev = self.config, self.embeddings.word_embeddings.weight.device
        ids = _ids_array(input_ids, "input_ids", device=dev)
        _check_range(ids, c.vocab_size, "input_ids", f"the vocabulary size is {c.vocab_size}")
        if token_type_ids is None:
            tt = backend.get_array_module(ids).zeros(ids.shape, dtype=ids.dtype)
        else:
            tt = _ids_array(token_type_ids, "token_type_ids", ids.shape, device=dev)
            _check_range(tt, c.type_vocab_size, "token_type_ids",
                         f"type_vocab_size is {c.type_vocab_size}")
        mask = None
        if attention_mask is not None:
            m = _ids_array(attention_mask, "attention_mask", ids.shape, device=dev)
            mask = (m != 0)[:, None, None, :]
        return ids, mask, tt

    def forward(self, input_ids, attention_mask=None, token_type_ids=None,
                output_hidden_states: bool = False):
        ids, mask, tt = self.check_inputs(input_ids, attention_mask, token_type_ids)
        x = self.embeddings(ids, tt)
        hidden = [x]
        for block in self.layers:
            x = block(x, mask=mask)
            hidden.append(x)
        return (x, hidden) if output_hidden_states else x

    def pooler_output(self, last_hidden_state):
        """tanh(dense(h[:, 0])): the [CLS] vector, (B, T, H) -> (B, H)."""
        return F.tanh(self.pooler(last_hidden_state[:, 0]))

    pool = pooler_output

    @classmethod
    def from_pretrained(cls, directory, strict: bool = True):
        """Read a Hugging Face BERT/RoBERTa folder (config.json + model.safetensors)."""
        from tinyllm.models.hf_bert import load_pretrained

        return load_pretrained(cls, directory, strict=strict)

    def save_pretrained(self, directory) -> None:
        """Write config.json and model.safetensors with Hugging Face names."""
        from tinyllm.models.hf_bert import save_pretrained

        save_pretrained(self, directory)


# ------------------------------------------------------------------------------ heads
class MLMHead(Module):
    """Masked-LM head: dense -> activation -> LayerNorm, then the decoder tied to the word
    embeddings (V, H) plus its own bias (V,). (B, T, H) -> (B, T, V)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.activation = config.activation
        self.dense = Linear(config.hidden_size, config.hidden_size,
                            init_std=config.initializer_range)
        self.ln = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.bias = Parameter(backend.np.zeros(config.vocab_size, dtype="float32"))

    def forward(self, hidden, decoder_weight):
        """``hidden`` (B, T, H), ``decoder_weight`` the word-embedding table (V, H) -> logits."""
        # BEGIN SOLUTION
        h = ACTIVATIONS[self.activation](self.dense(hidden))
        h = self.ln(h)
        return F.linear(h, decoder_weight, self.bias)
        # END SOLUTION


def pretraining_loss(prediction_logits, labels=None, seq_relationship_logits=None,
                     next_sentence_label=None):
    """MLM cross-entropy over positions whose label != -100, plus NSP cross-entropy.

    ``prediction_logits`` (B, T, V) with ``labels`` (B, T) int (-100 = not predicted);
    ``seq_relationship_logits`` (B, 2) with ``next_sentence_label`` (B,) in {0, 1} (1 = random
    sentence B). Each term counts when its labels are given; None when neither is.
    """
    loss = None
    # BEGIN SOLUTION
    if labels is not None:
        loss = F.cross_entropy(prediction_logits, labels, ignore_index=IGNORE_INDEX)
    if next_sentence_label is not None:
        nsp = F.cross_entropy(seq_relationship_logits, next_sentence_label)
        loss = nsp if loss is None else loss + nsp
    # END SOLUTION
    return loss


@dataclass
class BertPreTrainingOutput:
    prediction_logits: Tensor
    seq_relationship_logits: Tensor | None = None
    loss: Tensor | None = None
    last_hidden_state: Tensor | None = None
    hidden_states: list | None = None


def _labels(x, name, dev):
    if x is None:
        return None
    return operand_data(x, dev, name) if isinstance(x, Tensor) else backend.as_array(
        x, device=backend.get_device(x))  # host labels: checked by cross_entropy, then moved


class BertForPreTraining(Module):
    """BERT with its masked-LM and next-sentence-prediction heads.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None,
    next_sentence_label=None, output_hidden_states=False)`` -> ``BertPreTrainingOutput``.
    """

    has_nsp = True

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MLMHead(config)
        if self.has_nsp:
            self.nsp = Linear(config.hidden_size, 2, init_std=config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, output_hidden_states: bool = False):
        h, hidden = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
        logits = self.mlm(h, self.bert.embeddings.word_embeddings.weight)
        nsp_logits = None
        if self.has_nsp:
            nsp_logits = self.nsp(self.bert.pooler_output(h))
        elif next_sentence_label is not None:
            raise ValueError(f"{type(self).__name__} has no next-sentence head; "
                             "next_sentence_label cannot be used")
        dev = logits.device
        loss = pretraining_loss(logits, _labels(labels, "labels", dev), nsp_logits,
                                _labels(next_sentence_label, "next_sentence_label", dev))
        return BertPreTrainingOutput(logits, nsp_logits, loss, h,
                                     hidden if output_hidden_states else None)

    @classmethod
    def from_pretrained(cls, directory, strict: bool = True):
        from tinyllm.models.hf_bert import load_pretrained

        return load_pretrained(cls, directory, strict=strict)

    def save_pretrained(self, directory) -> None:
        from tinyllm.models.hf_bert import save_pretrained

        save_pretrained(self, directory)


class BertForMaskedLM(BertForPreTraining):
    """Masked-LM only (RoBERTa, or BERT without NSP): ``seq_relationship_logits`` is None."""

    has_nsp = False
