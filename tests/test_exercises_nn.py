"""Exercise tests for nn: 04.2 named_parameters, 06.2 sinusoidal_table, 07.4
split_heads/merge_heads, 08.2 TransformerBlock.forward (the optimizers' 04.3 and 04.4 are in
test_exercises_optim.py).

Each draws fresh random shapes and values from the ``rng`` fixture (the seed is printed; replay
with TINYLLM_TEST_SEED=<seed>) besides one fixed example, and computes what it expects on its
own: walking a tree description, NumPy re-implementations, the paper's formula, or the block's
sub-modules called one by one.
"""

from __future__ import annotations

import math

import exercise_asserts
import numpy as np
import pytest

import tinyllm as tl
from tinyllm import nn


def assert_close(got, want, atol=1e-6, what="result"):
    exercise_asserts.assert_close(what, got, want, atol=atol, rtol=1e-5)


# ============================================================================ 04.2
class Node(nn.Module):
    def forward(self, x):
        return x


def _new_param(rng):
    shape = tuple(int(n) for n in rng.integers(1, 4, size=rng.integers(1, 3)))
    return nn.Parameter(rng.standard_normal(shape).astype(np.float32))


def build_tree(rng, depth=0, pool=None):
    """A random module tree and its description: [(kind, name, payload)] in assignment order,
    kind 'param' (payload the Parameter) or 'module' (payload (module, description)).
    Some parameters are re-used from ``pool`` (tied weights)."""
    pool = [] if pool is None else pool
    mod, desc = Node(), []
    n_items = int(rng.integers(1, 5))
    for k in range(n_items):
        if depth < 3 and rng.random() < 0.45:
            name = f"m{k}"
            child, child_desc = build_tree(rng, depth + 1, pool)
            setattr(mod, name, child)
            desc.append(("module", name, (child, child_desc)))
        else:
            name = f"p{k}"
            if pool and rng.random() < 0.25:
                p = pool[int(rng.integers(len(pool)))]  # a tied weight
            else:
                p = _new_param(rng)
                pool.append(p)
            setattr(mod, name, p)
            desc.append(("param", name, p))
        if rng.random() < 0.2:
            setattr(mod, f"note{k}", float(rng.random()))  # not a parameter or module
    return mod, desc


def expected_names(desc, prefix=""):
    """Own parameters first (assignment order), then each child's, depth first; each once."""
    out, seen = [], set()

    def walk(d, pre):
        for kind, name, payload in d:
            if kind == "param" and id(payload) not in seen:
                seen.add(id(payload))
                out.append((pre + name, payload))
        for kind, name, payload in d:
            if kind == "module":
                walk(payload[1], f"{pre}{name}.")

    walk(desc, prefix)
    return out


def check_named_parameters(mod, want, prefix=""):
    got = list(mod.named_parameters(prefix) if prefix else mod.named_parameters())
    got_names, want_names = [n for n, _ in got], [n for n, _ in want]
    assert got_names == want_names, (f"named_parameters() gave names\n  {got_names}\n"
                                     f"expected (own first, then children in assignment order, "
                                     f"tied weights once)\n  {want_names}")
    for (n, p), (_, q) in zip(got, want):
        assert p is q, f"{n}: yielded a different object than the Parameter assigned there"


@pytest.mark.exercise("04.2")
def test_named_parameters_fixed_example():
    class Block(nn.Module):
        def __init__(self, shared):
            super().__init__()
            self.w = nn.Parameter(np.ones((2, 2), np.float32))
            self.tied = shared

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Parameter(np.zeros((3, 2), np.float32))
            self.first = Block(self.emb)
            self.second = Block(self.emb)
            self.out = nn.Parameter(np.zeros(2, np.float32))

    m = Model()
    names = [n for n, _ in m.named_parameters()]
    want = ["emb", "out", "first.w", "second.w"]
    assert names == want, f"expected {want}, got {names}"
    assert [n for n, _ in m.first.named_parameters("x")] == ["x.w", "x.tied"]
    assert m.num_parameters() == 6 + 2 + 4 + 4


@pytest.mark.exercise("04.2")
@pytest.mark.parametrize("trial", range(5))
def test_named_parameters_random_trees(rng, trial):
    mod, desc = build_tree(rng)
    check_named_parameters(mod, expected_names(desc))
    check_named_parameters(mod, expected_names(desc, "root."), prefix="root")
    got = list(mod.parameters())
    assert len(got) == len({id(p) for p in got}), "parameters() yielded a tied weight twice"


