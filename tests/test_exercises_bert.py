"""Grading tests of lesson 11: 11.1 BERT's masking rule (80/10/10), 11.2 the masked-LM head and
the pre-training loss.

The masking rates are checked with tolerances of four standard deviations, on a small vocabulary
where the random replacements' spread is visible; the head and loss against NumPy with each of
the supported activations.
"""

import math

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail

import tinyllm as tl
from tinyllm.data import mask_tokens
from tinyllm.models.bert import BertConfig, MLMHead, pretraining_loss

MASK, PAD, CLS, SEP = 4, 0, 1, 2


def within(name, got, want, n, seed, p=None):
    """A rate ``got`` measured on ``n`` draws is within 4 standard deviations of ``want``."""
    p = want if p is None else p
    tol = 4 * math.sqrt(p * (1 - p) / max(n, 1)) + 1e-3
    if abs(got - want) > tol:
        fail(name, f"measured {got:.4f} over {n} positions, expected {want:.4f} "
                   f"(tolerance {tol:.4f}, four standard deviations)", seed)


# ---------------------------------------------------------------------- 11.1 mask_tokens
@pytest.mark.exercise("11.1")
def test_11_1_mask_tokens_fixed_rules():
    ids = np.array([[CLS, 10, 11, 12, SEP, PAD, PAD]])
    masked, labels = mask_tokens(ids, 1000, MASK, special_ids=[CLS, SEP], rng=0,
                                 mlm_probability=1.0, pad_token_id=PAD)
    assert_equal("labels with mlm_probability=1 (every ordinary token predicted, -100 elsewhere)",
                 labels, [[-100, 10, 11, 12, -100, -100, -100]])
    assert_equal("the special and padding positions of the masked ids (never changed)",
                 masked[0, [0, 4, 5, 6]], [CLS, SEP, PAD, PAD])
    masked, labels = mask_tokens(ids, 1000, MASK, [CLS, SEP], 0, mlm_probability=0.0)
    assert_equal("labels with mlm_probability=0", labels, np.full_like(ids, -100))
    assert_equal("masked ids with mlm_probability=0", masked, ids)


def masking_case(rng, vocab, mask_id, low, high):
    """A random case of ``mask_tokens``: ids (64, 200 to 299) drawn from [low, high), framed
    [CLS] ... [SEP] with 39 pads before [SEP], an explicit special mask (5% of the positions),
    a rate p in [0.1, 0.3), and what ``mask_tokens`` makes of them. Returns (ids, special, p,
    masked, labels)."""
    b, length = 64, int(rng.integers(200, 300))
    p = float(rng.uniform(0.1, 0.3))
    ids = rng.integers(low, high, size=(b, length))
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[:, length - 40: length - 1] = PAD
    special = rng.random((b, length)) < 0.05  # an explicit special mask besides the ids
    masked, labels = mask_tokens(ids, vocab, mask_id, rng=rng, mlm_probability=p,
                                 special_mask=special | np.isin(ids, [CLS, SEP]),
                                 pad_token_id=PAD)
    return ids, special, p, masked, labels


@pytest.mark.exercise("11.1")
def test_11_1_mask_tokens_rates(rng):
    for vocab, mask_id in ((1000, MASK), (8, 7)):
        ids, special, p, masked, labels = masking_case(
            rng, vocab, mask_id, 5 if vocab > 8 else 3, vocab if vocab > 8 else mask_id)
        what = f"mask_tokens(vocab_size={vocab}, mlm_probability={p:.3f})"
        assert_equal(f"{what}: the masked ids' shape", masked.shape, ids.shape, rng)
        assert_equal(f"{what}: dtypes (masked, labels)", (masked.dtype, labels.dtype),
                     (np.dtype(np.int64), np.dtype(np.int64)), rng)
        eligible = ~(special | np.isin(ids, [CLS, SEP, PAD]))
        chosen = labels != -100
        if (chosen & ~eligible).any():
            fail(what, f"chose {int((chosen & ~eligible).sum())} special or padding positions",
                 rng)
        assert_equal(f"{what}: labels at the chosen positions (the original ids)",
                     labels[chosen], ids[chosen], rng)
        assert_equal(f"{what}: ids at the positions not chosen (unchanged)", masked[~chosen],
                     ids[~chosen], rng)
        n, c = int(eligible.sum()), int(chosen.sum())
        within(f"{what}: the fraction of eligible positions chosen", c / n, p, n, rng)
        to_mask = masked[chosen] == mask_id
        same = (masked[chosen] == ids[chosen]) & ~to_mask
        replaced = ~to_mask & ~same
        # a random token may equal the original (1 / vocab of them) or the mask id
        hit = 1 / vocab
        within(f"{what}: chosen positions replaced by [MASK]", to_mask.mean(),
               0.8 + 0.1 * hit, c, rng)
        within(f"{what}: chosen positions kept unchanged", same.mean(), 0.1 + 0.1 * hit, c, rng)
        within(f"{what}: chosen positions given a random token", replaced.mean(),
               0.1 * (1 - 2 * hit), c, rng)
        rand = masked[chosen][replaced]
        if rand.size and (rand.min() < 0 or rand.max() >= vocab):
            fail(what, f"random tokens outside [0, {vocab}): {rand.min()}..{rand.max()}", rng)
        if vocab == 8:  # every id, 0 included, is drawn: each about 1/8 of the random ones
            counts = np.bincount(rand, minlength=vocab)
            if (counts[:mask_id] == 0).any():
                fail(what, f"random tokens never drew some ids: counts per id {counts.tolist()} "
                           "(draw them uniformly from the whole vocabulary, 0 to vocab_size-1)",
                     rng)


