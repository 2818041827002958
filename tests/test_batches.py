"""Batches for causal LM, masked LM (+ NSP), sequence-to-sequence."""

import numpy as np
import pytest
from test_exercises_bert import masking_case

from tinyllm.data import (
    DigitVocab,
    MLMBatcher,
    collate_seq2seq,
    couplet_pairs,
    get_batch,
    make_nsp_pairs,
    mask_tokens,
    nsp_batch,
    synthetic_seq2seq,
)
from tinyllm.data.corpora import Poem
from tinyllm.tokenizers import WordPieceTokenizer

# --- causal LM ----------------------------------------------------------------------------------


def test_get_batch_windows(rng):
    tokens = np.arange(1000, dtype=np.uint16)  # token i sits at position i
    x, y = get_batch(tokens, 8, 16, rng)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int64
    assert np.array_equal(y, x + 1) and np.all(np.diff(x, axis=1) == 1)
    assert x.min() >= 0 and y.max() <= 999
    x1, _ = get_batch(tokens, 4, 5, np.random.default_rng(7))
    x2, _ = get_batch(tokens, 4, 5, 7)
    assert np.array_equal(x1, x2)
    x, y = get_batch(np.arange(6), 50, 5, rng)  # exactly one window fits
    assert (x[:, 0] == 0).all() and (y[:, -1] == 5).all()


def test_get_batch_errors():
    with pytest.raises(ValueError, match=r"block_size=10.*only 10"):
        get_batch(np.arange(10), 2, 10, 0)
    with pytest.raises(ValueError, match="empty"):
        get_batch(np.array([], dtype=np.int64), 2, 1, 0)


# --- masked LM (exercise 11.1) ------------------------------------------------------------------

MASK, PAD, CLS, SEP, V = 4, 0, 1, 2, 1000


def test_mask_tokens_fixed_rules():
    ids = np.array([[CLS, 10, 11, 12, SEP, PAD, PAD]])
    masked, labels = mask_tokens(ids, V, MASK, special_ids=[CLS, SEP], rng=0, mlm_probability=1.0,
                                 pad_token_id=PAD)
    assert labels.tolist() == [[-100, 10, 11, 12, -100, -100, -100]]
    assert masked[0, [0, 4, 5, 6]].tolist() == [CLS, SEP, PAD, PAD]
    masked, labels = mask_tokens(ids, V, MASK, [CLS, SEP], 0, mlm_probability=0.0)
    assert (labels == -100).all() and np.array_equal(masked, ids)


def test_mask_tokens_rates(rng):
    ids, special, p, masked, labels = masking_case(rng, V, MASK, 10, V)
    assert masked.shape == labels.shape == ids.shape and masked.dtype == labels.dtype == np.int64
    eligible = ~(special | np.isin(ids, [CLS, SEP, PAD]))
    chosen = labels != -100
    assert not (chosen & ~eligible).any()
    assert np.array_equal(labels[chosen], ids[chosen])
    assert np.array_equal(masked[~chosen], ids[~chosen])
    n = eligible.sum()
    rate = chosen.sum() / n
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3
    c = chosen.sum()
    frac_mask = (masked[chosen] == MASK).mean()
    frac_same = (masked[chosen] == ids[chosen]).mean()
    frac_rand = 1 - frac_mask - frac_same
    tol = lambda q: 4 * np.sqrt(q * (1 - q) / c) + 0.005
    assert abs(frac_mask - 0.8) < tol(0.8)
    assert abs(frac_same - 0.1) < tol(0.1)
    assert abs(frac_rand - 0.1) < tol(0.1)
    rand_tokens = masked[chosen & (masked != MASK) & (masked != ids)]
    assert rand_tokens.min() >= 0 and rand_tokens.max() < V
    assert len(np.unique(rand_tokens)) > 0.5 * min(len(rand_tokens), V)  # spread over the vocab


