"""Grading tests of lesson 16: 16.1 the magnitude mask, 16.2 the N:M mask, 16.3 importance by
ablation, 16.4 local and strided attention masks.

Each is checked against an independent loop (a sort by (|w|, index) in plain Python, a fresh
copy of the model with the unit zeroed, masks written element by element) on fresh shapes and
values from the seeded ``rng`` fixture (replay a failure with TINYLLM_TEST_SEED=<seed>), with
magnitudes that tie. No test needs a later exercise.
"""

import math

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail

import tinyllm as tl
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.prune import (
    ablation_importance,
    head_units,
    local_attention_mask,
    magnitude_mask,
    neuron_units,
    nm_mask,
    strided_attention_mask,
)


def _weights(rng, shape, ties):
    """Float32 weights; with ``ties`` drawn from a few values so that many magnitudes tie."""
    if ties:
        return rng.integers(-3, 4, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def _expected_magnitude(w, sparsity):
    k = math.floor(sparsity * w.size + 0.5)
    flat = np.abs(w).ravel().tolist()
    order = sorted(range(len(flat)), key=lambda i: (flat[i], i))  # ties: the earlier index first
    keep = np.ones(w.size, dtype=bool)
    keep[order[:k]] = False
    return keep.reshape(w.shape)


# ----------------------------------------------------------------------------- 16.1
@pytest.mark.exercise("16.1")
@pytest.mark.parametrize("ties", [False, True])
def test_16_1_magnitude_mask_prunes_the_smallest(rng, ties):
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(1, 9, size=int(rng.integers(1, 4))))
        w = _weights(rng, shape, ties)
        sparsity = float(rng.choice([0.0, 0.25, 0.5, 0.7, 0.9, 1.0, rng.uniform()]))
        got = np.asarray(magnitude_mask(w, sparsity))
        want = _expected_magnitude(w, sparsity)
        name = f"magnitude_mask(w {w.shape}, sparsity={sparsity:.4g})"
        assert_equal(f"{name}: the mask's dtype", str(got.dtype), "bool", rng)
        k = int((~want).sum())
        assert_equal(f"{name}: how many of the {w.size} weights are pruned (floor(s * n + 1/2))",
                     int((~got).sum()), k, rng)
        assert_equal(f"{name}: the mask (True = keep; prune the smallest |w|, among equal |w| "
                     f"the earlier entry first), weights {w.ravel().tolist()}", got, want, rng)


@pytest.mark.exercise("16.1")
def test_16_1_magnitude_mask_accepts_a_tensor():
    w = tl.tensor(np.array([[0.3, -0.1], [2.0, -0.05]], dtype=np.float32))
    assert_equal("magnitude_mask of a Tensor [[0.3, -0.1], [2, -0.05]], sparsity 0.5",
                 np.asarray(magnitude_mask(w, 0.5)), np.array([[True, False], [True, False]]))


# ----------------------------------------------------------------------------- 16.2
def _expected_nm(w, n, m):
    groups = np.abs(w).reshape(-1, m)
    keep = np.ones(groups.shape, dtype=bool)
    for g, row in enumerate(groups.tolist()):
        order = sorted(range(m), key=lambda i: (row[i], i))
        keep[g, order[:m - n]] = False
    return keep.reshape(w.shape)


