"""Grading tests of lesson 14's exercises: 14.1 the checkpoint Function's backward, 14.2 rounding
to bfloat16 (round to nearest, ties to even), 14.3 the dynamic loss scaler's update rule.

Each test draws fresh seeded cases (the ``rng`` fixture; replay with TINYLLM_TEST_SEED=<seed>)
and compares with something independent: the plain (not checkpointed) run of the same function
and central differences (14.1), ml_dtypes' bfloat16 conversion and a rounding
written here with integer arithmetic (14.2), and a scaler simulated step by step here (14.3).
"""

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail
from helpers import fd_grads

import tinyllm as tl
from tinyllm import functional as F
from tinyllm.activation_checkpoint import checkpoint
from tinyllm.precision import DynamicLossScaler, round_bfloat16

ex = pytest.mark.exercise


# ---------------------------------------------------------------------- 14.1 checkpoint
class Segment(tl.nn.Module):
    """A small block with parameters, a nonlinearity and dropout: y = drop(tanh(x W1^T) W2^T) + x."""

    def __init__(self, c, rng, p):
        super().__init__()
        self.w1 = tl.nn.Parameter(rng.standard_normal((2 * c, c)))
        self.w2 = tl.nn.Parameter(rng.standard_normal((c, 2 * c)) * 0.5)
        self.p = p

    def forward(self, x, scale=None):
        h = F.linear(x, self.w1).tanh()
        y = F.dropout(F.linear(h, self.w2), self.p, training=True) + x
        return y if scale is None else y * scale


def grads_of(seg, x, scale, gy, seed, use_checkpoint):
    tl.manual_seed(seed)
    seg.zero_grad()
    x = tl.tensor(x, requires_grad=True)
    s = tl.tensor(scale, requires_grad=True)
    y = checkpoint(seg, x, s) if use_checkpoint else seg(x, s)
    (y * tl.tensor(gy)).sum().backward()
    after = tl.backend.rng().random()  # the stream after the step: checkpointing leaves it be
    return {"x": x.grad, "scale": s.grad, "w1": seg.w1.grad, "w2": seg.w2.grad}, y.numpy(), after


@ex("14.1")
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_14_1_checkpointed_gradients_are_the_plain_ones(rng, p):
    for _ in range(3):
        b, t, c = rng.integers(1, 4), rng.integers(1, 5), rng.integers(2, 6)
        seg = Segment(int(c), rng, p)
        x = rng.standard_normal((b, t, c))
        scale = rng.standard_normal((c,))
        gy = rng.standard_normal((b, t, c))
        seed = int(rng.integers(1 << 30))
        want, y_plain, after_plain = grads_of(seg, x, scale, gy, seed, False)
        got, y_ckpt, after_ckpt = grads_of(seg, x, scale, gy, seed, True)
        assert_close(f"checkpoint forward output (dropout p={p})", y_ckpt, y_plain, rng)
        for k in want:
            assert_close(f"dL/d{k} through tl.checkpoint (dropout p={p}; the recomputed forward "
                         "must draw the same dropout mask)", got[k], want[k], rng, atol=1e-6)
        if after_ckpt != after_plain:
            fail("the random stream after the backward pass", "it differs from the plain run's: "
                 "restore the generator's state after the recomputation", rng)


def small_case(rng, t):
    """A dropout-free segment of random width, an input (2, t, c) and an output weight."""
    c = int(rng.integers(2, 5))
    return c, Segment(c, rng, 0.0), rng.standard_normal((2, t, c)), rng.standard_normal((2, t, c))


@ex("14.1")
def test_14_1_gradients_match_finite_differences(rng):
    c, seg, x, w = small_case(rng, 3)

    def fn(xt, w1):
        seg.w1.data = w1.data
        return checkpoint(seg, xt)

    xt, w1 = tl.tensor(x, requires_grad=True), tl.tensor(seg.w1.data.copy(), requires_grad=True)
    seg.w1.grad = None
    (checkpoint(seg, xt) * tl.tensor(w)).sum().backward()
    want = fd_grads(fn, [x, w1.data], w)
    assert_close("dL/dx through tl.checkpoint", xt.grad, want[0], rng, atol=1e-6)
    assert_close("dL/dW1 (a parameter the function uses) through tl.checkpoint", seg.w1.grad,
                 want[1], rng, atol=1e-6)


@ex("14.1")
def test_14_1_inputs_without_gradient_and_parameters_only(rng):
    c, seg, x, gy = small_case(rng, 2)
    seg.zero_grad()
    (seg(tl.tensor(x), tl.tensor(np.ones(c))) * tl.tensor(gy)).sum().backward()
    want = seg.w2.grad.copy()
    seg.zero_grad()
    xt, st = tl.tensor(x), tl.tensor(np.ones(c), requires_grad=True)
    (checkpoint(seg, xt, st) * tl.tensor(gy)).sum().backward()
    if xt.grad is not None:
        fail("dL/dx of an input that does not require grad", f"expected None, got {xt.grad}", rng)
    assert_close("dL/dW2 when the input needs no gradient", seg.w2.grad, want, rng)
    seg.zero_grad()
    (checkpoint(seg, tl.tensor(x)) * tl.tensor(gy)).sum().backward()  # only the parameters
    assert_close("dL/dW2 when no input needs a gradient (the parameters alone)", seg.w2.grad,
                 want, rng)
    seg.zero_grad()
    loss = (checkpoint(seg, tl.tensor(x)) * tl.tensor(gy)).sum()
    with tl.no_grad():  # backward called under no_grad: the recomputation needs the graph on
        loss.backward()
    assert_close("dL/dW2 when backward runs under no_grad (recompute inside enable_grad)",
                 seg.w2.grad, want, rng)