def test_mlm_batcher_static_vs_dynamic():
    examples = [[CLS] + list(range(10, 10 + n)) + [SEP] for n in (30, 50, 40, 45)]
    kw = dict(batch_size=2, vocab_size=V, mask_token_id=MASK, pad_token_id=PAD,
              special_ids=[CLS, SEP], seed=5)
    static = MLMBatcher(examples, dynamic=False, **kw)
    b1, b2 = static.batch([0, 1]), static.batch([0, 1])
    assert all(np.array_equal(b1[k], b2[k]) for k in b1)
    assert np.array_equal(MLMBatcher(examples, dynamic=False, **kw).batch([1, 0])["labels"],
                          b1["labels"][::-1])
    assert b1["input_ids"].shape == (2, 52) and b1["attention_mask"][0].sum() == 32
    assert (b1["labels"][0, 32:] == -100).all() and (b1["input_ids"][0, 32:] == PAD).all()
    dynamic = MLMBatcher(examples, dynamic=True, **kw)
    d1, d2 = dynamic.batch([0, 1]), dynamic.batch([0, 1])
    assert not np.array_equal(d1["labels"], d2["labels"])
    epoch = list(static)
    assert len(epoch) == len(static) == 2 and sum(len(b["input_ids"]) for b in epoch) == 4


# --- next sentence prediction -------------------------------------------------------------------


def test_make_nsp_pairs(rng):
    docs = [[f"d{d}s{i}" for i in range(int(rng.integers(2, 30)))] for d in range(8)]
    pairs = make_nsp_pairs(docs, rng)
    assert len(pairs) == sum(len(d) - 1 for d in docs)
    for a, b, label in pairs:
        da, ia = a[1:].split("s")
        db, ib = b[1:].split("s")
        if label == 0:
            assert da == db and int(ib) == int(ia) + 1
        else:
            assert da != db
    frac = np.mean([p[2] for p in pairs])
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / len(pairs))
    with pytest.raises(ValueError, match="two non-empty documents"):
        make_nsp_pairs([["a", "b"]], rng)


def test_nsp_batch_with_wordpiece():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "dog", "ran",
             "##s", "."]
    tok = WordPieceTokenizer(vocab)
    pairs = [("the cat sat.", "the dogs ran.", 0), ("cats", "the dog", 1)]
    out = nsp_batch(pairs, tok, max_length=16)
    assert out["input_ids"].tolist() == [
        [2, 5, 6, 7, 11, 3, 5, 8, 10, 9, 11, 3],
        [2, 6, 10, 3, 5, 8, 3, 0, 0, 0, 0, 0]]
    assert out["token_type_ids"][0].tolist() == [0] * 6 + [1] * 6
    assert out["attention_mask"][1].tolist() == [1] * 7 + [0] * 5
    assert out["next_sentence_label"].tolist() == [0, 1]
    assert all(v.dtype == np.int64 for v in out.values())
    assert nsp_batch(pairs, tok, max_length=7)["input_ids"].shape == (2, 7)


# --- sequence to sequence -----------------------------------------------------------------------


def test_couplet_pairs():
    poems = [Poem("李白", "靜夜思", "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。")]
    assert couplet_pairs(poems) == [("床前明月光，", "疑是地上霜。"),
                                    ("舉頭望明月，", "低頭思故鄉。")]
    assert couplet_pairs(poems, first_only=True) == [("床前明月光，", "疑是地上霜。")]
    with pytest.raises(ValueError, match="no couplets"):
        couplet_pairs([Poem("a", "b", "no punctuation")])


def test_synthetic_seq2seq(rng):
    for task in ("reverse", "sort"):
        data = synthetic_seq2seq(50, task, 2, 6, rng)
        for src, tgt in data:
            assert 2 <= len(src) <= 6 and min(src) >= DigitVocab.offset
            assert max(src) < DigitVocab.size
            assert tgt == (src[::-1] if task == "reverse" else sorted(src))
    assert DigitVocab.decode(DigitVocab.encode("0912")) == "0912"
    with pytest.raises(ValueError, match="unknown task"):
        synthetic_seq2seq(1, "add")


def test_collate_seq2seq():
    pairs = [([5, 6, 7], [7, 6, 5]), ([8], [8])]
    b = collate_seq2seq(pairs, pad_id=0, bos_id=1, eos_id=2)
    assert b["src"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["tgt_in"].tolist() == [[1, 7, 6, 5], [1, 8, 0, 0]]
    assert b["tgt_out"].tolist() == [[7, 6, 5, 2], [8, 2, 0, 0]]
    assert b["src_mask"].tolist() == [[True] * 3, [True, False, False]]
    assert b["tgt_mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert b["src"].dtype == np.int64 and b["src_mask"].dtype == bool
