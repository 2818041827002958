"""Grading tests of the fused functions: 04.1 log-softmax, 06.1 the embedding's backward,
08.1 LayerNorm's backward, 09.1 cross-entropy with ignore_index.

References are NumPy closed forms and finite differences; random cases use axes other than the
last, rows of very different scales (a global shift is not a per-row one), large logits,
repeated ids, and non-default arguments.
"""

import math

import numpy as np
import pytest
from exercise_asserts import assert_close, fail, fd_grads, random_shape

import tinyllm as tl
import tinyllm.functional as F


def np_log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def wide_rows(rng, shape, axis):
    """Random values whose slices along ``axis`` sit at offsets thousands apart."""
    x = rng.standard_normal(shape) * 3
    offset_shape = list(shape)
    offset_shape[axis] = 1
    return x + rng.choice([-3000.0, 0.0, 3000.0], size=offset_shape)


# ---------------------------------------------------------------------- 04.1 LogSoftmax
@pytest.mark.exercise("04.1")
def test_04_1_log_softmax_forward(rng):
    assert_close("log_softmax([[0, 0]])", F.log_softmax(tl.tensor(np.array([[0.0, 0.0]]))),
                 [[-math.log(2)] * 2])
    for _ in range(4):
        x0 = rng.standard_normal(random_shape(rng, 1, 3, 2)) * 3
        axis = int(rng.integers(-x0.ndim, x0.ndim))
        assert_close(f"log_softmax over axis {axis} of shape {x0.shape}",
                     F.log_softmax(tl.tensor(x0), axis=axis), np_log_softmax(x0, axis), rng)
    big = np.array([[1e4, 0.0, -1e4], [0.0, -1.0, -2.0]], dtype=np.float32)
    out = F.log_softmax(tl.tensor(big)).numpy()
    if not np.all(np.isfinite(out)):
        fail("log_softmax at logits of 1e4", f"must stay finite (subtract the max), got {out}")
    assert_close("log_softmax at large logits", out, np_log_softmax(big.astype(np.float64)),
                 atol=1e-3)


@pytest.mark.exercise("04.1")
def test_04_1_log_softmax_rows_far_apart(rng):
    for _ in range(3):
        shape = random_shape(rng, 2, 3, 2)
        axis = int(rng.integers(0, len(shape)))
        x0 = wide_rows(rng, shape, axis)
        out = F.log_softmax(tl.tensor(x0), axis=axis).numpy()
        if not np.all(np.isfinite(out)):
            fail(f"log_softmax over axis {axis} of slices thousands apart, shape {shape}",
                 "has -inf or NaN: subtract each slice's own maximum (along the axis)", rng)
        assert_close(f"log_softmax over axis {axis} of slices thousands apart, shape {shape}",
                     out, np_log_softmax(x0, axis), rng, atol=1e-6)


@pytest.mark.exercise("04.1")
def test_04_1_log_softmax_backward(rng):
    for _ in range(4):
        x0 = rng.standard_normal(random_shape(rng, 2, 3, 2))
        axis = int(rng.integers(-x0.ndim, x0.ndim - 1))  # never only the last axis
        for ax in (axis, -1):
            x = tl.tensor(x0, requires_grad=True)
            w = rng.standard_normal(x0.shape)
            F.log_softmax(x, axis=ax).backward(w)
            p = np.exp(np_log_softmax(x0, ax))
            assert_close(f"d log_softmax(axis={ax}) / dx for shape {x0.shape}: "
                         "dy - softmax(x) * sum(dy) along the axis", x.grad,
                         w - p * w.sum(axis=ax, keepdims=True), rng)


