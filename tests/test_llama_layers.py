"""The pieces of today's decoder: RoPE, RMSNorm, SwiGLU, repeat_kv and grouped-query attention.

Each Function is gradient-checked with central differences in float64 (``tl.gradcheck``) and
compared with PyTorch where PyTorch has the operation (forward and backward); the attention
module is compared with a NumPy re-implementation of Hugging Face's eager Llama attention, and
its key/value cache with the full forward pass.
"""

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import nn
from tinyllm.nn.llama_layers import (
    GroupedQueryAttention,
    LlamaBlock,
    RMSNorm,
    RotaryEmbedding,
    SwiGLUFeedForward,
)
from tinyllm.repeat_kv import repeat_kv
from tinyllm.rms_norm import rms_norm
from tinyllm.rope import apply_rope, rope_angles, rope_cos_sin, rotate_half
from tinyllm.swiglu import silu, swiglu


def t64(a, grad=True):
    return tl.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def np_rope(x, positions, base):
    """Hugging Face's rotate-half RoPE written out in NumPy (float64)."""
    d = x.shape[-1]
    inv = 1.0 / base ** (np.arange(0, d, 2) / d)
    ang = np.asarray(positions, dtype=np.float64)[:, None] * inv
    emb = np.concatenate([ang, ang], -1)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return x * np.cos(emb) + np.concatenate([-x2, x1], -1) * np.sin(emb)


# ---------------------------------------------------------------------------- RoPE
def test_rope_matches_the_formula_and_is_a_rotation(rng):
    b, h, t, d = 2, 3, int(rng.integers(2, 9)), 2 * int(rng.integers(1, 6))
    base = float(rng.uniform(10, 1e5))
    x = rng.standard_normal((b, h, t, d))
    pos = np.arange(3, 3 + t)
    cos, sin = rope_cos_sin(pos, d, base, dtype="float64")
    y = apply_rope(t64(x, False), cos, sin).numpy()
    np.testing.assert_allclose(y, np_rope(x, pos, base), atol=1e-12)
    # a rotation keeps each pair's length, hence the vector's norm
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    # position 0 is no rotation at all
    c0, s0 = rope_cos_sin(np.arange(1), d, base, dtype="float64")
    np.testing.assert_allclose(apply_rope(t64(x[..., :1, :], False), c0, s0).numpy(), x[..., :1, :])


def test_rope_scores_depend_only_on_the_offset(rng):
    d, base = 8, 10000.0
    q, k = rng.standard_normal(d), rng.standard_normal(d)

    def score(m, n, q=q, k=k):
        cos, sin = rope_cos_sin(np.array([m, n]), d, base, dtype="float64")
        rq = apply_rope(t64(q[None], False), cos[:1], sin[:1]).numpy()[0]
        rk = apply_rope(t64(k[None], False), cos[1:], sin[1:]).numpy()[0]
        return rq @ rk

    for m, n in [(5, 2), (9, 9), (0, 7)]:
        shift = int(rng.integers(1, 500))
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-9)
    # and it does depend on the offset: with q = k = ones the score is 2 sum_i cos(offset theta_i)
    # (a random q, k can make one step of offset change it by under 1e-3)
    ones = np.ones(d)
    want = [2 * np.cos(off * base ** (-np.arange(0, d, 2) / d)).sum() for off in (3, 2)]
    got = [score(5, 2, ones, ones), score(5, 3, ones, ones)]
    assert got == pytest.approx(want, abs=1e-12), f"scores at offsets 3 and 2: expected {want}, got {got}"
    assert abs(got[0] - got[1]) > 0.1


def test_rope_angles_use_the_base(rng):
    d = 2 * int(rng.integers(1, 8))
    pos = rng.integers(0, 1000, size=5)
    for base in (10000.0, 500000.0, float(rng.uniform(2, 100))):
        want = pos[:, None] * base ** (-np.arange(0, d, 2) / d)
        np.testing.assert_allclose(rope_angles(pos, d, base), want, rtol=1e-12)
    with pytest.raises(ValueError, match="even"):
        rope_angles(pos, 5)


def test_rope_gradcheck(rng):
    t, d = 4, 6
    cos, sin = rope_cos_sin(np.arange(t), d, 100.0, dtype="float64")
    x = t64(rng.standard_normal((2, 2, t, d)))
    assert tl.gradcheck(lambda a: apply_rope(a, cos, sin), x)


