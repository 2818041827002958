"""Grading tests of lesson 13: 13.1 the confusion matrix and balanced accuracy, 13.2 the
classification head and its loss.

The head is checked on a body whose features NumPy computes (an embedding lookup), for every
pooling, with the dropout on in training mode (the reference draws the same mask after the same
seed) and with BERT's pooler; the metrics against loops over the examples.
"""

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail

import tinyllm as tl
from tinyllm.metrics import balanced_accuracy, confusion_matrix
from tinyllm.models.bert import BertConfig, BertModel
from tinyllm.models.classification import (
    BertForSequenceClassification,
    SequenceClassifier,
    pool_hidden_states,
)
from tinyllm.nn import Embedding, Module


class LookupBody(Module):
    """hidden = E[ids]: a body whose features NumPy can compute independently."""

    def __init__(self, vocab, dim):
        super().__init__()
        self.emb = Embedding(vocab, dim, init_std=1.0)

    def forward(self, ids, attention_mask=None):
        return self.emb(ids)


def np_pool(hidden, mask, pooling):
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask[..., None].astype(np.float64)
        return (hidden * m).sum(1) / m.sum(1)
    return hidden[np.arange(len(hidden)), mask.sum(1) - 1]


def np_ce(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def random_case(rng):
    v, h = int(rng.integers(5, 20)), int(rng.integers(2, 9))
    b, t, k = int(rng.integers(2, 5)), int(rng.integers(2, 7)), int(rng.integers(2, 5))
    ids = rng.integers(0, v, size=(b, t))
    lengths = rng.integers(1, t + 1, size=b)
    lengths[0] = t - 1  # some padding, never the whole row
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    return v, h, k, ids, mask, rng.integers(0, k, size=b)


# ---------------------------------------------------------------------- 13.2 the head
@pytest.mark.exercise("13.2")
def test_13_2_classifier_fixed_example():
    body = LookupBody(3, 2)
    body.emb.weight.data = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    ids, mask = np.array([[0, 1, 2]]), np.array([[1, 1, 0]])
    for pooling, vec in {"cls": [1.0, 0.0], "mean": [0.5, 0.5], "last": [0.0, 1.0]}.items():
        assert_close(f"pool_hidden_states(pooling={pooling!r}) of rows [1, 0], [0, 1], [2, 2] "
                     "with mask [1, 1, 0]", pool_hidden_states(body(ids), mask, pooling), [vec])
    clf = SequenceClassifier(body, 2, 2, pooling="mean", dropout=0.0)
    clf.classifier.weight.data = np.array([[2.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    clf.classifier.bias.data = np.zeros(2, dtype=np.float32)
    out = clf(ids, mask, labels=np.array([1]))
    assert_close("logits of the mean-pooled example", out.logits, [[1.0, 0.0]])
    assert_close("loss of logits (1, 0) for label 1: log(1 + e)", out.loss, np.log(1 + np.e),
                 rtol=1e-6)


@pytest.mark.exercise("13.2")
@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_13_2_classifier_matches_numpy(rng, pooling):
    for _ in range(3):
        v, h, k, ids, mask, labels = random_case(rng)
        body = LookupBody(v, h)
        clf = SequenceClassifier(body, h, k, pooling=pooling, dropout=0.5).eval()
        clf.classifier.bias.data = rng.normal(size=k).astype(np.float32)
        out = clf(ids, mask, labels=labels)
        pooled = np_pool(body.emb.weight.numpy().astype(np.float64)[ids], mask, pooling)
        logits = pooled @ clf.classifier.weight.numpy().T + clf.classifier.bias.numpy()
        what = f"SequenceClassifier(pooling={pooling!r}) in eval mode, ids {ids.shape}"
        assert_close(f"{what}: logits", out.logits, logits, rng, atol=1e-5)
        assert_close(f"{what}: loss (mean cross-entropy)", out.loss, np_ce(logits, labels), rng,
                     rtol=1e-5)
        if clf(ids, mask).loss is not None:
            fail(f"{what} without labels", "the loss should be None", rng)


@pytest.mark.exercise("13.2")
def test_13_2_pooling_without_mask_and_empty_rows(rng):
    for _ in range(3):
        b, t, h = int(rng.integers(2, 5)), int(rng.integers(2, 7)), int(rng.integers(2, 6))
        h += h == t  # T and H differ, so that taking one for the other shows
        hidden = rng.standard_normal((b, t, h)).astype(np.float32)
        ht = tl.tensor(hidden)
        for pooling, want in (("cls", hidden[:, 0]), ("mean", hidden.mean(1)),
                              ("last", hidden[:, -1])):
            assert_close(f"pool_hidden_states(pooling={pooling!r}) of {hidden.shape} without a "
                         "mask (every position is real)", pool_hidden_states(ht, None, pooling),
                         want, rng, atol=1e-6)
        mask = np.ones((b, t), dtype=np.int64)
        mask[-1] = 0  # a row without real tokens: its last real token is taken as position 0
        assert_close("pool_hidden_states(pooling='last') with a row of zeros in the mask "
                     "(position 0 for that row)", pool_hidden_states(ht, mask, "last"),
                     np.concatenate([hidden[:-1, -1], hidden[-1:, 0]]), rng)


@pytest.mark.exercise("13.2")
def test_13_2_classifier_dropout_in_training(rng):
    v, h, k, ids, mask, labels = random_case(rng)
    body = LookupBody(v, h)
    clf = SequenceClassifier(body, h, k, pooling="mean", dropout=0.5).train()
    seed = int(rng.integers(2**31))
    tl.manual_seed(seed)
    got = clf(ids, mask, labels=labels)
    tl.manual_seed(seed)  # the same mask, drawn by the head's own Dropout on the pooled vector
    pooled = clf.dropout(pool_hidden_states(body(ids), mask, "mean")).numpy().astype(np.float64)
    logits = pooled @ clf.classifier.weight.numpy().T + clf.classifier.bias.numpy()
    assert_close("logits in training mode (dropout 0.5 on the pooled vector, then the linear "
                 "layer)", got.logits, logits, rng, atol=1e-5)
    assert_close("loss in training mode", got.loss, np_ce(logits, labels), rng, rtol=1e-5)


@pytest.mark.exercise("13.2")
def test_13_2_bert_pooler(rng):
    cfg = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=16, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, initializer_range=0.3)
    tl.manual_seed(int(rng.integers(2**31)))
    clf = BertForSequenceClassification(bert=BertModel(cfg), num_labels=3).eval()
    ids = rng.integers(1, 30, size=(3, 6))
    mask = np.ones((3, 6), dtype=np.int64)
    mask[1, 4:] = 0
    hidden = clf.bert(ids, attention_mask=mask).numpy().astype(np.float64)
    pooler = clf.bert.pooler
    pooled = np.tanh(hidden[:, 0] @ pooler.weight.numpy().T + pooler.bias.numpy())
    logits = pooled @ clf.classifier.weight.numpy().T + clf.classifier.bias.numpy()
    assert_close("BertForSequenceClassification(pooling='pooler') logits: the classifier on "
                 "tanh(dense(h[CLS])), BERT's pooler", clf(ids, mask).logits, logits, rng,
                 atol=1e-5)


@pytest.mark.exercise("13.2")
def test_13_2_gradient_reaches_head_and_body(rng):
    v, h, k, ids, mask, labels = random_case(rng)
    body = LookupBody(v, h)
    clf = SequenceClassifier(body, h, k, pooling="mean", dropout=0.0)
    clf(ids, mask, labels=labels).loss.backward()
    for name, p in (("the classifier weight", clf.classifier.weight),
                    ("the body's embedding", body.emb.weight)):
        if p.grad is None or not np.abs(p.grad).sum() > 0:
            fail(f"gradient of the loss with respect to {name}", "is missing or zero", rng)


# ---------------------------------------------------------------------- 13.1 metrics
def loops(pred, labels, k):
    cm = np.zeros((k, k), dtype=np.int64)
    for p, y in zip(pred, labels):
        cm[y, p] += 1
    recalls = [cm[c, c] / cm[c].sum() for c in range(k) if cm[c].sum()]
    return cm, float(np.mean(recalls))


@pytest.mark.exercise("13.1")
def test_13_1_metrics_fixed_example():
    pred, labels = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert_equal("confusion_matrix(pred [0, 0, 1, 1], labels [0, 1, 1, 1], 2) (rows: truth)",
                 confusion_matrix(pred, labels, 2), [[1, 0], [1, 2]])
    assert_close("balanced_accuracy of that example: (1 + 2/3) / 2",
                 balanced_accuracy(pred, labels, 2), (1 + 2 / 3) / 2)
    assert_close("balanced_accuracy of always answering class 0 when 3 classes occur",
                 balanced_accuracy(np.zeros(6, int), np.array([0, 1, 2, 0, 0, 1]), 4), 1 / 3)


@pytest.mark.exercise("13.1")
def test_13_1_metrics_random(rng):
    for _ in range(6):
        k = int(rng.integers(2, 8))
        n = int(rng.integers(1, 60))
        labels = rng.integers(0, max(1, k - 1), size=n)  # the last class may be absent
        pred = np.where(rng.random(n) < 0.5, labels, rng.integers(0, k, size=n))
        cm, bal = loops(pred, labels, k)
        what = f"{n} predictions over {k} classes"
        got = confusion_matrix(pred, labels, k)
        assert_equal(f"confusion_matrix of {what}", got, cm, rng)
        if got.dtype.kind not in "iu":
            fail(f"confusion_matrix of {what}", f"should count in integers, got {got.dtype}", rng)
        assert_close(f"balanced_accuracy of {what} (mean recall over the classes present)",
                     balanced_accuracy(pred, labels, k), bal, rng)