# ---------------------------------------------------------------------- 06.1 Embedding backward
@pytest.mark.exercise("06.1")
def test_06_1_embedding_backward(rng):
    wt = tl.tensor(np.zeros((3, 2)), requires_grad=True)
    F.embedding(np.array([2, 0, 2]), wt).backward(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert_close("dW for ids [2, 0, 2] (id 2 twice: its rows add)", wt.grad,
                 [[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])
    for _ in range(4):
        v, c = int(rng.integers(2, 9)), int(rng.integers(1, 6))
        ids = rng.integers(0, v, size=random_shape(rng, 1, 3, 2, 4))
        wt = tl.tensor(rng.standard_normal((v, c)), requires_grad=True)
        g = rng.standard_normal(ids.shape + (c,))
        F.embedding(ids, wt).backward(g)
        want = np.zeros((v, c))
        np.add.at(want, ids.reshape(-1), g.reshape(-1, c))
        assert_close(f"dW ({v}, {c}) for ids of shape {ids.shape}: the sum of the output "
                     "gradients at the positions of each id", wt.grad, want, rng)


# ---------------------------------------------------------------------- 08.1 LayerNorm backward
@pytest.mark.exercise("08.1")
def test_08_1_layer_norm_backward(rng):
    for trial in range(3):
        # the first input 3-D with a middle axis of 2 or more, so that the feature axis (-1)
        # cannot be taken for axis 1
        lead = random_shape(rng, 2, 2, 2, 4) if trial == 0 else random_shape(rng, 1, 2, 1, 4)
        shape = lead + (int(rng.integers(2, 7)),)
        x0 = rng.standard_normal(shape) * 2 + 1
        c = shape[-1]
        w0, b0 = rng.standard_normal(c), rng.standard_normal(c)
        fn = lambda x, w, b: F.layer_norm(x, w, b)
        ts = [tl.tensor(a, requires_grad=True) for a in (x0, w0, b0)]
        out = fn(*ts)
        g = rng.standard_normal(out.shape)
        out.backward(g)
        want = fd_grads(fn, [x0, w0, b0], g, which=[0])[0]
        assert_close(f"d layer_norm / dx for x {shape} (finite differences)", ts[0].grad, want,
                     rng, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------- 09.1 CrossEntropy
def check_cross_entropy(rng, x0, t, ignore_index=-100, atol=1e-7):
    n, v = x0.shape
    lsm = np_log_softmax(x0)
    keep = t != ignore_index
    safe = np.where(keep, t, 0)
    per = np.where(keep, -lsm[np.arange(n), safe], 0.0)
    for reduction, want in (("mean", per.sum() / keep.sum()), ("sum", per.sum()), ("none", per)):
        what = f"cross_entropy of ({n}, {v}) logits, reduction={reduction!r}, " \
               f"ignore_index={ignore_index} ({int((~keep).sum())} rows ignored)"
        x = tl.tensor(x0, requires_grad=True)
        out = F.cross_entropy(x, t, ignore_index=ignore_index, reduction=reduction)
        assert_close(what, out, want, rng, atol=atol)
        w = rng.standard_normal(out.shape) + 2.0
        out.backward(w)
        scale = (w / keep.sum()) if reduction == "mean" else w
        scale = scale[:, None] if reduction == "none" else scale
        onehot = np.eye(v)[safe]
        assert_close(f"d {what} / d logits: (softmax - onehot) * weight, 0 on ignored rows",
                     x.grad, (np.exp(lsm) - onehot) * keep[:, None] * scale, rng, atol=atol)


@pytest.mark.exercise("09.1")
def test_09_1_cross_entropy(rng):
    assert_close("cross_entropy of uniform logits over 4 classes (log 4)",
                 F.cross_entropy(tl.tensor(np.zeros((2, 4))), np.array([1, 3])), math.log(4))
    for _ in range(4):
        n, v = int(rng.integers(3, 9)), int(rng.integers(2, 7))
        x0 = rng.standard_normal((n, v)) * 2
        t = rng.integers(0, v, size=n)
        t[int(rng.integers(0, n))] = -100
        check_cross_entropy(rng, x0, t)


@pytest.mark.exercise("09.1")
def test_09_1_cross_entropy_other_ignore_index(rng):
    for _ in range(3):
        n, v = int(rng.integers(3, 9)), int(rng.integers(3, 7))
        ignore = int(rng.integers(0, v))  # a real class id that is ignored, as a pad id is
        x0 = rng.standard_normal((n, v)) * 2
        t = rng.integers(0, v, size=n)
        t[0], t[-1] = ignore, (ignore + 1) % v
        check_cross_entropy(rng, x0, t, ignore_index=ignore)


@pytest.mark.exercise("09.1")
def test_09_1_cross_entropy_large_logits(rng):
    for _ in range(3):
        n, v = int(rng.integers(3, 7)), int(rng.integers(3, 7))
        x0 = wide_rows(rng, (n, v), 0) * 1 + rng.choice([0.0, 800.0], size=(n, 1))
        t = rng.integers(0, v, size=n)
        t[-1] = -100
        x = tl.tensor(x0, requires_grad=True)
        out = F.cross_entropy(x, t)
        if not np.isfinite(out.item()):
            fail(f"cross_entropy of logits in the thousands, shape {x0.shape}",
                 f"gave {out.item()}: subtract each row's maximum before exp", rng)
        check_cross_entropy(rng, x0, t, atol=1e-6)