# ---------------------------------------------------------------------- 14.2 bfloat16
def reference_bfloat16(x):
    """Round-to-nearest-even on the integer bits, written with Python ints (NaN kept)."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    for i, (v, bits) in enumerate(zip(x.ravel(), x.ravel().view(np.uint32))):
        if np.isnan(v):
            out.flat[i] = v
            continue
        bits = int(bits)
        high, low = bits >> 16, bits & 0xFFFF
        if low > 0x8000 or (low == 0x8000 and high & 1):
            high += 1
        out.flat[i] = np.array([high << 16], dtype=np.uint32).view(np.float32)[0]
    return out


def hard_cases(rng):
    """Values over every magnitude, exact ties of both parities, overflow, specials."""
    mags = 10.0 ** rng.uniform(-40, 38.5, 200)
    vals = (mags * rng.choice([-1, 1], 200)).astype(np.float32)
    hi = rng.integers(0, 1 << 15, 40).astype(np.uint32) << 16
    ties = (hi | 0x8000).view(np.float32)                          # exactly half way
    near = (hi | rng.integers(0, 1 << 16, 40).astype(np.uint32)).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.39e38, 1.0, 1 + 2 ** -8,
                        1 + 3 * 2 ** -8, 1e-45, -1e-40, 65504.0], dtype=np.float32)
    # NaNs whose payload sits in the low bits: adding to their bits can carry them to infinity
    nans = np.array([0x7F800001, 0xFF800001, 0x7F807FFF, 0x7FC00000], dtype=np.uint32)
    return np.concatenate([vals, ties, -ties, near, special, nans.view(np.float32)])


@ex("14.2")
def test_14_2_round_to_nearest_even_like_the_references(rng):
    x = hard_cases(rng)
    want = reference_bfloat16(x)
    got = np.asarray(round_bfloat16(x))
    if got.dtype != np.float32 or got.shape != x.shape:
        fail("round_bfloat16(x)", f"expected float32 of shape {x.shape}, got {got.dtype} "
             f"{got.shape}", rng)
    bad = ~((got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want)))
    if bad.any():
        i = np.flatnonzero(bad)[:5]
        fail("round_bfloat16(x)", f"x = {x[i].tolist()} (bits {[hex(b) for b in x[i].view(np.uint32)]}) "
             f"should round to {want[i].tolist()}, got {got[i].tolist()}", rng)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with np.errstate(invalid="ignore"):  # the NaNs with a payload
        ref = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    assert_equal("round_bfloat16 against ml_dtypes.bfloat16", np.nan_to_num(got),
                 np.nan_to_num(ref), rng)


@ex("14.2")
def test_14_2_agrees_with_ml_dtypes_on_random_arrays(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (rng.standard_normal((int(rng.integers(1, 5)), int(rng.integers(1, 40))))
         * 10.0 ** rng.integers(-6, 6)).astype(np.float32)
    want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    assert_equal("round_bfloat16 against ml_dtypes' bfloat16", round_bfloat16(x), want, rng)
    y = x[:, ::2]  # a strided view rounds the same
    assert_equal("round_bfloat16 of a strided view", round_bfloat16(y), want[:, ::2], rng)
    assert_equal("round_bfloat16 leaves its input unchanged", x, x.copy(), rng)


# ---------------------------------------------------------------------- 14.3 the loss scaler
def simulate(flags, init, growth, backoff, interval):
    scale, good, history = init, 0, []
    for inf in flags:
        if inf:
            scale, good = scale * backoff, 0
        else:
            good += 1
            if good == interval:
                scale, good = scale * growth, 0
        history.append((scale, good))
    return history


@ex("14.3")
def test_14_3_halve_on_overflow_grow_after_clean_steps(rng):
    for _ in range(5):
        interval = int(rng.integers(1, 6))
        growth, backoff = float(rng.choice([2.0, 4.0])), float(rng.choice([0.5, 0.25]))
        init = float(2.0 ** rng.integers(4, 17))
        flags = rng.random(int(rng.integers(5, 40))) < rng.uniform(0.05, 0.5)
        s = DynamicLossScaler(init, growth, backoff, interval)
        want = simulate(flags, init, growth, backoff, interval)
        for step, (inf, (scale, good)) in enumerate(zip(flags, want)):
            s.update(bool(inf))
            what = (f"after step {step} ({'overflow' if inf else 'clean'}; flags so far "
                    f"{[int(f) for f in flags[:step + 1]]}, growth_interval={interval}, "
                    f"growth {growth}, backoff {backoff})")
            if s.scale != scale or s.good_steps != good:
                fail("DynamicLossScaler (scale, good_steps) " + what,
                     f"expected {(scale, good)}, got {(s.scale, s.good_steps)}", rng)
        if s.skipped != int(flags.sum()):
            fail("DynamicLossScaler.skipped", f"expected {int(flags.sum())} skipped steps, got "
                 f"{s.skipped}", rng)


@ex("14.3")
def test_14_3_an_overflow_never_grows_the_scale():
    s = DynamicLossScaler(1024.0, 2.0, 0.5, growth_interval=1)
    s.update(True)
    assert s.scale == 512.0, f"an overflow step must halve the scale: expected 512, got {s.scale}"
    s.update(False)
    assert s.scale == 1024.0, f"one clean step with growth_interval=1: expected 1024, got {s.scale}"
