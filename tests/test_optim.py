"""tinyllm.optim without PyTorch: closed-form expectations for SGD, Adam, AdamW, clipping and
the learning-rate schedules, and optimizer state that resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import nn, optim


def param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def close(a, b, atol=1e-10, what="values"):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert np.allclose(a, b, atol=atol, rtol=0), f"{what}: got {a}, expected {b}"


# ---------------------------------------------------------------------------- SGD
def test_sgd_one_step_is_p_minus_lr_g():
    p = param([1.0, -2.0, 3.0])
    p.grad = np.array([0.5, 0.5, -1.0])
    optim.SGD([p], lr=0.1).step()
    close(p.data, [0.95, -2.05, 3.1], what="SGD step")


def test_sgd_weight_decay_and_momentum_closed_form():
    p = param([2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    p.grad = np.array([1.0])
    opt.step()  # g' = 1 + 0.5*2 = 2; buf = 2; p = 2 - 0.2 = 1.8
    close(p.data, [1.8], what="first momentum step")
    p.grad = np.array([1.0])
    opt.step()  # g' = 1 + 0.9 = 1.9; buf = 0.9*2 + 1.9 = 3.7; p = 1.8 - 0.37 = 1.43
    close(p.data, [1.43], what="second momentum step")


def test_sgd_nesterov_closed_form():
    p = param([0.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.5, nesterov=True)
    p.grad = np.array([1.0])
    opt.step()  # buf = 1; step = g + m*buf = 1.5
    close(p.data, [-1.5], what="nesterov step 1")
    p.grad = np.array([1.0])
    opt.step()  # buf = 0.5 + 1 = 1.5; step = 1 + 0.75 = 1.75
    close(p.data, [-3.25], what="nesterov step 2")


def test_params_without_grad_are_skipped_and_bad_args_raise():
    a, b = param([1.0]), param([1.0])
    a.grad = np.array([1.0])
    optim.SGD([a, b], lr=1.0).step()
    close(a.data, [0.0])
    close(b.data, [1.0], what="a parameter without grad must not move")
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError):
        optim.SGD([a], lr=-1)
    with pytest.raises(ValueError):
        optim.Adam([a], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD([np.zeros(2)], lr=0.1)


def test_quadratic_bowl_converges():
    target = np.array([3.0, -1.0, 0.5])
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                 lambda ps: optim.Adam(ps, lr=0.1), lambda ps: optim.AdamW(ps, lr=0.1,
                                                                          weight_decay=0.0)):
        x = nn.Parameter(np.zeros(3))
        opt = make([x])
        for _ in range(300):
            opt.zero_grad()
            ((x - tl.tensor(target)) ** 2).sum().backward()
            opt.step()
        close(x.data, target, atol=1e-2, what=f"{type(opt).__name__} minimum of the bowl")


# ---------------------------------------------------------------------------- Adam / AdamW
def test_adam_first_step_is_lr_times_sign():
    g = np.array([1e-3, -5.0, 2e4, -0.1])
    p = param(np.zeros(4))
    p.grad = g.copy()
    optim.Adam([p], lr=0.01).step()
    close(p.data, -0.01 * np.sign(g), atol=1e-7, what="Adam's first step (bias-corrected)")


def test_adam_bias_correction_constant_gradient():
    # with a constant gradient the bias-corrected moments equal g and g^2 at every step
    p = param([0.0])
    opt = optim.Adam([p], lr=0.1, eps=0.0)
    for k in range(1, 6):
        p.grad = np.array([3.0])
        opt.step()
        close(p.data, [-0.1 * k], atol=1e-12, what=f"position after {k} steps")
    s = opt.state[id(p)]
    assert s["step"] == 5
    close(s["exp_avg"], [3 * (1 - 0.9 ** 5)], what="uncorrected first moment")
    close(s["exp_avg_sq"], [9 * (1 - 0.999 ** 5)], what="uncorrected second moment")


def test_adam_l2_versus_adamw_decoupled_decay():
    # Adam adds wd*p to the gradient: on a zero gradient the first step is -lr*sign(p)
    p = param([2.0, -4.0])
    p.grad = np.zeros(2)
    optim.Adam([p], lr=0.1, weight_decay=0.5).step()
    close(p.data, [1.9, -3.9], atol=1e-7, what="Adam L2 weight decay step")
    # AdamW decays the weights directly: zero gradient -> p * (1 - lr*wd) per step
    q = param([2.0, -4.0])
    opt = optim.AdamW([q], lr=0.1, weight_decay=0.5)
    for k in range(1, 4):
        q.grad = np.zeros(2)
        opt.step()
        close(q.data, np.array([2.0, -4.0]) * 0.95 ** k, atol=1e-12, what=f"AdamW step {k}")


def test_param_groups_let_biases_skip_decay():
    w, b = param([1.0, 1.0]), param([1.0])
    opt = optim.AdamW([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=0.1,
                      weight_decay=0.2)
    assert opt.param_groups[0]["weight_decay"] == 0.2 and opt.param_groups[1]["weight_decay"] == 0
    w.grad, b.grad = np.zeros(2), np.zeros(1)
    opt.step()
    close(w.data, [0.98, 0.98], what="decayed group")
    close(b.data, [1.0], what="group with weight_decay=0")
    opt.param_groups[0]["lr"] = 0.5  # a group's lr can be changed between steps
    w.grad = np.zeros(2)
    opt.step()
    close(w.data, [0.98 * 0.9] * 2, what="after changing the group's lr")


def test_adamw_default_decay_and_zero_grad():
    p = param([1.0])
    opt = optim.AdamW([p])
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[0]["lr"] == 1e-3
    p.grad = np.ones(1)
    opt.zero_grad()
    assert p.grad is None


# ---------------------------------------------------------------------------- clipping
def test_clip_grad_norm_returns_norm_and_scales():
    a, b = param([0.0, 0.0]), param([0.0])
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    total = optim.clip_grad_norm_([a, b], max_norm=1.0)
    assert total == pytest.approx(5.0), f"norm before clipping: got {total}, expected 5"
    close(a.grad, [0.6, 0.0], atol=1e-6, what="clipped grad a")
    close(b.grad, [0.8], atol=1e-6, what="clipped grad b")
    norm_after = math.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum())
    assert norm_after == pytest.approx(1.0, abs=1e-6)


def test_clip_below_max_leaves_grads_and_ignores_missing():
    a, b = param([0.0, 0.0]), param([0.0])
    a.grad = np.array([0.3, 0.4])
    assert optim.clip_grad_norm_(iter([a, b]), 1.0) == pytest.approx(0.5)
    close(a.grad, [0.3, 0.4], what="no clipping below max_norm")
    assert optim.clip_grad_norm_([b], 1.0) == 0.0


# ---------------------------------------------------------------------------- schedules
def test_cosine_with_warmup_values():
    f = lambda s: optim.cosine_with_warmup(s, max_lr=1.0, min_lr=0.1, warmup_steps=10,
                                           decay_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55), "halfway through the decay: the mean of max and min"
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    lrs = [f(s) for s in range(10, 111)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:])), "the cosine part must not increase"


def test_schedulers_set_group_lr_and_resume():
    p = param([0.0])
    opt = optim.SGD([{"params": [p]}], lr=123.0)
    sched = optim.CosineWithWarmup(opt, max_lr=1.0, min_lr=0.0, warmup_steps=4, decay_steps=20)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25), "the step-0 lr is applied at once"
    for _ in range(7):
        sched.step()
    assert sched.get_last_lr() == pytest.approx(optim.cosine_with_warmup(7, 1.0, 0.0, 4, 20))
    state = sched.state_dict()
    opt2 = optim.SGD([param([0.0])], lr=5.0)
    sched2 = optim.CosineWithWarmup(opt2, 1.0, 0.0, 4, 20)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    const = optim.ConstantLR(opt2, 0.3)
    const.step()
    assert opt2.param_groups[0]["lr"] == 0.3


# ---------------------------------------------------------------------------- state
def _train(opt_cls, kwargs, steps, state=None, start=None):
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((steps, 2, 3))
    w = nn.Parameter(np.ones((2, 3)) if start is None else start.copy())
    opt = opt_cls([w], **kwargs)
    if state is not None:
        opt.load_state_dict(state)
    return w, opt, grads


@pytest.mark.parametrize("opt_cls, kwargs", [
    (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
])
def test_optimizer_state_dict_resumes_identically(opt_cls, kwargs):
    w, opt, grads = _train(opt_cls, kwargs, 6)
    for k in range(6):
        w.grad = grads[k].copy()
        opt.step()
        if k == 2:
            saved_w, saved = w.data.copy(), opt.state_dict()
    # a fresh parameter and optimizer, resumed from step 3
    w2, opt2, _ = _train(opt_cls, {**kwargs, "lr": 99.0}, 6, state=saved, start=saved_w)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"], "the group's lr is restored"
    for k in range(3, 6):
        w2.grad = grads[k].copy()
        opt2.step()
    np.testing.assert_array_equal(w2.data, w.data, err_msg="resumed run diverged")


def test_state_dict_is_a_copy_and_load_checks_shapes():
    w = nn.Parameter(np.ones(3))
    opt = optim.Adam([w], lr=0.1)
    w.grad = np.ones(3)
    opt.step()
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 1 and sd["param_groups"][0]["params"] == [0]
    sd["state"][0]["exp_avg"][:] = 42.0
    assert not np.any(opt.state[id(w)]["exp_avg"] == 42.0)
    other = optim.Adam([nn.Parameter(np.ones(4))], lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(opt.state_dict())
    two = optim.Adam([nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))], lr=0.1)
    with pytest.raises(ValueError, match="groups"):
        two.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("opt_cls, kwargs", [
    (optim.AdamW, dict(lr=0.01, weight_decay=0.1, betas=(0.9, 0.99))),
    (optim.Adam, dict(lr=0.02)),
    (optim.Adam, dict(lr=0.02, weight_decay=0.1)),  # L2 decay: the plain update serves it
])
def test_adam_fast_update_equals_the_plain_form(opt_cls, kwargs, rng):
    """The optimizer's fast path (one scratch array) gives the lesson's update bit for bit, in
    float32 as in training, over steps whose bias corrections differ."""
    shape = (int(rng.integers(2, 9)), int(rng.integers(2, 9)))
    start = rng.standard_normal(shape).astype(np.float32)
    grads = rng.standard_normal((7, *shape)).astype(np.float32)
    runs = []
    for fast in (True, False):
        w = nn.Parameter(start.copy())
        opt = opt_cls([w], **kwargs)
        with tl.fast_paths(fast):
            for g in grads:
                w.grad = g.copy()
                opt.step()
        assert w.data.dtype == np.float32, f"fast={fast}: parameter became {w.data.dtype}"
        runs.append((w.data.copy(), opt.state[id(w)]))
    (w_fast, s_fast), (w_plain, s_plain) = runs
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(s_fast[key], s_plain[key], err_msg=f"state {key}")
    np.testing.assert_array_equal(w_fast, w_plain, err_msg="parameters after 7 steps")