# ============================================================================ 06.2
def paper_table(n, d, base=10000.0):
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(pos / base^(2i/d))."""
    pe = np.zeros((n, d))
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / base ** (2 * i / d)
            pe[pos, 2 * i], pe[pos, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return pe


@pytest.mark.exercise("06.2")
def test_sinusoidal_fixed_example():
    t = nn.sinusoidal_table(3, 4)
    want = [[0, 1, 0, 1],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]]
    assert_close(t, want, what="sinusoidal_table(3, 4)")
    assert t.dtype == np.float32, f"the table should be float32, is {t.dtype}"


@pytest.mark.exercise("06.2")
@pytest.mark.parametrize("trial", range(4))
def test_sinusoidal_random_sizes(rng, trial):
    n, d = int(rng.integers(1, 80)), 2 * int(rng.integers(1, 40))
    base = 10000.0 if trial < 2 else float(rng.uniform(100, 50000))
    got = nn.sinusoidal_table(n, d, base=base)
    assert_close(got, paper_table(n, d, base), atol=3e-6,
                 what=f"sinusoidal_table({n}, {d}, base={base:.6g}) vs the paper's formula")


# ============================================================================ 07.4
@pytest.mark.exercise("07.4")
def test_split_merge_fixed_example():
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 4)  # B=1, T=2, C=4, 2 heads of 2
    heads = nn.split_heads(tl.tensor(x), 2).numpy()
    want = [[[[0, 1], [4, 5]], [[2, 3], [6, 7]]]]
    assert_close(heads, want, what="split_heads(arange(8).reshape(1, 2, 4), 2): head 0 takes "
                 "channels 0-1 of every position, head 1 channels 2-3")
    assert_close(nn.merge_heads(tl.tensor(np.array(want, np.float32))).numpy(), x,
                 what="merge_heads of the fixed example")


@pytest.mark.exercise("07.4")
@pytest.mark.parametrize("trial", range(4))
def test_split_merge_random(rng, trial):
    b, t, h, d = (int(n) for n in rng.integers(1, 6, size=4))
    x = rng.standard_normal((b, t, h * d)).astype(np.float32)
    want = x.reshape(b, t, h, d).transpose(0, 2, 1, 3)
    xt = tl.tensor(x, requires_grad=True)
    heads = nn.split_heads(xt, h)
    assert_close(heads.numpy(), want, what=f"split_heads of a {(b, t, h * d)} input into {h} heads")
    w = rng.standard_normal(want.shape).astype(np.float32)
    (heads * tl.tensor(w)).sum().backward()
    assert xt.grad is not None, "no gradient reached the input of split_heads"
    assert_close(xt.grad, w.transpose(0, 2, 1, 3).reshape(b, t, h * d),
                 what="gradient through split_heads")
    y = rng.standard_normal((b, h, t, d)).astype(np.float32)
    merged = nn.merge_heads(tl.tensor(y)).numpy()
    assert_close(merged, y.transpose(0, 2, 1, 3).reshape(b, t, h * d),
                 what=f"merge_heads of a {(b, h, t, d)} input")
    assert_close(nn.merge_heads(nn.split_heads(tl.tensor(x), h)).numpy(), x,
                 what="merge_heads(split_heads(x)) must give x back")


# ============================================================================ 08.2
def _random_block(rng, norm_first, cross):
    h, hd = int(rng.integers(1, 4)), int(rng.integers(2, 5))  # C >= 2: a LayerNorm of one
    # channel outputs its bias whatever the input, which would hide the residual paths
    c = h * hd
    block = nn.TransformerBlock(c, h, d_ff=int(rng.integers(2, 12)), norm_first=norm_first,
                                cross_attention=cross, activation=str(rng.choice(["gelu", "relu"])))
    for p in block.parameters():  # weights of order 1: every path counts
        if p.ndim == 2:
            p.data[:] = rng.standard_normal(p.shape).astype(np.float32) / math.sqrt(p.shape[1])
    for ln in [m for m in block.modules() if isinstance(m, nn.LayerNorm)]:
        ln.weight.data[:] = 1 + 0.5 * rng.standard_normal(c)
        ln.bias.data[:] = 0.5 * rng.standard_normal(c)
    return block, c


def block_by_hand(block, x, norm_first, mask=None, is_causal=False, memory=None):
    """The block's formula from its own sub-modules, called one at a time."""
    attn = lambda h: block.attn(h, mask=mask, is_causal=is_causal)
    cross = lambda h: block.cross_attn(h, memory=memory)
    if norm_first:
        x = x + attn(block.ln_1(x))
        if memory is not None:
            x = x + cross(block.ln_cross(x))
        return x + block.mlp(block.ln_2(x))
    x = block.ln_1(x + attn(x))
    if memory is not None:
        x = block.ln_cross(x + cross(x))
    return block.ln_2(x + block.mlp(x))


def check_block(block, x, norm_first, w, **kw):
    name = "pre-LN" if norm_first else "post-LN"
    xa = tl.tensor(x, requires_grad=True)
    got = block(xa, **kw)
    (got * tl.tensor(w)).sum().backward()
    grads = {n: p.grad.copy() for n, p in block.named_parameters()}
    block.zero_grad()
    xb = tl.tensor(x, requires_grad=True)
    want = block_by_hand(block, xb, norm_first, **kw)
    (want * tl.tensor(w)).sum().backward()
    assert_close(got.numpy(), want.numpy(), atol=1e-5, what=f"{name} block output")
    assert_close(xa.grad, xb.grad, atol=1e-5, what=f"{name} block gradient w.r.t. its input")
    for n, p in block.named_parameters():
        assert_close(grads[n], p.grad, atol=1e-5, what=f"{name} block gradient of {n}")


@pytest.mark.exercise("08.2")
@pytest.mark.parametrize("norm_first", [True, False])
def test_block_fixed_example(norm_first):
    tl.manual_seed(0)
    rng = np.random.default_rng(0)
    block, c = _random_block(rng, norm_first, cross=False)
    x = rng.standard_normal((2, 3, c)).astype(np.float32)
    check_block(block, x, norm_first, np.ones((2, 3, c), np.float32), is_causal=True)


@pytest.mark.exercise("08.2")
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("cross", [False, True])
def test_block_random(rng, norm_first, cross):
    for _ in range(3):
        tl.manual_seed(int(rng.integers(2**31)))
        block, c = _random_block(rng, norm_first, cross)
        b, t = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        x = rng.standard_normal((b, t, c)).astype(np.float32)
        w = rng.standard_normal((b, t, c)).astype(np.float32)
        kw = {}
        if rng.random() < 0.5:
            kw["is_causal"] = True
        else:
            keep = rng.random((b, 1, 1, t)) < 0.7
            keep[..., 0] = True
            kw["mask"] = keep
        if cross:
            kw["memory"] = tl.tensor(rng.standard_normal((b, int(rng.integers(1, 5)), c))
                                     .astype(np.float32))
        check_block(block, x, norm_first, w, **kw)