def test_rope_against_torch(rng):
    torch = pytest.importorskip("torch")
    t, d = 5, 8
    x = rng.standard_normal((2, 3, t, d)).astype(np.float32)
    cos, sin = rope_cos_sin(np.arange(t), d, 10000.0)
    xt = torch.tensor(x, requires_grad=True)

    def rot(z):  # transformers' rotate_half
        return torch.cat((-z[..., d // 2:], z[..., :d // 2]), dim=-1)

    yt = xt * torch.tensor(cos) + rot(xt) * torch.tensor(sin)
    g = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    xs = tl.tensor(x, requires_grad=True)
    y = apply_rope(xs, cos, sin)
    y.backward(g)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(xs.grad, xt.grad.numpy(), atol=1e-6)


def test_rotate_half_and_shape_errors():
    np.testing.assert_array_equal(rotate_half(np.array([1.0, 2.0, 3.0, 4.0])), [-3, -4, 1, 2])
    cos, sin = rope_cos_sin(np.arange(3), 4)
    with pytest.raises(ValueError, match=r"cos and sin tables of shape \(5, 4\)"):
        apply_rope(tl.zeros(1, 1, 5, 4), cos, sin)


def test_rotary_embedding_tables_slice_the_full_table():
    rope = RotaryEmbedding(head_dim=6, max_positions=16, base=77.0)
    like = np.zeros(1, np.float32)
    cos, sin = rope.tables(5, 3, like)
    want_cos, want_sin = rope_cos_sin(np.arange(5, 8), 6, 77.0)
    np.testing.assert_array_equal(cos, want_cos)
    np.testing.assert_array_equal(sin, want_sin)
    assert cos.dtype == np.float32 and rope.tables(0, 2, like.astype(np.float64))[0].dtype == np.float64
    beyond, _ = rope.tables(15, 4, like)  # past max_positions: computed, not sliced
    np.testing.assert_array_equal(beyond, rope_cos_sin(np.arange(15, 19), 6, 77.0)[0])


# ---------------------------------------------------------------------------- RMSNorm
def test_rms_norm_formula_and_gradcheck(rng):
    x0, w0 = rng.standard_normal((2, 3, 5)) * 3, rng.standard_normal(5)
    y = rms_norm(t64(x0, False), t64(w0, False), eps=1e-3).numpy()
    np.testing.assert_allclose(y, x0 / np.sqrt((x0 ** 2).mean(-1, keepdims=True) + 1e-3) * w0,
                               rtol=1e-12)
    assert tl.gradcheck(lambda x, w: rms_norm(x, w, eps=1e-3), t64(x0), t64(w0))
    with pytest.raises(ValueError, match=r"weight of shape \(5,\)"):
        rms_norm(t64(x0), t64(w0[:4]))


def test_rms_norm_against_torch(rng):
    torch = pytest.importorskip("torch")
    x0 = rng.standard_normal((4, 7, 16)).astype(np.float32)
    w0 = (1 + 0.3 * rng.standard_normal(16)).astype(np.float32)
    xt, wt = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    yt = torch.nn.functional.rms_norm(xt, (16,), wt, eps=1e-5)
    g = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    norm = RMSNorm(16, eps=1e-5)
    norm.weight.data = w0.copy()
    x = tl.tensor(x0, requires_grad=True)
    y = norm(x)
    y.backward(g)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), atol=2e-6)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), atol=2e-5)
    np.testing.assert_allclose(norm.weight.grad, wt.grad.numpy(), atol=2e-5)


# ---------------------------------------------------------------------------- SwiGLU
def test_swiglu_formula_gradcheck_and_large_inputs(rng):
    a0, b0 = rng.standard_normal((3, 6)) * 3, rng.standard_normal((3, 6))
    np.testing.assert_allclose(swiglu(t64(a0, False), t64(b0, False)).numpy(),
                               a0 / (1 + np.exp(-a0)) * b0, rtol=1e-12)
    assert tl.gradcheck(swiglu, t64(a0), t64(b0))
    assert tl.gradcheck(silu, t64(a0))
    with np.errstate(all="raise"):  # no overflow in exp for very negative gates
        y = silu(tl.tensor(np.array([-1e4, -80.0, 0.0, 80.0], np.float32))).numpy()
    np.testing.assert_allclose(y, [0, 0, 0, 80], atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        swiglu(t64(a0), t64(b0[:, :5]))


def test_swiglu_feed_forward_against_torch(rng):
    torch = pytest.importorskip("torch")
    tl.manual_seed(int(rng.integers(1000)))
    ff = SwiGLUFeedForward(8, 12, init_std=0.3)
    assert all(m.bias is None for m in (ff.gate_proj, ff.up_proj, ff.down_proj))
    x0 = rng.standard_normal((2, 5, 8)).astype(np.float32)
    tw = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in ff.named_parameters()}
    xt = torch.tensor(x0, requires_grad=True)
    lin = torch.nn.functional.linear
    yt = lin(torch.nn.functional.silu(lin(xt, tw["gate_proj.weight"])) * lin(xt, tw["up_proj.weight"]),
             tw["down_proj.weight"])
    g = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    x = tl.tensor(x0, requires_grad=True)
    y = ff(x)
    y.backward(g)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), atol=1e-5)
    for n, p in ff.named_parameters():
        np.testing.assert_allclose(p.grad, tw[n].grad.numpy(), atol=1e-5, err_msg=n)


