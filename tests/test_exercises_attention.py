"""Grading tests of lesson 07's attention exercises: 07.1 the forward pass, 07.2 the causal mask,
07.3 the backward pass (07.4, the heads, is in test_exercises_nn.py).

The random cases cover what mistakes hide in: masks holding both values, a non-default
``scale``, large scores, keys and values shared across heads (broadcasting), dropout on (its
mask is the same on every call after ``tl.manual_seed``, so finite differences apply), and
inputs of which only some need a gradient.
"""

import math

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail, fd_grads

import tinyllm as tl
import tinyllm.functional as F


def np_attention(q, k, v, mask=None, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def qkv(rng, shared_kv=False):
    """q (B, H, T, D), k (B, H or 1, S, D), v (B, H or 1, S, Dv) with S >= T, H >= 2."""
    b, h = int(rng.integers(1, 3)), int(rng.integers(2, 4))
    t, d = (int(n) for n in rng.integers(2, 5, size=2))
    s = t + int(rng.integers(0, 3))
    hk = 1 if shared_kv else h
    return [rng.standard_normal(sh) for sh in [(b, h, t, d), (b, hk, s, d), (b, hk, s, d + 1)]]


def both_values_mask(rng, q, k):
    """A (B, 1, T, S) mask with True and False in it, never a fully masked row."""
    mask = rng.random((q.shape[0], 1, q.shape[2], k.shape[2])) < 0.6
    mask[..., 0] = True
    mask[0, 0, -1, -1] = False
    return mask


# ---------------------------------------------------------------------- 07.1 attention forward
@pytest.mark.exercise("07.1")
def test_07_1_attention_fixed_example():
    q = np.array([[1.0, 0.0]])
    k = np.array([[1.0, 0.0], [0.0, 1.0]])
    v = np.array([[1.0, 2.0], [3.0, 4.0]])
    e = math.exp(1 / math.sqrt(2))
    assert_close("attention of one query, two keys: softmax(q k^T / sqrt(2)) v",
                 F.scaled_dot_product_attention(tl.tensor(q), tl.tensor(k), tl.tensor(v)),
                 [[(e * 1 + 3) / (e + 1), (e * 2 + 4) / (e + 1)]])


@pytest.mark.exercise("07.1")
def test_07_1_attention_random(rng):
    t = tl.tensor
    for _ in range(3):
        for shared in (False, True):
            q, k, v = qkv(rng, shared)
            what = f"attention with q {q.shape}, k {k.shape}, v {v.shape}"
            assert_close(what, F.scaled_dot_product_attention(t(q), t(k), t(v)),
                         np_attention(q, k, v), rng)
            mask = both_values_mask(rng, q, k)
            assert_close(f"{what} and a boolean mask {mask.shape} (True = attend)",
                         F.scaled_dot_product_attention(t(q), t(k), t(v), mask=mask),
                         np_attention(q, k, v, mask), rng)
            scale = float(rng.uniform(0.1, 2.0))
            assert_close(f"{what} with scale={scale:.4g} (instead of 1/sqrt(D))",
                         F.scaled_dot_product_attention(t(q), t(k), t(v), scale=scale),
                         np_attention(q, k, v, scale=scale), rng)


@pytest.mark.exercise("07.1")
def test_07_1_attention_large_scores(rng):
    q, k, v = qkv(rng)
    for dtype in (np.float64, np.float32):
        big = (q * 300).astype(dtype)  # scores of thousands: exp overflows unless shifted
        kk = k.astype(dtype)
        out = F.scaled_dot_product_attention(tl.tensor(big), tl.tensor(kk),
                                             tl.tensor(v.astype(dtype))).numpy()
        if not np.all(np.isfinite(out)):
            fail(f"attention with scores in the thousands ({np.dtype(dtype).name})",
                 "the output has inf or NaN: subtract each row's maximum score before exp", rng)
        assert_close(f"attention with large scores ({np.dtype(dtype).name})", out,
                     np_attention(big.astype(np.float64), kk.astype(np.float64), v), rng,
                     atol=1e-4 if dtype == np.float32 else 1e-6, rtol=1e-3)


# ---------------------------------------------------------------------- 07.2 causal mask
@pytest.mark.exercise("07.2")
def test_07_2_causal_mask(rng):
    assert_equal("causal_mask(3)", np.asarray(F.causal_mask(3)).astype(int),
                 [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    for _ in range(5):
        t = int(rng.integers(1, 12))
        s = t + int(rng.integers(0, 6))
        m = np.asarray(F.causal_mask(t, s))
        if m.dtype != bool:
            fail(f"causal_mask({t}, {s})", f"must be boolean, got {m.dtype}", rng)
        want = np.array([[j <= i + (s - t) for j in range(s)] for i in range(t)]).reshape(t, s)
        assert_equal(f"causal_mask({t}, {s}): query i sees keys j <= i + (S - T)", m, want, rng)


# ---------------------------------------------------------------------- 07.3 attention backward
def attention_fn(seed, **kw):
    def fn(a, b, c):
        if kw.get("dropout_p"):
            tl.manual_seed(seed)  # the same dropout mask on every call
        return F.scaled_dot_product_attention(a, b, c, **kw)
    return fn


def check_attention_grads(rng, q, k, v, needs=(True, True, True), **kw):
    fn = attention_fn(int(rng.integers(2**31)), **kw)
    ts = [tl.tensor(a, requires_grad=n) for a, n in zip((q, k, v), needs)]
    out = fn(*ts)
    w = rng.standard_normal(out.shape)
    out.backward(tl.tensor(w))
    want = fd_grads(fn, [q, k, v], w, which=[i for i in range(3) if needs[i]])
    for name, tt, g, need in zip("qkv", ts, want, needs):
        what = (f"d attention / d{name} for q {q.shape}, k {k.shape}, v {v.shape}, "
                f"{kw or 'defaults'}, needs_grad {needs}")
        if need:
            assert_close(f"{what} (finite differences)", tt.grad, g, rng, atol=1e-6, rtol=1e-5)


@pytest.mark.exercise("07.3")
def test_07_3_attention_backward(rng):
    q, k, v = qkv(rng)
    check_attention_grads(rng, q, k, v)
    check_attention_grads(rng, q, k, v, mask=both_values_mask(rng, q, k))
    check_attention_grads(rng, q, k, v, scale=float(rng.uniform(0.2, 2.0)))


@pytest.mark.exercise("07.3")
def test_07_3_attention_backward_shared_keys_and_values(rng):
    """k and v (B, 1, S, D) broadcast over the heads: their gradients sum over the heads."""
    q, k, v = qkv(rng, shared_kv=True)
    check_attention_grads(rng, q, k, v, mask=both_values_mask(rng, q, k))
    q1, k1, v1 = qkv(rng)
    check_attention_grads(rng, q1[:1, :1], k1, v1)  # one query set for every batch and head


@pytest.mark.exercise("07.3")
def test_07_3_attention_backward_with_dropout(rng):
    q, k, v = qkv(rng)
    check_attention_grads(rng, q, k, v, dropout_p=float(rng.uniform(0.2, 0.5)))
    q, k, v = qkv(rng, shared_kv=True)
    check_attention_grads(rng, q, k, v, dropout_p=0.4, mask=both_values_mask(rng, q, k))


@pytest.mark.exercise("07.3")
def test_07_3_attention_backward_other_ranks(rng):
    """(T, D) and (B, T, D) inputs: the swapped axes are the last two, whatever the rank."""
    q, k, v = qkv(rng)
    check_attention_grads(rng, q[0, 0], k[0, 0], v[0, 0])
    check_attention_grads(rng, q[:, 0], k[:, 0], v[:, 0])


@pytest.mark.exercise("07.3")
def test_07_3_attention_backward_some_inputs(rng):
    q, k, v = qkv(rng)
    for needs in [(True, False, False), (False, True, False), (False, False, True),
                  (True, True, False), (False, True, True)]:
        check_attention_grads(rng, q, k, v, needs=needs)
