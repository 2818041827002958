"""Sequence classification: a pre-trained body, a pooled vector, a Linear head.

    hidden = body(input_ids, attention_mask)           (B, T, H)
    pooled = pool(hidden)                              (B, H)   [CLS], mean, last real token,
                                                                or BERT's pooler
    logits = classifier(dropout(pooled))               (B, num_labels)
    loss   = cross_entropy(logits, labels)

An encoder (BERT) sees the whole sentence from every position, so its first ([CLS]) vector can
summarise it. A causal decoder (GPT) only sees the past, so the last real token is the one that
has read the whole sentence. ``freeze_body=True`` trains the head alone (a linear probe).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.models.pooling import mean_pool
from tinyllm.nn.layers import Dropout, Linear
from tinyllm.nn.module import Module
from tinyllm.tensor import Tensor

__all__ = ["SequenceClassifier", "SequenceClassifierOutput", "pool_hidden_states",
           "BertForSequenceClassification", "GPTForSequenceClassification", "POOLINGS"]

POOLINGS = ("cls", "mean", "last", "pooler")


def pool_hidden_states(hidden, attention_mask=None, pooling: str = "cls") -> Tensor:
    """(B, T, H) -> (B, H): ``"cls"`` position 0, ``"mean"`` the mean over real tokens,
    ``"last"`` the last real token of each row (attention_mask (B, T), right padding; without a
    mask, position T - 1)."""
    if pooling not in ("cls", "mean", "last"):
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    m = None
    if attention_mask is not None:
        m = attention_mask.data if isinstance(attention_mask, Tensor) else \
            backend.as_array(attention_mask, device=hidden.device)
        if tuple(m.shape) != tuple(hidden.shape[:2]):
            raise ValueError(f"attention_mask has shape {tuple(m.shape)}; the hidden states "
                             f"{tuple(hidden.shape)} need (B, T) = {tuple(hidden.shape[:2])}")
    # BEGIN SOLUTION
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        return mean_pool(hidden, m)
    xp = backend.get_array_module(hidden.data)
    b, t = hidden.shape[0], hidden.shape[1]
    last = xp.full((b,), t - 1) if m is None else xp.maximum((m != 0).sum(axis=1) - 1, 0)
    return hidden[xp.arange(b), last]
    # END SOLUTION


@dataclass
class SequenceClassifierOutput:
    logits: Tensor
    loss: Tensor | None = None


def _default_features(body):
    """How to get (B, T, H) hidden states out of ``body``: its ``hidden_states``/``features``
    method if it has one, else calling it (with attention_mask when it accepts one)."""
    for name in ("features", "hidden_states"):
        fn = getattr(body, name, None)
        if callable(fn):
            return lambda ids, mask: fn(ids, attention_mask=mask)
    try:
        takes_mask = "attention_mask" in inspect.signature(body.forward).parameters
    except (TypeError, ValueError):
        takes_mask = False
    if takes_mask:
        return lambda ids, mask: body(ids, attention_mask=mask)
    return lambda ids, mask: body(ids)


class SequenceClassifier(Module):
    """``SequenceClassifier(body, hidden_size, num_labels, pooling="cls", dropout=0.1,
    freeze_body=False, features=None)``.

    ``forward(input_ids, attention_mask=None, labels=None)`` -> ``SequenceClassifierOutput``
    with ``logits`` (B, num_labels) and ``loss`` (mean cross-entropy, when labels are given).
    ``features(input_ids, attention_mask) -> (B, T, H)`` overrides how the body is called.
    ``pooling="pooler"`` uses the body's own ``pooler_output`` (BERT's tanh dense on [CLS]).
    """

    def __init__(self, body: Module, hidden_size: int, num_labels: int, pooling: str = "cls",
                 dropout: float = 0.1, freeze_body: bool = False, features=None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        if pooling == "pooler" and not callable(getattr(body, "pooler_output", None)):
            raise ValueError(f"pooling='pooler' needs a body with pooler_output() (BERT); "
                             f"{type(body).__name__} has none")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.body = body
        self.hidden_size, self.num_labels, self.pooling = hidden_size, num_labels, pooling
        self.dropout = Dropout(dropout)
        self.classifier = Linear(hidden_size, num_labels, init_std=0.02)
        self._features = features or _default_features(body)
        if freeze_body:
            self.freeze_body()

    def freeze_body(self, frozen: bool = True):
        """Stop (or restart) training the body: requires_grad False on all its parameters."""
        self.body.requires_grad_(not frozen)
        return self

    def head_parameters(self):
        return list(self.classifier.parameters())

    def forward(self, input_ids, attention_mask=None, labels=None) -> SequenceClassifierOutput:
        hidden = self._features(input_ids, attention_mask)
        if hidden.ndim != 3 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"the body gave features of shape {tuple(hidden.shape)}; expected "
                             f"(B, T, {self.hidden_size}) (check hidden_size, or pass features=)")
        loss = None
        if labels is not None:
            labels = labels.data if isinstance(labels, Tensor) else \
                backend.as_array(labels, device=hidden.device)
            if tuple(labels.shape) != (hidden.shape[0],):
                raise ValueError(f"labels must have shape ({hidden.shape[0]},), one class id per "
                                 f"row, got {tuple(labels.shape)}")
        # BEGIN SOLUTION
        if self.pooling == "pooler":
            pooled = self.body.pooler_output(hidden)
        else:
            pooled = pool_hidden_states(hidden, attention_mask, self.pooling)
        logits = self.classifier(self.dropout(pooled))
        if labels is not None:
            loss = F.cross_entropy(logits, labels)
        # END SOLUTION
        return SequenceClassifierOutput(logits, loss)


class BertForSequenceClassification(SequenceClassifier):
    """A BertModel with a classifier on BERT's pooler output (HF's recipe) or another pooling."""

    def __init__(self, config=None, num_labels: int = 2, pooling: str = "pooler",
                 dropout: float | None = None, freeze_body: bool = False, bert=None):
        from tinyllm.models.bert import BertModel

        body = bert if bert is not None else BertModel(config)
        p = body.config.hidden_dropout_prob if dropout is None else dropout
        super().__init__(body, body.config.hidden_size, num_labels, pooling, p, freeze_body,
                         features=lambda ids, mask: body(ids, attention_mask=mask))

    @property
    def bert(self):
        return self.body


class GPTForSequenceClassification(SequenceClassifier):
    """A causal GPT body classified from its last real token (right padding). The features are
    ``gpt.hidden_states(ids, attention_mask=mask)``: the final hidden states, after ``ln_f``."""

    def __init__(self, gpt, hidden_size: int, num_labels: int = 2, pooling: str = "last",
                 dropout: float = 0.1, freeze_body: bool = False, features=None):
        if features is None and not callable(getattr(gpt, "hidden_states", None)):
            raise TypeError(f"{type(gpt).__name__} has no hidden_states(ids, attention_mask) "
                            "method (a tinyllm GPT has); pass features=lambda ids, mask: ...")
        super().__init__(gpt, hidden_size, num_labels, pooling, dropout, freeze_body, features)
