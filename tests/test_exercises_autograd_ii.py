"""Grading tests of the autograd exercises of lesson 03 (autograd II): unbroadcast, the
backward of Sum / Mean, Reshape / Transpose, GetItem and MatMul, and no_grad.

Lesson order: a test of exercise LL.N uses only what exercises up to LL.N built (lesson 02's
exercises are graded in test_exercises_autograd.py). Every test draws several random cases from
the ``rng`` fixture, so that no hard-coded answer passes; failures name the quantity, with
expected and got and the seed.
"""

import numpy as np
import pytest
from exercise_asserts import (
    assert_close,
    assert_equal,
    broadcast_pair,
    creator,
    fail,
    fd_grads,
    np_unbroadcast,
    random_shape,
)

import tinyllm as tl
from tinyllm import ops


# ---------------------------------------------------------------------- 03.1 unbroadcast
@pytest.mark.exercise("03.1")
def test_03_1_unbroadcast_fixed():
    g = np.arange(24.0).reshape(2, 3, 4)
    for shape in [(4,), (3, 1), (1, 4), (), (1, 1), (2, 1, 4), (1, 3, 1), (3, 4), (1, 1, 1),
                  (2, 3, 4)]:
        want = g.sum(axis=tuple(range(3 - len(shape))))
        want = want.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True) \
            .reshape(shape)
        assert_close(f"unbroadcast of a (2, 3, 4) gradient to {shape}",
                     ops.unbroadcast(g, shape), want)
    for gshape, shape in (((1, 3), (1, 1)), ((4, 1, 3), (1, 1)), ((1, 5, 2), (5, 1))):
        g2 = np.arange(float(np.prod(gshape))).reshape(gshape)  # sides of 1 in the gradient too
        want = g2.sum(axis=tuple(range(len(gshape) - len(shape))))
        want = want.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
        assert_close(f"unbroadcast of a {gshape} gradient to {shape}", ops.unbroadcast(g2, shape),
                     want)
    empty = np.zeros((0, 3))  # broadcasting (1, 3) against (0, 3) gives (0, 3): the sum is 0
    assert_close("unbroadcast of a (0, 3) gradient to (1, 3)", ops.unbroadcast(empty, (1, 3)),
                 np.zeros((1, 3)))


@pytest.mark.exercise("03.1")
def test_03_1_unbroadcast_random(rng):
    for k in range(16):
        if k % 2:  # gradients with sides of 1 too: which axis is compared matters
            big = random_shape(rng, 2, 4, 1, 4)
            small = tuple(1 if rng.random() < 0.5 else n for n in big[int(rng.integers(0, 2)):])
        else:
            big, small = broadcast_pair(rng, max_ndim=4)
        g = rng.standard_normal(big)
        want = g.sum(axis=tuple(range(len(big) - len(small))))
        want = want.sum(axis=tuple(i for i, n in enumerate(small) if n == 1), keepdims=True)
        assert_close(f"unbroadcast of a {big} gradient to {small}", ops.unbroadcast(g, small),
                     want, rng)
        a, b = tl.tensor(g, requires_grad=True), tl.tensor(rng.standard_normal(small),
                                                          requires_grad=True)
        w = rng.standard_normal(big)
        (a + b).backward(w)
        assert_close(f"b.grad of a {big} + b {small}", b.grad, np_unbroadcast(w, small), rng)
        assert_equal(f"b.grad's shape for b {small}", b.grad.shape, small, rng)


# ---------------------------------------------------------------------- 03.2 Sum / Mean backward
def _axes(rng, ndim):
    r = rng.random()
    if r < 0.25:
        return None
    if r < 0.6:
        return int(rng.integers(-ndim, ndim))
    return tuple(int(a) for a in rng.choice(ndim, size=int(rng.integers(1, ndim + 1)),
                                            replace=False))


