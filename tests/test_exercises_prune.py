"""Exercises 16.1-16.4 (lesson 16, pruning and sparsity), each against an independent loop."""

import math

import numpy as np
import pytest

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
        assert got.shape == w.shape and got.dtype == bool, (
            f"magnitude_mask should return a boolean mask of shape {w.shape}, got {got.dtype} "
            f"{got.shape}")
        k = int((~want).sum())
        assert int((~got).sum()) == k, (
            f"sparsity {sparsity} of {w.size} weights prunes exactly {k} (floor(s * n + 1/2)), "
            f"got {int((~got).sum())} pruned")
        assert np.array_equal(got, want), (
            f"weights {w.ravel().tolist()}, sparsity {sparsity}: expected kept "
            f"{want.ravel().astype(int).tolist()}, got {got.ravel().astype(int).tolist()} "
            "(prune the smallest |w|; among equal |w| the earlier entry goes first)")


@pytest.mark.exercise("16.1")
def test_16_1_magnitude_mask_accepts_a_tensor():
    w = tl.tensor(np.array([[0.3, -0.1], [2.0, -0.05]], dtype=np.float32))
    got = np.asarray(magnitude_mask(w, 0.5))
    assert got.tolist() == [[True, False], [True, False]], got


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
    for n, m in [(2, 4), (1, 4), (3, 4), (4, 8), (2, 2)]:
        rows, groups = (int(v) for v in rng.integers(1, 6, size=2))
        w = _weights(rng, (rows, groups * m), ties)
        got = np.asarray(nm_mask(w, n, m))
        want = _expected_nm(w, n, m)
        assert got.shape == w.shape and got.dtype == bool, (
            f"nm_mask should return a boolean mask of shape {w.shape}, got {got.dtype} {got.shape}")
        per_group = got.reshape(-1, m).sum(axis=1)
        assert (per_group == n).all(), (
            f"{n}:{m} keeps exactly {n} in every group of {m} consecutive weights of a row, got "
            f"{per_group.tolist()} kept per group (are the groups along the last axis?)")
        assert np.array_equal(got, want), (
            f"{n}:{m} of {w.tolist()}: expected {want.astype(int).tolist()}, got "
            f"{got.astype(int).tolist()} (keep the largest |w| of each group; among equal |w| "
            "the earlier entry is pruned first)")


@pytest.mark.exercise("16.2")
def test_16_2_nm_mask_groups_run_along_rows_not_columns():
    w = np.array([[1, 2, 3, 4], [8, 7, 6, 5]], dtype=np.float32)
    assert np.asarray(nm_mask(w, 2, 4)).astype(int).tolist() == [[0, 0, 1, 1], [1, 1, 0, 0]]
    w3 = np.arange(16, dtype=np.float32).reshape(2, 2, 4)[..., ::-1].copy()
    assert np.asarray(nm_mask(w3, 1, 4)).reshape(-1, 4).argmax(axis=1).tolist() == [0, 0, 0, 0]


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
    assert not changed, f"ablation_importance must put every unit back exactly; changed: {changed}"
    assert len(got) == len(units), f"one score per unit: {len(units)} expected, got {len(got)}"
    assert np.allclose(got, want, atol=1e-5), (
        f"importance = loss without the unit - loss of the whole model: expected "
        f"{np.round(want, 5).tolist()}, got {np.round(got, 5).tolist()}")
    # each unit is judged alone: the order of the units does not change their scores
    again = ablation_importance(units[::-1], loss_fn)
    assert np.allclose(again[::-1], got, atol=1e-6), (
        "scores depend on the order of the units: restore each unit before removing the next")


# ----------------------------------------------------------------------------- 16.4
@pytest.mark.exercise("16.4")
def test_16_4_local_and_strided_masks(rng):
    for _ in range(5):
        t = int(rng.integers(1, 20))
        window, stride = int(rng.integers(1, t + 3)), int(rng.integers(1, t + 3))
        local = np.asarray(local_attention_mask(t, window))
        strided = np.asarray(strided_attention_mask(t, stride))
        want_local = np.array([[0 <= i - j < window for j in range(t)] for i in range(t)])
        want_strided = np.array([[j <= i and (i - j < stride or (i - j) % stride == 0)
                                  for j in range(t)] for i in range(t)])
        for name, got, want, arg in (("local_attention_mask", local, want_local, window),
                                     ("strided_attention_mask", strided, want_strided, stride)):
            assert got.shape == (t, t) and got.dtype == bool, (
                f"{name}({t}, {arg}) should be a boolean ({t}, {t}) mask, got {got.dtype} "
                f"{got.shape}")
            assert np.array_equal(got, want), (
                f"{name}({t}, {arg}): expected\n{want.astype(int)}\ngot\n{got.astype(int)}\n"
                "(row i = query, column j = key; True = may attend; never a future key)")
