"""Grading tests of lesson 10: 10.1 top-p (nucleus) filtering, 10.2 the key/value cache update.

Top-p is checked against a loop that walks the tokens from the most probable, on random rows
(some entries already -inf, rows of different spread) and on exact dyadic probabilities where
the running sum hits ``top_p`` exactly; the cache against concatenation and against attention
over the whole sequence.
"""

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal

import tinyllm as tl
from tinyllm.models import top_p_filter
from tinyllm.nn import KVCache


def nucleus_by_loop(row, top_p):
    """The kept token ids: from the most probable, until the probabilities reach top_p."""
    p = np.exp(row - row.max())
    p /= p.sum()
    kept, total = [], 0.0
    for i in sorted(range(len(row)), key=lambda j: (-row[j], j)):
        if not np.isfinite(row[i]):
            break
        kept.append(i)
        total += p[i]
        if total >= top_p:
            break
    return sorted(kept)


def check_rows(name, logits, top_p, seed=None):
    out = top_p_filter(logits, top_p)
    assert_equal(f"{name}: the shape of the result", out.shape, logits.shape, seed)
    for r, (row_in, row_out) in enumerate(zip(logits.reshape(-1, logits.shape[-1]),
                                              out.reshape(-1, logits.shape[-1]))):
        kept = np.flatnonzero(np.isfinite(row_out)).tolist()
        assert_equal(f"{name}, row {r}: the tokens kept by top_p={top_p:.4g}", kept,
                     nucleus_by_loop(row_in, top_p), seed)
        assert_close(f"{name}, row {r}: the kept logits (unchanged)", row_out[kept],
                     row_in[kept], seed, atol=0, rtol=0)
        if not np.isneginf(row_out[~np.isfinite(row_out)]).all():
            assert_equal(f"{name}, row {r}: removed tokens", "-inf", "something else", seed)


@pytest.mark.exercise("10.1")
def test_10_1_top_p_fixed_example():
    lo = np.log(np.array([0.05, 0.5, 0.15, 0.3]))[None]
    before = lo.copy()
    for top_p in (0.1, 0.5 - 1e-9, 0.75, 0.85, 0.99, 1.0):
        check_rows("top_p_filter(log [0.05, 0.5, 0.15, 0.3])", lo, top_p)
    assert_close("the input of top_p_filter (must not be modified)", lo, before, atol=0, rtol=0)


@pytest.mark.exercise("10.1")
def test_10_1_top_p_random(rng):
    for _ in range(3):
        shape = (int(rng.integers(2, 6)), int(rng.integers(2, 60)))
        lo = rng.normal(size=shape) * rng.uniform(0.5, 4, size=(shape[0], 1))
        lo[0, int(rng.integers(0, shape[1]))] = -np.inf  # already filtered (e.g. by top-k)
        assert_close("top_p_filter(logits, 1.0) keeps every token", top_p_filter(lo, 1.0), lo,
                     rng, atol=0, rtol=0)
        for top_p in rng.uniform(0.01, 0.99, size=5):
            check_rows(f"top_p_filter of random ({shape[0]}, {shape[1]}) logits", lo,
                       float(top_p), rng)
        batched = rng.normal(size=(2,) + shape)
        check_rows(f"top_p_filter of (2, {shape[0]}, {shape[1]}) logits (any leading axes)",
                   batched, 0.7, rng)


# ---------------------------------------------------------------------- 10.2 KVCache.update
@pytest.mark.exercise("10.2")
def test_10_2_kv_cache_update_matches_concatenation(rng):
    for _ in range(3):
        b, h, d = (int(n) for n in rng.integers(1, 4, size=3))
        max_len = int(rng.integers(6, 20))
        cache = KVCache(max_len)
        ks, vs, total = [], [], 0
        while True:
            t = int(rng.integers(1, 5))
            if total + t > max_len:
                break
            k, v = rng.normal(size=(2, b, h, t, d)).astype(np.float32)
            ks.append(k)
            vs.append(v)
            total += t
            out_k, out_v = cache.update(k, v)
            what = f"KVCache({max_len}).update after {len(ks)} chunks ({total} positions)"
            assert_close(f"{what}: the keys", out_k, np.concatenate(ks, axis=2), rng, atol=0)
            assert_close(f"{what}: the values", out_v, np.concatenate(vs, axis=2), rng, atol=0)
            assert_equal(f"{what}: cache.length", cache.length, total, rng)
        with pytest.raises(ValueError, match="cache"):
            cache.update(*rng.normal(size=(2, b, h, max_len - total + 1, d)).astype(np.float32))


@pytest.mark.exercise("10.2")
def test_10_2_kv_cache_in_attention(rng):
    """A sequence fed one chunk at a time through the cache gives the full pass's output."""
    c, n_head = 8, 2
    tl.manual_seed(int(rng.integers(0, 2**31)))
    attn = tl.nn.MultiHeadAttention(c, n_head)
    for _ in range(2):
        t = int(rng.integers(3, 10))
        x = rng.normal(size=(2, t, c)).astype(np.float32)
        with tl.no_grad():
            full = attn(tl.tensor(x), is_causal=True).numpy()
            cache, outs, s = KVCache(t), [], 0
            while s < t:
                e = min(t, s + int(rng.integers(1, 4)))
                outs.append(attn(tl.tensor(x[:, s:e]), is_causal=True, cache=cache).numpy())
                s = e
        assert_close(f"causal attention over {t} positions fed in chunks through the cache",
                     np.concatenate(outs, axis=1), full, rng, atol=1e-5)
