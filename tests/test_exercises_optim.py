"""Exercise tests for optim: 04.3 SGD.step, 04.4 Adam._update (AdamW through it).

Each draws fresh random shapes and values from the ``rng`` fixture (the seed is printed; replay
with TINYLLM_TEST_SEED=<seed>) besides one fixed example, and computes what it expects on its
own: NumPy re-implementations of the update rules, step by step.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_exercises_nn import assert_close

from tinyllm import nn, optim


# ============================================================================ 04.3
def sgd_reference(p, grads, lr, momentum, wd, nesterov):
    """PyTorch's SGD in plain NumPy, float64."""
    p, buf = p.astype(np.float64).copy(), None
    for g in grads:
        g = g.astype(np.float64)
        if wd:
            g = g + wd * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def run_sgd(init, grads, **kw):
    """Run SGD; check that it never changes a gradient it was given (p.grad is the caller's:
    clipping, logging or accumulation may read it after the step)."""
    ps = [nn.Parameter(a.copy()) for a in init]
    opt = optim.SGD(ps, **kw)
    given = []
    for k, step in enumerate(grads):
        for p, g in zip(ps, step):
            p.grad = None if g is None else g.copy()
            given.append((k, p.grad, None if g is None else g.copy()))
        opt.step()
        for j, g_arr, g_copy in given:
            if g_arr is not None and not np.array_equal(g_arr, g_copy):
                raise AssertionError(
                    f"SGD({kw}) changed the gradient array of step {j} in place (by step "
                    f"{k}): compute g + wd * p and the momentum buffer in new arrays, never in "
                    f"p.grad")
    return [p.data for p in ps]


@pytest.mark.exercise("04.3")
def test_sgd_fixed_example():
    out = run_sgd([np.array([2.0])], [[np.array([1.0])]] * 2, lr=0.1, momentum=0.9,
                  weight_decay=0.5)
    assert_close(out[0], [1.43], what="two steps of SGD(lr=0.1, momentum=0.9, wd=0.5) from 2 "
                 "with gradient 1")


@pytest.mark.exercise("04.3")
@pytest.mark.parametrize("trial", range(6))
def test_sgd_random(rng, trial):
    kind = trial % 3  # plain, momentum, nesterov; without weight decay, then with it
    lr = float(rng.uniform(0.01, 0.5))
    momentum = 0.0 if kind == 0 else float(rng.uniform(0.3, 0.95))
    wd = 0.0 if trial < 3 else float(rng.uniform(0.01, 0.3))
    shapes = [tuple(int(n) for n in rng.integers(1, 6, size=rng.integers(1, 4))) for _ in range(2)]
    init = [rng.standard_normal(s) for s in shapes]
    steps = int(rng.integers(2, 6))
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    got = run_sgd(init, grads, lr=lr, momentum=momentum, weight_decay=wd, nesterov=kind == 2)
    for i, (a, g) in enumerate(zip(init, got)):
        want = sgd_reference(a, [step[i] for step in grads], lr, momentum, wd, kind == 2)
        assert_close(g, want, atol=1e-9,
                     what=f"parameter {i} after {steps} steps of SGD(lr={lr:.3g}, "
                          f"momentum={momentum:.3g}, weight_decay={wd:.3g}, nesterov={kind == 2})")


@pytest.mark.exercise("04.3")
def test_sgd_skips_parameters_without_grad(rng):
    a = rng.standard_normal(3)
    got = run_sgd([a, a], [[rng.standard_normal(3), None]], lr=0.1, momentum=0.9)
    assert_close(got[1], a, what="a parameter whose grad is None must not move")


# ============================================================================ 04.4
def adam_reference(p, grads, lr, b1, b2, eps, wd, decoupled):
    """Adam / AdamW (Kingma & Ba; Loshchilov & Hutter) in plain NumPy, float64."""
    p = p.astype(np.float64).copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def run_adam(cls, init, grads, **kw):
    p = nn.Parameter(init.copy())
    opt = cls([p], **kw)
    for k, g in enumerate(grads):
        p.grad = g.copy()
        opt.step()
        assert_close(p.grad, g, atol=0, what=f"p.grad after step {k} of {cls.__name__}({kw}) "
                     "(the optimizer must not change the gradient it was given)")
    return p.data, opt.state[id(p)]


@pytest.mark.exercise("04.4")
def test_adam_fixed_example():
    g = np.array([1e-3, -5.0, 2e4])
    p, state = run_adam(optim.Adam, np.zeros(3), [g], lr=0.01)
    assert_close(p, [-0.01, 0.01, -0.01], atol=1e-8,
                 what="Adam's first step is lr * sign(grad) (bias correction)")
    assert state["step"] == 1
    r, _ = run_adam(optim.Adam, np.zeros(2), [np.array([1e-8, -3e-8])], lr=0.1, eps=1e-8)
    assert_close(r, [-0.05, 0.075], atol=1e-12,
                 what="Adam's first step on gradients as small as eps: -lr g / (|g| + eps)")
    q, _ = run_adam(optim.AdamW, np.array([2.0, -4.0]), [np.zeros(2)] * 3, lr=0.1,
                    weight_decay=0.5)
    assert_close(q, np.array([2.0, -4.0]) * 0.95 ** 3, atol=1e-12,
                 what="AdamW on a zero gradient shrinks weights by (1 - lr*wd) per step")


@pytest.mark.exercise("04.4")
@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@pytest.mark.parametrize("trial", range(3))
def test_adam_random(rng, cls, trial):
    shape = tuple(int(n) for n in rng.integers(1, 6, size=rng.integers(1, 4)))
    kw = dict(lr=float(rng.uniform(1e-3, 0.1)),
              betas=(float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999))),
              eps=float(10 ** rng.uniform(-8, -3)),
              # trial 0 without weight decay, the others with it (whatever the seed), so the
              # decay's coupled and decoupled forms are tested on every run
              weight_decay=0.0 if trial == 0 else float(rng.uniform(0.01, 0.5)))
    init = rng.standard_normal(shape)
    steps = int(rng.integers(2, 7))
    grads = [rng.standard_normal(shape) * 10 ** rng.uniform(-2, 1) for _ in range(steps)]
    got, state = run_adam(cls, init, grads, **kw)
    want = adam_reference(init, grads, kw["lr"], *kw["betas"], kw["eps"], kw["weight_decay"],
                          decoupled=cls is optim.AdamW)
    assert_close(got, want, atol=1e-9, what=f"{cls.__name__}({kw}) after {steps} steps")
    assert state["step"] == steps, f"state['step'] should count {steps} steps, is {state['step']}"


@pytest.mark.exercise("04.4")
def test_adam_float32_stays_float32(rng):
    p = nn.Parameter(rng.standard_normal(4).astype(np.float32))
    opt = optim.AdamW([p], lr=0.01)
    p.grad = rng.standard_normal(4).astype(np.float32)
    opt.step()
    assert p.data.dtype == np.float32, f"the update turned a float32 parameter into {p.data.dtype}"