# ---------------------------------------------------------------------- 11.2 MLM head and loss
def tiny_config(**kw):
    d = dict(vocab_size=23, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=12, max_position_embeddings=12, type_vocab_size=2,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.3)
    d.update(kw)
    return BertConfig(**d)


NP_ACT = {"gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
          "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                        * (x + 0.044715 * x**3))),
          "relu": lambda x: np.maximum(x, 0)}


def np_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def np_mlm_head(head, hidden, emb, act, eps):
    h = hidden @ head.dense.weight.numpy().astype(np.float64).T + head.dense.bias.numpy()
    h = np_layer_norm(NP_ACT[act](h), head.ln.weight.numpy(), head.ln.bias.numpy(), eps)
    return h @ emb.T + head.bias.numpy()


def np_cross_entropy(logits, targets, ignore=-100):
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    targets = targets.reshape(-1)
    keep = targets != ignore
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(targets))[keep], targets[keep]].mean()


@pytest.mark.exercise("11.2")
def test_11_2_mlm_head_fixed_example():
    cfg = tiny_config(vocab_size=3, hidden_size=2, num_attention_heads=1, layer_norm_eps=1e-12)
    head = MLMHead(cfg)
    head.dense.weight.data = np.array([[1.0, 0.0], [0.0, -1.0]], dtype=np.float32)
    head.dense.bias.data = np.zeros(2, dtype=np.float32)
    head.bias.data = np.array([0.0, 1.0, -1.0], dtype=np.float32)
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    # dense: (2, 1) -> (2, -1); gelu: (1.9545, -0.1587); LayerNorm of two values: (1, -1)
    assert_close("MLM head of [[2, 1]] (dense, gelu, LayerNorm, tied decoder + bias)",
                 head(tl.tensor([[[2.0, 1.0]]]), tl.tensor(emb)), [[[1.0, 0.0, -1.0]]],
                 atol=1e-5)


@pytest.mark.exercise("11.2")
def test_11_2_mlm_head_matches_numpy(rng):
    for act in ("gelu", "gelu_new", "relu"):
        # at least 3 features: LayerNorm of two values is (+1, -1) by their order alone,
        # which would hide a wrong activation
        h, v = int(rng.integers(3, 9)), int(rng.integers(3, 20))
        b, t = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        cfg = tiny_config(vocab_size=v, hidden_size=h, num_attention_heads=1, hidden_act=act)
        head = MLMHead(cfg)
        head.dense.bias.data = rng.normal(0, 0.5, h).astype(np.float32)
        head.ln.weight.data = rng.normal(1, 0.3, h).astype(np.float32)
        head.ln.bias.data = rng.normal(0, 0.3, h).astype(np.float32)
        head.bias.data = rng.normal(0, 0.5, v).astype(np.float32)
        emb = rng.normal(0, 0.5, (v, h)).astype(np.float32)
        hidden = rng.normal(0, 1, (b, t, h)).astype(np.float32)
        got = head(tl.tensor(hidden), tl.tensor(emb))
        want = np_mlm_head(head, hidden.astype(np.float64), emb.astype(np.float64), act,
                           cfg.layer_norm_eps)
        assert_close(f"MLM head logits, hidden_act={act!r} (config.activation), hidden "
                     f"{hidden.shape}, vocabulary {v}", got, want, rng, atol=1e-4, rtol=1e-4)


@pytest.mark.exercise("11.2")
def test_11_2_pretraining_loss_matches_numpy(rng):
    for _ in range(3):
        b, t, v = int(rng.integers(1, 5)), int(rng.integers(2, 7)), int(rng.integers(2, 15))
        logits = rng.normal(0, 2, (b, t, v)).astype(np.float32)
        labels = rng.integers(0, v, (b, t))
        labels[rng.random((b, t)) < 0.5] = -100
        labels[0, 0] = 0  # at least one position counts
        nsp_logits = rng.normal(0, 2, (b, 2)).astype(np.float32)
        nsp = rng.integers(0, 2, b)
        mlm, nspl = np_cross_entropy(logits, labels), np_cross_entropy(nsp_logits, nsp)
        what = f"pretraining_loss of ({b}, {t}, {v}) logits"
        assert_close(f"{what}, MLM labels only", pretraining_loss(tl.tensor(logits), labels),
                     mlm, rng, rtol=1e-5)
        assert_close(f"{what}, MLM and NSP labels (their sum)",
                     pretraining_loss(tl.tensor(logits), labels, tl.tensor(nsp_logits), nsp),
                     mlm + nspl, rng, rtol=1e-5)
        assert_close(f"{what}, NSP labels only",
                     pretraining_loss(tl.tensor(logits), None, tl.tensor(nsp_logits), nsp),
                     nspl, rng, rtol=1e-5)
        if pretraining_loss(tl.tensor(logits)) is not None:
            fail("pretraining_loss without labels", "should be None")
    u = tl.tensor(np.zeros((1, 3, 4), dtype=np.float32))
    assert_close("pretraining_loss of uniform logits over 4 classes, one position ignored "
                 "(log 4)", pretraining_loss(u, np.array([[1, -100, 3]])), math.log(4))
