"""Generation: greedy, sampling filters (exercise 10.1: top-p), beam search, the KV cache
(exercise 10.2: KVCache.update), seeds and errors."""

import itertools

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.models import GPT, GPTConfig, beam_search, top_k_filter, top_p_filter


def tiny(seed=0, device="cpu", **kw):
    tl.manual_seed(seed)
    cfg = {**dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16), **kw}
    model = GPT(GPTConfig(**cfg))
    for p in model.parameters():  # larger weights: peaked, varied distributions
        if p.ndim == 2:
            p.data *= 6
    return model.to(device)


def prompt(rng, b=2, t=4, v=13):
    return rng.integers(0, v, size=(b, t))


def log_probs(model, seqs):
    """log softmax of the full-sequence logits, float64 (no cache, no generation code)."""
    with tl.no_grad():
        lo = model.eval()(seqs).numpy().astype(np.float64)
    lo -= lo.max(-1, keepdims=True)
    return lo - np.log(np.exp(lo).sum(-1, keepdims=True))


def greedy_by_hand(model, ids, n, block):
    """``n`` greedy tokens after ``ids``, each from a full forward pass of the last ``block``
    tokens (no cache, no generation code)."""
    ref = ids.copy()
    with tl.no_grad():
        for _ in range(n):
            nxt = model(ref[:, -block:]).numpy()[:, -1].argmax(-1)
            ref = np.concatenate([ref, nxt[:, None]], 1)
    return ref


# ---------------------------------------------------------------------------- greedy
def test_greedy_is_argmax_loop(rng, device):
    model = tiny(device=device)
    x = prompt(rng)
    out = model.generate(x, 20)  # 4 + 20 > block_size 16: the context gets cropped
    assert out.dtype == np.int64 and out.shape == (2, 24)
    np.testing.assert_array_equal(out, greedy_by_hand(model, x, 20, 16))


@pytest.mark.parametrize("kw", [
    dict(),
    dict(do_sample=True, seed=3),
    dict(do_sample=True, seed=4, top_k=4, top_p=0.8, temperature=0.7, num_return_sequences=3),
    dict(num_beams=3, num_return_sequences=2),
    dict(num_beams=4, eos_token_id=2, pad_token_id=1),
    dict(eos_token_id=5),
])
@pytest.mark.parametrize("new", [6, 18])  # 18: past block_size, the cache falls back
def test_cache_gives_same_tokens(rng, kw, new, device):
    model = tiny(1, device)
    x = prompt(rng)
    with_cache = model.generate(x, new, use_cache=True, **kw)
    without = model.generate(x, new, use_cache=False, **kw)
    np.testing.assert_array_equal(with_cache, without)


def test_mode_restored_and_no_graph(rng):
    model = tiny(dropout=0.3)
    model.train()
    model.blocks[0].eval()
    out = model.generate(prompt(rng), 5)
    assert model.training and not model.blocks[0].training and model.blocks[1].training
    assert isinstance(out, np.ndarray) and out.dtype == np.int64
    assert all(p.grad is None for p in model.parameters())


def test_generate_in_train_mode_is_eval(rng):
    model = tiny(2, dropout=0.5)
    x = prompt(rng)
    model.train()
    a = model.generate(x, 8)
    model.eval()
    np.testing.assert_array_equal(a, model.generate(x, 8))


def test_eos_stops_and_pads(rng):
    model = tiny(3)
    x = prompt(rng, b=3)
    free = model.generate(x, 12)
    eos = int(free[0, 6])  # row 0 makes this token at step 2
    out = model.generate(x, 12, eos_token_id=eos, pad_token_id=0)
    for row, ref in zip(out, free):
        new = ref[4:]
        hit = np.flatnonzero(new == eos)
        if hit.size:
            stop = 4 + hit[0] + 1
            np.testing.assert_array_equal(row[:stop], ref[:stop])
            assert (row[stop:] == 0).all()
        else:
            np.testing.assert_array_equal(row, ref[:len(row)])
    if all((r[4:] == eos).any() for r in free):  # every row finished: the output is shorter
        assert out.shape[1] < 16