@pytest.mark.exercise("03.2")
def test_03_2_sum_and_mean_backward(rng):
    fixed = [((2, 3), 1, False), ((2, 3, 4), (0, 2), True), ((3,), None, False),
             ((2, 3, 4), -1, True)]
    draws = [(s := random_shape(rng, 1, 3, 2), _axes(rng, len(s)), bool(rng.random() < 0.5))
             for _ in range(8)]
    for shape, axis, keep in fixed + draws:
        x0 = rng.standard_normal(shape)
        for name in ("sum", "mean"):
            x = tl.tensor(x0, requires_grad=True)
            y = getattr(x, name)(axis=axis, keepdims=keep)
            w = rng.standard_normal(y.shape)
            y.backward(w)
            ax = tuple(range(len(shape))) if axis is None else axis
            wk = w if keep else np.expand_dims(w, ax)
            n = x0.size / max(y.size, 1) if name == "mean" else 1
            assert_close(f"x.grad of x.{name}(axis={axis}, keepdims={keep}), x {shape}",
                         x.grad, np.broadcast_to(wk / n, shape), rng)


# ---------------------------------------------------------------------- 03.3 Reshape / Transpose
def _cycle(rng, n):
    """A random permutation of n >= 3 axes that is not its own inverse."""
    while True:
        p = rng.permutation(n)
        if not np.array_equal(p[p], np.arange(n)):
            return tuple(int(i) for i in p)


@pytest.mark.exercise("03.3")
def test_03_3_reshape_backward(rng):
    for _ in range(4):
        shape = random_shape(rng, 2, 4, 2)
        x0 = rng.standard_normal(shape)
        x = tl.tensor(x0, requires_grad=True)
        y = x.reshape(-1, shape[-1])
        w = rng.standard_normal(y.shape)
        y.backward(w)
        assert_close(f"x.grad of x.reshape(-1, {shape[-1]}), x {shape}", x.grad,
                     w.reshape(shape), rng)


@pytest.mark.exercise("03.3")
def test_03_3_transpose_backward(rng):
    for _ in range(4):
        shape = random_shape(rng, 3, 4, 2)
        x0 = rng.standard_normal(shape)
        for axes in (_cycle(rng, len(shape)), None,
                     tuple(a - len(shape) for a in _cycle(rng, len(shape)))):
            x = tl.tensor(x0, requires_grad=True)
            y = x.transpose(*axes) if axes else x.T
            w = rng.standard_normal(y.shape)
            y.backward(w)
            want = np.transpose(w, np.argsort(np.array(axes) % len(shape))) if axes else w.T
            assert_close(f"x.grad of x.transpose{axes if axes else '() (.T)'}, x {shape}: "
                         "the output gradient transposed back by the inverse permutation",
                         x.grad, want, rng)


# ---------------------------------------------------------------------- 03.4 GetItem backward
@pytest.mark.exercise("03.4")
def test_03_4_getitem_scatter_add(rng):
    x = tl.tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 3, 1])].backward(np.array([1.0, 2.0, 3.0, 4.0]))
    assert_close("x.grad of x[[1, 1, 3, 1]] (index 1 picked three times: 1 + 2 + 4)", x.grad,
                 [0.0, 7.0, 0.0, 3.0])
    for _ in range(4):
        n, c = int(rng.integers(2, 6)), int(rng.integers(1, 4))
        x0 = rng.standard_normal((n, c))
        idx = rng.integers(0, n, size=int(rng.integers(n + 1, 9)))  # some row twice
        x = tl.tensor(x0, requires_grad=True)
        w = rng.standard_normal((len(idx), c))
        x[idx].backward(w)
        want = np.zeros_like(x0)
        np.add.at(want, idx, w)
        assert_close(f"x.grad of x[{idx.tolist()}] (rows picked several times get the sum)",
                     x.grad, want, rng)


@pytest.mark.exercise("03.4")
def test_03_4_getitem_basic(rng):
    x0 = rng.standard_normal((4, 5))
    for index in [(1,), (slice(1, 3), slice(None, None, 2)), (-1, 2), (Ellipsis, 0),
                  (slice(None), np.array([4, 0, 4]))]:
        x = tl.tensor(x0, requires_grad=True)
        y = x[index]
        w = rng.standard_normal(y.shape)
        y.backward(w)
        want = np.zeros_like(x0)
        np.add.at(want, index, w)
        assert_close(f"x.grad of x[{index}]", x.grad, want, rng)