# ---------------------------------------------------------------------------- repeat_kv
def test_repeat_kv_against_torch_and_gradcheck(rng):
    torch = pytest.importorskip("torch")
    x0 = rng.standard_normal((2, 3, 4, 5))
    for n_rep in (1, 2, 3):
        want = torch.repeat_interleave(torch.tensor(x0), n_rep, dim=1).numpy()
        np.testing.assert_array_equal(repeat_kv(t64(x0, False), n_rep).numpy(), want)
    assert tl.gradcheck(lambda x: repeat_kv(x, 3), t64(x0[:, :, :2, :2]))
    x = t64(x0)
    assert repeat_kv(x, 1) is x
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(x, 0)


# ---------------------------------------------------------------------------- attention
def np_llama_attention(x, attn, positions, base):
    """Hugging Face's eager LlamaAttention in NumPy: projections, rotate-half RoPE, repeat_kv,
    causal softmax(q k^T / sqrt(D)) v, o_proj."""
    w = {n: p.numpy().astype(np.float64) for n, p in attn.named_parameters()}
    b, t, c = x.shape
    h, kvh, d = attn.n_head, attn.n_kv_head, attn.head_dim
    q = (x @ w["q_proj.weight"].T).reshape(b, t, h, d).transpose(0, 2, 1, 3)
    k = (x @ w["k_proj.weight"].T).reshape(b, t, kvh, d).transpose(0, 2, 1, 3)
    v = (x @ w["v_proj.weight"].T).reshape(b, t, kvh, d).transpose(0, 2, 1, 3)
    q, k = np_rope(q, positions, base), np_rope(k, positions, base)
    k, v = np.repeat(k, h // kvh, axis=1), np.repeat(v, h // kvh, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + np.triu(np.full((t, t), -np.inf), 1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(b, t, c) @ w["o_proj.weight"].T


@pytest.mark.parametrize("n_head, n_kv_head", [(4, 4), (4, 2), (6, 1)])
def test_grouped_query_attention_matches_the_reference(rng, n_head, n_kv_head):
    tl.manual_seed(int(rng.integers(1000)))
    c, t, base = 4 * n_head, 6, 300.0
    attn = GroupedQueryAttention(c, n_head, n_kv_head, init_std=0.3)
    assert attn.k_proj.weight.shape == (n_kv_head * 4, c)
    x0 = rng.standard_normal((2, t, c)).astype(np.float32)
    cos, sin = rope_cos_sin(np.arange(t), 4, base)
    y = attn(tl.tensor(x0), cos, sin).numpy()
    np.testing.assert_allclose(y, np_llama_attention(x0.astype(np.float64), attn, np.arange(t), base),
                               atol=2e-5)


def test_kv_cache_holds_only_the_shared_heads_and_matches_the_full_pass(rng):
    tl.manual_seed(int(rng.integers(1000)))
    c, t, n_head, n_kv = 16, 7, 4, 2
    attn = GroupedQueryAttention(c, n_head, n_kv, init_std=0.3)
    rope = RotaryEmbedding(4, 32, 10000.0)
    x = tl.tensor(rng.standard_normal((3, t, c)).astype(np.float32))
    full = attn(x, *rope.tables(0, t, x.data)).numpy()
    cache = nn.KVCache(32)
    with tl.no_grad():
        parts = [attn(x[:, :4], *rope.tables(0, 4, x.data), cache=cache).numpy()]
        for i in range(4, t):
            parts.append(attn(x[:, i:i + 1], *rope.tables(i, 1, x.data), cache=cache).numpy())
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-5)
    assert cache.length == t and cache.k.shape == (3, n_kv, 32, 4) and cache.v.shape == cache.k.shape


def test_llama_block_gradcheck(rng):
    tl.manual_seed(int(rng.integers(1000)))
    block = LlamaBlock(8, 4, 2, 12, eps=1e-5, init_std=0.3).double()
    cos, sin = rope_cos_sin(np.arange(3), 2, 10000.0, dtype="float64")
    x = t64(rng.standard_normal((2, 3, 8)))
    assert tl.gradcheck(lambda a: block(a, cos, sin), x)


def test_llama_block_parameter_gradients(rng):
    """Each parameter's gradient against central differences (the whole block, float64)."""
    tl.manual_seed(int(rng.integers(1000)))
    block = LlamaBlock(8, 4, 1, 12, eps=1e-5, init_std=0.3).double()
    cos, sin = rope_cos_sin(np.arange(4), 2, 50.0, dtype="float64")
    x = t64(rng.standard_normal((1, 4, 8)), grad=False)
    g = rng.standard_normal((1, 4, 8))
    block.zero_grad()
    block(x, cos, sin).backward(g)
    for name, p in block.named_parameters():
        flat, want = p.data.reshape(-1), np.zeros(p.size)
        for i in rng.choice(p.size, size=min(p.size, 6), replace=False):
            old = flat[i]
            flat[i] = old + 1e-6
            up = float((block(x, cos, sin).numpy() * g).sum())
            flat[i] = old - 1e-6
            down = float((block(x, cos, sin).numpy() * g).sum())
            flat[i] = old
            want[i] = (up - down) / 2e-6
            assert p.grad.reshape(-1)[i] == pytest.approx(want[i], abs=1e-6, rel=1e-5), (name, i)
