"""The first language models: the bigram table, Bengio et al.'s MLP LM, and the demo.

* the trained bigram's loss approaches the cross-entropy of the *counting* bigram model,
  computed here independently from NumPy pair counts;
* the MLP LM's loss falls on a slice of Tiny Shakespeare (skips when the corpus is missing);
* the MLP LM's gradients match central finite differences in float64.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import optim
from tinyllm.models.bigram import BigramLM, bigram_counts_loss
from tinyllm.models.mlp_lm import MLPLM, context_windows
from tinyllm.tokenizers import CharTokenizer


def markov_text(rng, n=6000, alphabet="abcdefg\n"):
    """Text from a random first-order Markov chain whose transitions are all likely enough to be
    seen, so the counting model has a finite loss."""
    v = len(alphabet)
    probs = rng.dirichlet(np.full(v, 2.0), size=v) * 0.9 + 0.1 / v
    ids = [0]
    for _ in range(n - 1):
        ids.append(int(rng.choice(v, p=probs[ids[-1]])))
    return "".join(alphabet[i] for i in ids)


def counting_entropy(ids, v):
    """Mean -log P(b | a) over the pairs of ``ids`` with P from the pairs' own counts (MLE)."""
    counts = np.zeros((v, v))
    for a, b in zip(ids[:-1], ids[1:]):
        counts[a, b] += 1
    probs = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    return float(-np.mean(np.log(probs[ids[:-1], ids[1:]])))


def test_bigram_shapes_and_loss_at_init():
    tl.manual_seed(0)
    m = BigramLM(7)
    idx = np.array([[0, 1, 2], [6, 5, 4]])
    logits = m(idx)
    assert logits.shape == (2, 3, 7)
    np.testing.assert_array_equal(logits.numpy()[1, 0], m.table.weight.numpy()[6])
    logits2, loss = m(idx, np.array([[1, 2, 3], [5, 4, 3]]))
    assert loss.item() == pytest.approx(math.log(7), abs=0.05), "a near-zero table is near uniform"
    assert m.num_parameters() == 49