# ---------------------------------------------------------------------- 03.5 MatMul backward
@pytest.mark.exercise("03.5")
def test_03_5_matmul_2d(rng):
    for m, k, n in [(2, 3, 4), *(tuple(int(v) for v in rng.integers(1, 7, size=3))
                                 for _ in range(3))]:
        a0, b0 = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        a, b = tl.tensor(a0, requires_grad=True), tl.tensor(b0, requires_grad=True)
        w = rng.standard_normal((m, n))
        (a @ b).backward(w)
        assert_close(f"dL/dA of A {a0.shape} @ B {b0.shape}: dL/dC @ B^T", a.grad, w @ b0.T, rng)
        assert_close(f"dL/dB of A {a0.shape} @ B {b0.shape}: A^T @ dL/dC", b.grad, a0.T @ w, rng)


@pytest.mark.exercise("03.5")
def test_03_5_matmul_1d_and_batched(rng):
    for _ in range(2):
        k = int(rng.integers(1, 5))
        batch = random_shape(rng, 1, 2, 2, 3)  # every batch side >= 2: broadcasting is real
        ones = (1,) * len(batch)
        shapes = [((k,), (k,)), ((k,), (k, 3)), ((3, k), (k,)), (batch + (2, k), (k, 3)),
                  (ones + (2, k), batch + (k, 3)), (batch + (2, k), ones + (k, 3)),
                  ((2, k), batch + (k, 3)), (batch + (2, k), (k,))]
        for sa, sb in shapes:
            a0, b0 = rng.standard_normal(sa), rng.standard_normal(sb)
            w = rng.standard_normal(np.matmul(a0, b0).shape)
            a, b = tl.tensor(a0, requires_grad=True), tl.tensor(b0, requires_grad=True)
            (a @ b).backward(w)
            ga, gb = fd_grads(lambda x, y: x @ y, [a0, b0], w)
            assert_close(f"dL/dA of A {sa} @ B {sb} (finite differences)", a.grad, ga, rng)
            assert_close(f"dL/dB of A {sa} @ B {sb} (finite differences)", b.grad, gb, rng)


@pytest.mark.exercise("03.5")
def test_03_5_matmul_one_input_needs_grad(rng):
    for _ in range(2):
        m, k, n = (int(v) for v in rng.integers(2, 6, size=3))
        a0, b0 = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        w = rng.standard_normal((m, n))
        for needs in ((True, False), (False, True)):
            a, b = tl.tensor(a0, requires_grad=needs[0]), tl.tensor(b0, requires_grad=needs[1])
            (a @ b).backward(w)
            got, want, name = (a.grad, w @ b0.T, "A") if needs[0] else (b.grad, a0.T @ w, "B")
            assert_close(f"dL/d{name} of A {a0.shape} @ B {b0.shape} when only {name} requires "
                         "grad (self.needs_grad says which)", got, want, rng)


# ---------------------------------------------------------------------- 03.6 no_grad
@pytest.mark.exercise("03.6")
def test_03_6_no_grad(rng):
    x = tl.tensor(rng.standard_normal(random_shape(rng)), requires_grad=True)
    if not tl.is_grad_enabled():
        fail("is_grad_enabled()", "should be True outside no_grad")
    with tl.no_grad():
        if tl.is_grad_enabled():
            fail("is_grad_enabled() inside `with no_grad():`", "should be False")
        y = (x * 2).exp()
    if y.requires_grad or creator(y) is not None:
        fail("an op under no_grad", "must record no graph (requires_grad False, no creator)")
    if not tl.is_grad_enabled():
        fail("is_grad_enabled() after the no_grad block", "should be True again")
    with pytest.raises(ZeroDivisionError):
        with tl.no_grad():
            raise ZeroDivisionError
    if not tl.is_grad_enabled():
        fail("is_grad_enabled() after a no_grad block that raised", "should be True again")
    with tl.no_grad():
        with tl.no_grad():
            pass
        if tl.is_grad_enabled():
            fail("a nested no_grad", "must restore the outer state (off) when it ends")
    if not (x * 2).requires_grad:
        fail("an op after no_grad", "should record the graph again")
