"""Sequence classification heads: pooling + Linear + cross-entropy (exercise 13.1) against NumPy,
overfitting a tiny labelled set, freezing the body, BERT and GPT bodies."""

from __future__ import annotations

import numpy as np
import pytest
from test_exercises_classification import LookupBody

import tinyllm as tl
from tinyllm import optim
from tinyllm.models.bert import BertConfig, BertModel
from tinyllm.models.classification import (
    BertForSequenceClassification,
    GPTForSequenceClassification,
    SequenceClassifier,
)


def tiny_bert(**kw):
    d = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0, initializer_range=0.1)
    d.update(kw)
    return BertConfig(**d)


# The classifier against NumPy and its fixed example are exercise 13.2's tests
# (test_exercises_classification.py); here, its gradient by finite differences.
def test_classifier_gradient_reaches_head_and_body(rng):
    body = LookupBody(7, 4)
    clf = SequenceClassifier(body, 4, 3, pooling="mean", dropout=0.0)
    ids = rng.integers(0, 7, size=(3, 5))
    mask = np.ones((3, 5), dtype=np.int64)
    mask[0, 3:] = 0
    out = clf(ids, mask, labels=np.array([0, 2, 1]))
    out.loss.backward()
    w = clf.classifier.weight
    assert w.grad is not None and np.abs(w.grad).sum() > 0
    g = body.emb.weight.grad
    assert g is not None and np.abs(g).sum() > 0
    # the numerical derivative with respect to one classifier weight
    eps, i = 1e-3, (1, 2)
    old = w.data[i]
    with tl.no_grad():
        w.data[i] = old + eps
        up = clf(ids, mask, labels=np.array([0, 2, 1])).loss.item()
        w.data[i] = old - eps
        down = clf(ids, mask, labels=np.array([0, 2, 1])).loss.item()
    w.data[i] = old
    assert np.isclose(w.grad[i], (up - down) / (2 * eps), rtol=1e-2, atol=1e-4)


# ------------------------------------------------------------------------------ training
def _toy_task(rng, n=12, t=8, vocab=30):
    """Label 1 iff token 5 occurs in the sentence (needs the whole sequence)."""
    ids = rng.integers(6, vocab, size=(n, t))
    lengths = rng.integers(3, t + 1, size=n)
    labels = np.arange(n) % 2
    for r in range(n):
        if labels[r]:
            ids[r, rng.integers(1, lengths[r])] = 5
        ids[r, lengths[r]:] = 0
    ids[:, 0] = 1  # [CLS]
    mask = (ids != 0).astype(np.int64)
    return ids, mask, labels


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_bert_classifier_overfits_tiny_set(rng, pooling):
    tl.manual_seed(0)
    ids, mask, labels = _toy_task(np.random.default_rng(0))
    clf = BertForSequenceClassification(tiny_bert(), num_labels=2, pooling=pooling, dropout=0.0)
    opt = optim.Adam(clf.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        out = clf(ids, mask, labels=labels)
        first = out.loss.item() if first is None else first
        clf.zero_grad()
        out.loss.backward()
        opt.step()
    clf.eval()
    out = clf(ids, mask, labels=labels)
    assert out.loss.item() < 0.1 < first
    assert np.array_equal(out.logits.numpy().argmax(1), labels)


def test_freeze_body_trains_only_the_head(rng):
    ids, mask, labels = _toy_task(rng)
    clf = BertForSequenceClassification(tiny_bert(), num_labels=2, freeze_body=True)
    assert all(not p.requires_grad for p in clf.body.parameters())
    assert all(p.requires_grad for p in clf.classifier.parameters())
    assert clf.num_parameters(trainable_only=True) == 16 * 2 + 2
    body_before = clf.body.state_dict()
    head_before = clf.classifier.weight.numpy().copy()
    opt = optim.Adam([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        out = clf(ids, mask, labels=labels)
        clf.zero_grad()
        out.loss.backward()
        opt.step()
    for k, v in clf.body.state_dict().items():
        assert np.array_equal(v, body_before[k]), f"frozen {k} changed"
        assert dict(clf.body.named_parameters())[k].grad is None
    assert not np.allclose(clf.classifier.weight.numpy(), head_before)
    # backward leaves no gradient on the frozen body at all
    clf.zero_grad()
    clf(ids, mask, labels=labels).loss.backward()
    assert all(p.grad is None for p in clf.body.parameters())
    assert clf.classifier.weight.grad is not None
    clf.freeze_body(False)
    assert all(p.requires_grad for p in clf.body.parameters())


def test_gpt_body_last_token_pooling(rng):
    gpt_mod = pytest.importorskip("tinyllm.models.gpt")
    cfg = gpt_mod.GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16)
    gpt = gpt_mod.GPT(cfg).eval()
    clf = GPTForSequenceClassification(gpt, 16, num_labels=3).eval()
    ids = rng.integers(1, 30, size=(1, 5))
    alone = clf(ids, np.ones((1, 5), dtype=np.int64)).logits.numpy()
    padded = np.concatenate([ids, np.zeros((1, 3), dtype=ids.dtype)], axis=1)
    out = clf(padded, np.array([[1] * 5 + [0] * 3])).logits.numpy()
    assert np.allclose(out, alone, atol=1e-5)  # causal: right padding changes nothing
    # the features are the GPT's final hidden states: its logits are them times wte^T
    feats = clf._features(ids, None)
    logits = gpt(ids)
    assert np.allclose(feats.numpy() @ gpt.wte.weight.numpy().T, logits.numpy(), atol=1e-5)


def test_gpt_classifier_overfits(rng):
    gpt_mod = pytest.importorskip("tinyllm.models.gpt")
    tl.manual_seed(0)
    ids, mask, labels = _toy_task(np.random.default_rng(1))
    gpt = gpt_mod.GPT(gpt_mod.GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2,
                                        n_embd=16))
    clf = GPTForSequenceClassification(gpt, 16, num_labels=2, dropout=0.0)
    opt = optim.Adam(clf.parameters(), lr=3e-3)
    for _ in range(80):
        out = clf(ids, mask, labels=labels)
        clf.zero_grad()
        out.loss.backward()
        opt.step()
    assert clf(ids, mask, labels=labels).loss.item() < 0.1


def test_errors(rng):
    body = BertModel(tiny_bert())
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(body, 16, 2, pooling="max")
    with pytest.raises(ValueError, match="pooler_output"):
        SequenceClassifier(LookupBody(5, 4), 4, 2, pooling="pooler")
    clf = SequenceClassifier(body, 8, 2)
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        clf(np.ones((1, 3), dtype=np.int64))
    clf = SequenceClassifier(body, 16, 2)
    with pytest.raises(ValueError, match="labels must have shape"):
        clf(np.ones((2, 3), dtype=np.int64), labels=np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="outside"):
        clf(np.ones((2, 3), dtype=np.int64), labels=np.array([0, 2]))