# ---------------------------------------------------------------------------- sampling
def test_seed_reproducible(rng):
    model = tiny(4)
    x = prompt(rng)
    a = model.generate(x, 15, do_sample=True, seed=11)
    np.testing.assert_array_equal(a, model.generate(x, 15, do_sample=True, seed=11))
    assert not np.array_equal(a, model.generate(x, 15, do_sample=True, seed=12))
    tl.manual_seed(5)
    b = model.generate(x, 15, do_sample=True)
    tl.manual_seed(5)
    np.testing.assert_array_equal(b, model.generate(x, 15, do_sample=True))


def test_sampling_limits(rng):
    model = tiny(5)
    x = prompt(rng)
    greedy = model.generate(x, 10)
    np.testing.assert_array_equal(model.generate(x, 10, do_sample=True, top_k=1, seed=0), greedy)
    np.testing.assert_array_equal(model.generate(x, 10, do_sample=True, top_p=1e-6, seed=0), greedy)
    np.testing.assert_array_equal(model.generate(x, 10, do_sample=True, temperature=1e-4, seed=0),
                                  greedy)


def test_sampling_follows_the_distribution():
    """One step from a fixed prompt, many rows: token frequencies match softmax(logits / T)."""
    model = tiny(6)
    x = np.tile(np.array([[1, 2, 3]]), (4000, 1))
    out = model.generate(x, 1, do_sample=True, temperature=2.0, top_k=5, seed=0)[:, -1]
    lo = log_probs(model, x[:1])[0, -1] / 2.0
    keep = np.argsort(-lo)[:5]
    p = np.zeros_like(lo)
    p[keep] = np.exp(lo[keep] - lo[keep].max())
    p /= p.sum()
    freq = np.bincount(out, minlength=13) / len(out)
    assert set(np.flatnonzero(freq)) <= set(keep)
    np.testing.assert_allclose(freq, p, atol=0.03)