def test_bigram_training_reaches_the_counting_model(rng):
    text = markov_text(rng)
    tok = CharTokenizer.from_text(text)
    ids = np.array(tok.encode(text))
    v = tok.vocab_size
    target = counting_entropy(ids, v)
    assert target == pytest.approx(bigram_counts_loss(ids, ids, v), abs=1e-9)
    tl.manual_seed(0)
    model = BigramLM(v)
    opt = optim.Adam(model.parameters(), lr=0.2)
    x, y = ids[None, :-1], ids[None, 1:]
    for _ in range(300):  # full-batch: the loss goes to the minimum, the counting entropy
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, loss = model(x, y)
    got = loss.item()
    assert got == pytest.approx(target, abs=5e-3), (
        f"trained bigram loss {got:.4f} should approach the counting bigram's {target:.4f}")
    # and the learned table's softmax is the count frequencies
    table = model.table.weight.numpy().astype(np.float64)
    p = np.exp(table - table.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    counts = np.zeros((v, v))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    freq = counts / counts.sum(1, keepdims=True)
    assert np.abs(p - freq).max() < 0.03, "learned P(b|a) should match the pair frequencies"


def test_bigram_sampling_follows_the_table():
    tok = CharTokenizer.from_text("abc")
    m = BigramLM(3)
    m.table.weight.data[:] = -1e4
    for a, b in ((0, 1), (1, 2), (2, 0)):  # a -> b -> c -> a deterministically
        m.table.weight.data[a, b] = 0.0
    assert m.sample(tok, 7, prompt="b", seed=3) == "bcabcabc"
    out = m.generate(np.array([[0], [2]]), 4, seed=0)
    assert out.dtype.kind == "i" and out.shape == (2, 5)
    np.testing.assert_array_equal(out, [[0, 1, 2, 0, 1], [2, 0, 1, 2, 0]])
    m2 = BigramLM(3)
    s1, s2 = m2.sample(tok, 30, seed=5), m2.sample(tok, 30, seed=5)
    assert s1 == s2, "the same seed must give the same sample"
    greedy = m2.sample(tok, 6, prompt="a", temperature=0)
    table = m2.table.weight.numpy()
    want = [0]
    for _ in range(6):
        want.append(int(np.argmax(table[want[-1]])))
    assert greedy == tok.decode(want), "temperature 0 must follow the argmax of each row"



def test_mlp_shapes_windows_and_errors():
    x, y = context_windows([5, 6, 7, 8, 9], 3)
    np.testing.assert_array_equal(x, [[5, 6, 7], [6, 7, 8]])
    np.testing.assert_array_equal(y, [8, 9])
    m = MLPLM(11, context=3, n_embd=4, n_hidden=10)
    names = [n for n, _ in m.named_parameters()]
    assert names == ["emb.weight", "hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert m.num_parameters() == 11 * 4 + 12 * 10 + 10 + 10 * 11 + 11
    logits, loss = m(x, y)
    assert logits.shape == (2, 11) and loss.shape == ()
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        m(np.zeros((2, 4), dtype=np.int64))
    tok = CharTokenizer.from_text("hello world\n")
    m = MLPLM(tok.vocab_size, context=4)
    text = m.sample(tok, 25, prompt="he", seed=1)
    assert text.startswith("he") and len(text) == 27
    assert text == m.sample(tok, 25, prompt="he", seed=1)


def test_mlp_gradients_match_finite_differences(rng):
    v, ctx = 5, 3
    tl.manual_seed(int(rng.integers(2**31)))
    m = MLPLM(v, context=ctx, n_embd=2, n_hidden=4)
    for p in m.parameters():
        p.data = p.data.astype(np.float64) + 0.3 * rng.standard_normal(p.shape)
    x = rng.integers(0, v, (6, ctx))
    y = rng.integers(0, v, 6)
    _, loss = m(x, y)
    loss.backward()

    def f():
        with tl.no_grad():
            return m(x, y)[1].item()

    eps = 1e-6
    for name, p in m.named_parameters():
        assert p.grad.dtype == np.float64
        num = np.zeros(p.shape)
        for i in np.ndindex(*p.shape):
            old = p.data[i]
            p.data[i] = old + eps
            up = f()
            p.data[i] = old - eps
            down = f()
            p.data[i] = old
            num[i] = (up - down) / (2 * eps)
        err = np.max(np.abs(p.grad - num))
        assert err < 1e-7, f"d loss / d {name}: max difference from finite differences {err:.3g}"


def _shakespeare():
    try:
        from tinyllm.data import corpus_path

        return corpus_path("tinyshakespeare", download_missing=False).read_text(encoding="utf-8")
    except (ImportError, FileNotFoundError):
        folder = os.environ.get("TINYLLM_DATA_DIR")
        p = Path(folder or "/nonexistent") / "tinyshakespeare.txt"
        if not p.is_file():
            pytest.skip("Tiny Shakespeare not available (set TINYLLM_DATA_DIR)")
        return p.read_text(encoding="utf-8")


def test_mlp_loss_falls_on_tiny_shakespeare():
    text = _shakespeare()[:30_000]
    tok = CharTokenizer.from_text(text)
    ids = np.array(tok.encode(text))
    x, y = context_windows(ids, 5)
    tl.manual_seed(0)
    r = np.random.default_rng(0)
    m = MLPLM(tok.vocab_size, context=5, n_embd=16, n_hidden=128)
    opt = optim.AdamW(m.parameters(), lr=5e-3, weight_decay=0.0)
    with tl.no_grad():
        start = m(x, y)[1].item()
    assert start == pytest.approx(math.log(tok.vocab_size), abs=0.3)
    for _ in range(300):
        ix = r.integers(0, len(y), 128)
        _, loss = m(x[ix], y[ix])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with tl.no_grad():
        end = m(x, y)[1].item()
    assert end < start - 1.2, f"loss fell only from {start:.3f} to {end:.3f} in 300 steps"
    assert end < 2.6, f"after 300 steps the MLP LM should beat 2.6 nats, got {end:.3f}"


def test_demo_main_runs_the_trainer_on_a_file(tmp_path, capsys, rng):
    """``tinyllm demo`` is a run of the trainer: a run folder, the trainer's evaluations, the
    counting-bigram reference first and a sample at the end."""
    from tinyllm.demo import main

    path = tmp_path / "tiny.txt"
    path.write_text(markov_text(rng, 3000), encoding="utf-8")
    assert main(["--corpus-path", str(path), "--steps", "60", "--model", "bigram",
                 "--sample-chars", "40", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert out.count("val loss") >= 5 and "counting bigram" in out and "a sample" in out
    assert (tmp_path / "b" / "model.safetensors").is_file()
    assert main(["--corpus-path", str(path), "--steps", "30", "--context", "3",
                 "--eval-every", "10", "--sample-chars", "20", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "MLPLM" in out and out.count("val loss") >= 3
    assert main(["--corpus-path", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert main(["--steps", "-1"]) == 2  # argparse, one line
    assert "--steps: must be >= 0, got -1" in capsys.readouterr().err