@pytest.mark.exercise("16.2")
@pytest.mark.parametrize("ties", [False, True])
def test_16_2_nm_mask_keeps_n_of_every_m(rng, ties):
    # the long groups make ties tell a stable sort from an unstable one on every CPU (NumPy
    # sorts 16 or fewer entries by insertion, which is stable, unless it has AVX-512 kernels)
    for n, m in [(2, 4), (1, 4), (3, 4), (4, 8), (2, 2), (8, 32), (16, 64)]:
        rows, groups = (int(v) for v in rng.integers(1, 6, size=2))
        w = _weights(rng, (rows, groups * m), ties)
        got = np.asarray(nm_mask(w, n, m))
        want = _expected_nm(w, n, m)
        name = f"nm_mask(w {w.shape}, n={n}, m={m})"
        assert_equal(f"{name}: the mask's dtype", str(got.dtype), "bool", rng)
        assert_equal(f"{name}: the shape", got.shape, w.shape, rng)
        assert_equal(f"{name}: weights kept in each group of {m} consecutive entries of a row "
                     "(groups along the last axis)", got.reshape(-1, m).sum(axis=1),
                     np.full(w.size // m, n), rng)
        assert_equal(f"{name}: the mask (keep the largest |w| of each group; among equal |w| "
                     f"the earlier entry is pruned first), weights {w.tolist()}", got, want, rng)


@pytest.mark.exercise("16.2")
def test_16_2_nm_mask_groups_run_along_rows_not_columns():
    w = np.array([[1, 2, 3, 4], [8, 7, 6, 5]], dtype=np.float32)
    assert_equal("nm_mask([[1, 2, 3, 4], [8, 7, 6, 5]], 2, 4)", np.asarray(nm_mask(w, 2, 4)),
                 np.array([[False, False, True, True], [True, True, False, False]]))
    w3 = np.arange(16, dtype=np.float32).reshape(2, 2, 4)[..., ::-1].copy()
    assert_equal("nm_mask of a (2, 2, 4) weight, 1:4: the kept entry of each group",
                 np.asarray(nm_mask(w3, 1, 4)).reshape(-1, 4).argmax(axis=1).tolist(),
                 [0, 0, 0, 0])


# ----------------------------------------------------------------------------- 16.3
def _tiny_gpt(rng):
    tl.manual_seed(int(rng.integers(1 << 30)))
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=int(rng.choice([2, 4])),
                    n_embd=8)
    model = GPT(cfg)
    for p in model.parameters():  # nonzero biases and larger weights: every unit matters
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.3
    model.eval()
    idx = rng.integers(0, 11, size=(3, 8))
    tgt = rng.integers(0, 11, size=(3, 8))
    return model, idx, tgt


def _removed_loss(model, unit, idx, tgt):
    """The loss of a fresh copy of ``model`` with the unit's entries zeroed."""
    copy = GPT(model.config)
    copy.load_state_dict(model.state_dict())
    params = dict(copy.named_parameters())
    for name, _, index in unit:
        params[name].data[index] = 0
    with tl.no_grad():
        return copy(idx, tgt)[1].item()


@pytest.mark.exercise("16.3")
@pytest.mark.parametrize("kind", ["heads", "neurons"])
def test_16_3_importance_is_the_loss_change_when_removed(rng, kind):
    model, idx, tgt = _tiny_gpt(rng)
    units = head_units(model) if kind == "heads" else neuron_units(model)
    if kind == "neurons":
        units = [units[i] for i in sorted(rng.choice(len(units), size=6, replace=False))]
    before = {k: v.copy() for k, v in model.state_dict().items()}

    def loss_fn():
        return model(idx, tgt)[1].item()

    with tl.no_grad():
        base = loss_fn()
    got = ablation_importance(units, loss_fn)
    want = [_removed_loss(model, u, idx, tgt) - base for u in units]
    after = model.state_dict()
    changed = [k for k in before if before[k].tobytes() != after[k].tobytes()]
    if changed:
        fail("ablation_importance", f"every unit must be put back exactly; changed: {changed}",
             rng)
    name = f"ablation_importance of {len(units)} {kind} (loss without the unit - loss of all)"
    assert_equal(f"{name}: one score per unit", len(got), len(units), rng)
    assert_close(name, np.asarray(got, dtype=np.float64), np.array(want), rng, atol=1e-5,
                 rtol=1e-4)
    # each unit is judged alone: the order of the units does not change their scores
    again = ablation_importance(units[::-1], loss_fn)
    assert_close(f"{name}, the units in reverse order (restore each unit before removing the "
                 "next)", np.asarray(again[::-1], dtype=np.float64), np.asarray(got), rng,
                 atol=1e-6, rtol=0)


class _Param:
    """A stand-in for a Parameter: ablation_importance reads and writes ``.data`` only."""

    def __init__(self, data):
        self.data = data


@pytest.mark.exercise("16.3")
def test_16_3_importance_of_units_of_plain_arrays(rng):
    """Units over arrays and a loss that sees every entry's value (a GPT's pre-LN residual
    stream ignores a constant added across channels, so there a unit set to 1 looks removed)."""
    a = _Param(rng.standard_normal((4, 5)))
    b = _Param(rng.standard_normal((5, 3)))
    c = rng.standard_normal((4, 3))

    def loss_of(x, y):
        return float(np.tanh(x @ y + c).sum() + (x ** 2).sum() * 0.1)

    units = [[("a", a, (i,)), ("b", b, (slice(None), i % 3))] for i in range(4)]
    units += [[("b", b, (int(rng.integers(5)), slice(1, 3)))]]
    base = loss_of(a.data, b.data)
    want = []
    for unit in units:
        x, y = a.data.copy(), b.data.copy()
        for name, _, index in unit:
            (x if name == "a" else y)[index] = 0
        want.append(loss_of(x, y) - base)
    before = a.data.copy(), b.data.copy()
    got = ablation_importance(units, lambda: loss_of(a.data, b.data))
    assert_equal("the arrays after ablation_importance (every unit put back exactly)",
                 [a.data.tolist(), b.data.tolist()], [before[0].tolist(), before[1].tolist()],
                 rng)
    assert_close("ablation_importance of units over arrays (loss with the unit's entries set to "
                 "zero - loss of all)", np.asarray(got, dtype=np.float64), np.array(want), rng,
                 atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------- 16.4
@pytest.mark.exercise("16.4")
def test_16_4_local_and_strided_masks(rng):
    for trial in range(5):
        t = int(rng.integers(1, 20))
        window, stride = int(rng.integers(1, t + 3)), int(rng.integers(1, t + 3))
        if trial == 0:  # a window and a stride well inside T, so that both rules show
            t = int(rng.integers(8, 20))
            window, stride = int(rng.integers(2, t // 2 + 1)), int(rng.integers(2, t // 2 + 1))
        local = np.asarray(local_attention_mask(t, window))
        strided = np.asarray(strided_attention_mask(t, stride))
        want_local = np.array([[0 <= i - j < window for j in range(t)] for i in range(t)])
        want_strided = np.array([[j <= i and (i - j < stride or (i - j) % stride == 0)
                                  for j in range(t)] for i in range(t)])
        for name, got, want, arg in (("local_attention_mask", local, want_local, window),
                                     ("strided_attention_mask", strided, want_strided, stride)):
            assert_equal(f"{name}({t}, {arg}): the mask's dtype", str(got.dtype), "bool", rng)
            assert_equal(f"{name}({t}, {arg}) (row i = query, column j = key; True = may "
                         "attend; never a future key)", got, want, rng)
