"""Grading tests of lesson 12: 12.1 cross-attention, 12.2 the decoder's masks, 12.3 teacher
forcing's shifted input and target.

Cross-attention is compared with NumPy using the layer's own weights, with padding masks of
both values, dropout set on the layer (it must be off in eval mode) and gradients by finite
differences; the masks and the collated batches with loops over positions.
"""

import math

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail, fd_grads

import tinyllm as tl
from tinyllm.data import collate_seq2seq
from tinyllm.models.transformer import (
    CrossAttention,
    cross_attention,
    make_masks,
    memory_keys_values,
)


# ---------------------------------------------------------------------- 12.1 cross-attention
def cross_reference(x, mem, attn, mask):
    """Cross-attention in NumPy with the weights of ``attn``: (out, weights)."""
    w = {n: p.numpy().astype(np.float64) for n, p in attn.named_parameters()}
    b, t, c = x.shape
    s, h = mem.shape[1], attn.n_head
    d = c // h
    q = x @ w["q.weight"].T + w["q.bias"]
    kv = mem @ w["kv.weight"].T + w["kv.bias"]
    k, v = kv[..., :c], kv[..., c:]
    heads = lambda a, n: a.reshape(b, n, h, d).transpose(0, 2, 1, 3)
    q, k, v = heads(q, t), heads(k, s), heads(v, s)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    scores = np.where(mask, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = (p @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
    return out @ w["proj.weight"].T + w["proj.bias"], p


def padding_mask(rng, b, s):
    lengths = rng.integers(1, s + 1, size=b)
    lengths[0] = max(1, s - 1) if s > 1 else 1  # some padding in the first row
    return (np.arange(s)[None, :] < lengths[:, None])[:, None, None, :]


def check_cross(rng, b, t, s, h, d, mask, dropout=0.0):
    c = h * d
    tl.manual_seed(int(rng.integers(1 << 30)))
    attn = CrossAttention(c, h, dropout=dropout).eval()
    x = rng.standard_normal((b, t, c)).astype(np.float32)
    mem = rng.standard_normal((b, s, c)).astype(np.float32)
    want, want_p = cross_reference(x.astype(np.float64), mem.astype(np.float64), attn, mask)
    what = f"cross-attention of x {x.shape} to memory {mem.shape}, {h} heads" + \
        (f", dropout {dropout} in eval mode" if dropout else "")
    k, v = memory_keys_values(attn, tl.tensor(mem))
    assert_equal(f"{what}: the shapes of the keys and values (B, H, S, D)",
                 (tuple(k.shape), tuple(v.shape)), ((b, h, s, d), (b, h, s, d)), rng)
    y, weights = cross_attention(attn, tl.tensor(x), k, v, mask=mask)
    assert_close(f"{what}: the output", y, want, rng, atol=1e-5, rtol=1e-4)
    assert_close(f"{what}: the attention weights", weights, want_p, rng, atol=1e-6)
    assert_close(f"{what}: the output through the module", attn(tl.tensor(x),
                 memory=tl.tensor(mem), mask=mask), want, rng, atol=1e-5, rtol=1e-4)


@pytest.mark.exercise("12.1")
def test_12_1_cross_attention_fixed_example():
    rng = np.random.default_rng(0)
    mask = np.array([True, True, False, True])[None, None, None, :].repeat(2, 0)
    check_cross(rng, b=2, t=3, s=4, h=2, d=4, mask=mask)


@pytest.mark.exercise("12.1")
def test_12_1_cross_attention_random(rng):
    for _ in range(4):
        b, t, s, d = (int(n) for n in rng.integers(1, 6, size=4))
        s += 1
        h = int(rng.choice([1, 2, 4]))
        check_cross(rng, b, t, s, h, d, padding_mask(rng, b, s))
    b, t, s = 2, 3, 5
    check_cross(rng, b, t, s, 2, 3, padding_mask(rng, b, s), dropout=0.5)


@pytest.mark.exercise("12.1")
def test_12_1_cross_attention_dropout_in_training(rng):
    """In training mode the attention weights go through dropout: outputs differ between two
    seeds, and equal the reference when dropout is 0."""
    c, h, b, t, s = 8, 2, 2, 3, 6
    tl.manual_seed(1)
    attn = CrossAttention(c, h, dropout=0.5).train()
    x = tl.tensor(rng.standard_normal((b, t, c)).astype(np.float32))
    mem = tl.tensor(rng.standard_normal((b, s, c)).astype(np.float32))
    outs = []
    for seed in (1, 2):
        tl.manual_seed(seed)
        outs.append(cross_attention(attn, x, *memory_keys_values(attn, mem))[0].numpy())
    attn.resid_dropout.p = 0.0  # only the attention dropout is left
    tl.manual_seed(3)
    y = cross_attention(attn, x, *memory_keys_values(attn, mem))[0].numpy()
    if np.allclose(outs[0], outs[1]) or np.allclose(y, cross_attention(
            attn.eval(), x, *memory_keys_values(attn, mem))[0].numpy()):
        fail("cross-attention in training mode with dropout 0.5",
             "gives the same output with different seeds or as in eval mode: pass the "
             "layer's dropout probability p to the attention", rng)


@pytest.mark.exercise("12.1")
def test_12_1_cross_attention_gradients(rng):
    tl.manual_seed(1)
    attn = CrossAttention(4, 2).double()
    x, mem = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)[:, None, None, :]
    fn = lambda a, m: cross_attention(attn, a, *memory_keys_values(attn, m), mask=mask)[0]
    ts = [tl.tensor(a, requires_grad=True) for a in (x, mem)]
    out = fn(*ts)
    w = rng.standard_normal(out.shape)
    out.backward(tl.tensor(w))
    for name, t, g in zip(("the decoder input x", "the encoder memory"), ts,
                          fd_grads(fn, [x, mem], w)):
        assert_close(f"gradient of cross-attention with respect to {name} (finite "
                     "differences)", t.grad, g, rng, atol=1e-6)


# ---------------------------------------------------------------------- 12.2 make_masks
def masks_reference(src, tgt, pad):
    b, s = src.shape
    t = tgt.shape[1]
    sm = np.zeros((b, 1, 1, s), dtype=bool)
    tm = np.zeros((b, 1, t, t), dtype=bool)
    for i in range(b):
        for j in range(s):
            sm[i, 0, 0, j] = src[i, j] != pad
        for q in range(t):
            for k in range(t):
                tm[i, 0, q, k] = k <= q and tgt[i, k] != pad
    return sm, tm


@pytest.mark.exercise("12.2")
def test_12_2_make_masks_fixed_example():
    src = np.array([[5, 6, 7], [5, 0, 0]])
    tgt = np.array([[1, 8, 9], [1, 8, 0]])
    sm, tm = make_masks(src, tgt, pad_id=0)
    want_s, want_t = masks_reference(src, tgt, 0)
    assert_equal("src_mask of [[5, 6, 7], [5, 0, 0]] (pad 0)", np.asarray(sm), want_s)
    assert_equal("tgt_mask of [[1, 8, 9], [1, 8, 0]] (causal and padding)", np.asarray(tm),
                 want_t)


@pytest.mark.exercise("12.2")
def test_12_2_make_masks_random(rng):
    for _ in range(6):
        b, s, t = (int(n) for n in rng.integers(2, 8, size=3))
        pad = int(rng.integers(0, 4))
        src = rng.integers(0, 6, size=(b, s))
        tgt = rng.integers(0, 6, size=(b, t))
        src[0, -1], tgt[0, -1] = pad, pad
        sm, tm = make_masks(src, tgt, pad)
        want_s, want_t = masks_reference(src, tgt, pad)
        what = f"make_masks of src {src.shape}, tgt_in {tgt.shape}, pad_id {pad}"
        for name, m in (("src_mask", sm), ("tgt_mask", tm)):
            if np.asarray(m).dtype != bool:
                fail(f"{what}: {name}", f"must be boolean, got {np.asarray(m).dtype}", rng)
        assert_equal(f"{what}: src_mask, broadcast to (B, 1, 1, S)",
                     np.broadcast_to(sm, want_s.shape), want_s, rng)
        assert_equal(f"{what}: tgt_mask (B, 1, T, T)", np.asarray(tm), want_t, rng)


# ---------------------------------------------------------------------- 12.3 teacher forcing
@pytest.mark.exercise("12.3")
def test_12_3_teacher_forcing_fixed_example():
    b = collate_seq2seq([([5, 6, 7], [7, 6, 5]), ([8], [9, 9])], pad_id=0, bos_id=1, eos_id=2)
    assert_equal("tgt_in of the targets [7, 6, 5] and [9, 9] (<bos> then the target)",
                 b["tgt_in"], [[1, 7, 6, 5], [1, 9, 9, 0]])
    assert_equal("tgt_out of the targets [7, 6, 5] and [9, 9] (the target then <eos>)",
                 b["tgt_out"], [[7, 6, 5, 2], [9, 9, 2, 0]])


@pytest.mark.exercise("12.3")
def test_12_3_teacher_forcing_random(rng):
    for _ in range(5):
        pad, bos, eos = (int(i) for i in rng.permutation(3) + int(rng.integers(0, 3)))
        pairs = [(rng.integers(3, 20, size=int(rng.integers(1, 7))).tolist(),
                  rng.integers(3, 20, size=int(rng.integers(0, 8))).tolist())
                 for _ in range(int(rng.integers(1, 6)))]
        got = collate_seq2seq(pairs, pad, bos, eos)
        t = max(len(tg) for _, tg in pairs) + 1
        want_in = np.full((len(pairs), t), pad)
        want_out = np.full((len(pairs), t), pad)
        for i, (_, tg) in enumerate(pairs):
            for j in range(len(tg) + 1):  # position j reads tgt_in[j] and predicts tgt_out[j]
                want_in[i, j] = bos if j == 0 else tg[j - 1]
                want_out[i, j] = tg[j] if j < len(tg) else eos
        what = f"collate_seq2seq of {len(pairs)} pairs (pad {pad}, bos {bos}, eos {eos})"
        assert_equal(f"{what}: tgt_in", got["tgt_in"], want_in, rng)
        assert_equal(f"{what}: tgt_out", got["tgt_out"], want_out, rng)