def test_top_k_filter():
    lo = np.array([[1.0, 3.0, 2.0, 3.0, -1.0], [0.0, 0.0, 0.0, 0.0, 5.0]])
    out = top_k_filter(lo, 2)
    np.testing.assert_array_equal(np.isfinite(out), [[0, 1, 0, 1, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(out[np.isfinite(out)], lo[np.isfinite(out)])
    np.testing.assert_array_equal(top_k_filter(lo, 9), lo)
    r = np.random.default_rng(0).normal(size=(7, 30))
    for k in (1, 5, 29):
        kept = np.isfinite(top_k_filter(r, k))
        assert (kept.sum(-1) == k).all()
        assert (np.where(kept, r, np.inf).min(-1) >= np.where(kept, -np.inf, r).max(-1)).all()


def _nucleus_by_loop(row, top_p):
    """Independent top-p: walk the tokens from the most probable, summing probabilities."""
    p = np.exp(row - row.max())
    p /= p.sum()
    kept, total = [], 0.0
    for i in sorted(range(len(row)), key=lambda j: -row[j]):
        kept.append(i)
        total += p[i]
        if total >= top_p:
            break
    return sorted(kept)


def test_top_p_filter_fixed_example():
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    lo = np.log(probs)[None]
    for top_p, kept in [(0.1, [1]), (0.5 - 1e-9, [1]), (0.75, [1, 3]), (0.85, [1, 2, 3]),
                        (0.99, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])]:
        out = top_p_filter(lo, top_p)
        assert np.flatnonzero(np.isfinite(out[0])).tolist() == kept, top_p
        np.testing.assert_array_equal(out[np.isfinite(out)], lo[np.isfinite(out)])
        assert np.isneginf(out[~np.isfinite(out)]).all()
    assert lo[0, 0] == np.log(0.05)  # the input is not modified


def test_top_p_filter_random(rng):
    shape = (int(rng.integers(1, 6)), int(rng.integers(2, 60)))
    lo = rng.normal(scale=rng.uniform(0.5, 4), size=shape)
    lo[0, int(rng.integers(0, shape[1]))] = -np.inf  # already filtered (e.g. by top-k)
    np.testing.assert_array_equal(top_p_filter(lo, 1.0), lo)  # 1.0 keeps every token
    for top_p in rng.uniform(0.01, 0.99, size=6):
        out = top_p_filter(lo, float(top_p))
        assert out.shape == lo.shape
        for row_in, row_out in zip(lo, out):
            kept = np.flatnonzero(np.isfinite(row_out)).tolist()
            assert kept == _nucleus_by_loop(row_in, top_p), top_p
            np.testing.assert_array_equal(row_out[kept], row_in[kept])
    batched = top_p_filter(lo[None], 0.7)[0]  # any leading axes
    np.testing.assert_array_equal(batched, top_p_filter(lo, 0.7))


# ---------------------------------------------------------------------------- beam search
def test_beam_one_is_greedy(rng):
    model = tiny(7)
    x = prompt(rng, b=3)
    with tl.no_grad():
        seqs, _ = beam_search(model.eval(), x, 10, num_beams=1)
    np.testing.assert_array_equal(seqs, model.generate(x, 10))


@pytest.mark.parametrize("steps", [2, 3])
def test_beam_search_finds_best_by_brute_force(rng, steps, device):
    v = 3
    model = tiny(8, device, vocab_size=v, block_size=8)
    x = prompt(rng, b=2, t=2, v=v)
    n = v ** steps
    with tl.no_grad():
        seqs, scores = beam_search(model.eval(), x, steps, num_beams=n, num_return_sequences=n)
    np.testing.assert_array_equal(model.generate(x, steps, num_beams=n, num_return_sequences=n),
                                  seqs)
    for b in range(2):
        conts = np.array(list(itertools.product(range(v), repeat=steps)))
        full = np.concatenate([np.repeat(x[b:b + 1], len(conts), 0), conts], 1)
        lp = log_probs(model, full)
        total = np.array([lp[i, np.arange(1, 1 + steps), conts[i]].sum() for i in range(len(conts))])
        order = np.argsort(-total, kind="stable")
        got = seqs[b * n:(b + 1) * n]
        np.testing.assert_array_equal(got[0], full[order[0]])  # the best sequence is found
        # and every sequence comes back once, in score order (sum / length, length_penalty=1)
        assert len({tuple(s) for s in got}) == n
        np.testing.assert_allclose(scores[b * n:(b + 1) * n], total[order] / steps, atol=1e-5)


def test_beam_scores_are_length_normalised(rng):
    model = tiny(9)
    x = prompt(rng)
    with tl.no_grad():
        seqs, scores = beam_search(model.eval(), x, 5, num_beams=3, num_return_sequences=3)
    lp = log_probs(model, seqs)
    total = np.array([lp[i, np.arange(3, 8), seqs[i, 4:]].sum() for i in range(len(seqs))])
    np.testing.assert_allclose(scores, total / 5, atol=1e-5)
    assert (np.diff(scores.reshape(2, 3), axis=1) <= 0).all()  # best first


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, match", [
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_k=0), "top_k"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences=3"),
    (dict(num_return_sequences=2), "greedy"),
    (dict(num_beams=2, do_sample=True), "beam"),
    (dict(num_beams=0), "num_beams"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(eos_token_id=-2), "eos_token_id"),
])
def test_errors(rng, kw, match):
    model = tiny()
    kw = {"max_new_tokens": 3, **kw}
    with pytest.raises(ValueError, match=match):
        model.generate(prompt(rng), **kw)


def test_idx_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model.generate(np.array([1, 2, 3]), 2)
    with pytest.raises(TypeError, match="integer"):
        model.generate(np.zeros((1, 3)), 2)
    with pytest.raises(ValueError, match="token id 13"):
        model.generate(np.array([[1, 13]]), 2)
    assert model.generate(np.array([[1, 2]]), 0).tolist() == [[1, 2]]


# KVCache.update (exercise 10.2) is tested in test_exercises_decoding.py.


# Attention through the cache, fed in chunks, is exercise 10.2's test (test_exercises_decoding.py).


def test_prompt_longer_than_block(rng):
    model = tiny(10, block_size=6)
    x = prompt(rng, t=9)
    out = model.generate(x, 4)
    np.testing.assert_array_equal(out, model.generate(x, 4, use_cache=False))
    np.testing.assert_array_equal(out, greedy_by_hand(model, x, 4, 6))
