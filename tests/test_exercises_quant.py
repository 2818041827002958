"""Grading tests of lesson 15's exercises: 15.1 absmax per-channel quantization, 15.2 group-wise
quantization with a zero point, 15.3 the int8 matmul with int32 accumulation and rescaling.

Every case is drawn fresh from the seeded ``rng`` fixture (replay with TINYLLM_TEST_SEED=<seed>)
and checked against NumPy written here from the formulas (float64 scales, int64 sums), plus the
properties that hold whatever the implementation: each weight is within half a step of its
reconstruction, the extremes of each row or group land on the extreme levels.
"""

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail

from tinyllm.quant import absmax_quantize, groupwise_quantize, int8_matmul

ex = pytest.mark.exercise


def weights(rng, rows, cols):
    """Rows of very different sizes (a scale per tensor would fail) and one outlier."""
    w = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-3, 0, (rows, 1))
    w[rng.integers(rows), rng.integers(cols)] *= 20
    return w.astype(np.float32)


# ---------------------------------------------------------------------- 15.1 absmax
@ex("15.1")
@pytest.mark.parametrize("bits", [8, 4])
def test_15_1_absmax_per_channel(rng, bits):
    for _ in range(3):
        w = weights(rng, int(rng.integers(2, 9)), int(rng.integers(2, 40)))
        w[0] = 0.0  # a row of zeros: scale 1, q 0
        qmax = 2 ** (bits - 1) - 1
        absmax = np.abs(w.astype(np.float64)).max(axis=1, keepdims=True)
        scale = np.where(absmax == 0, 1.0, absmax / qmax)
        want = np.clip(np.rint(w / scale), -qmax, qmax)
        q, s = absmax_quantize(w, bits)
        if np.asarray(q).dtype != np.int8:
            fail(f"absmax_quantize(w, bits={bits}) q", f"expected int8, got {q.dtype}", rng)
        assert_close(f"absmax_quantize(w {w.shape}, bits={bits}) scale, one per row (out, 1)",
                     s, scale, rng, rtol=1e-6, atol=0)
        assert_equal(f"absmax_quantize(w {w.shape}, bits={bits}) q = round(w / scale)", q,
                     want.astype(np.int8), rng)
        err = np.abs(q * s - w)
        if (err > s / 2 * (1 + 1e-5)).any():
            fail("|w - q scale|", "some weight is more than half a step from its value", rng)


@ex("15.1")
def test_15_1_works_on_the_last_axis_of_any_shape(rng):
    w = rng.standard_normal((2, 3, 16)).astype(np.float32)
    q, s = absmax_quantize(w, 8)
    scale = np.abs(w).max(axis=-1, keepdims=True) / 127
    assert_close("absmax_quantize scale of a (2, 3, 16) array", s, scale, rng, rtol=1e-6)
    assert_equal("the largest |w| of each row maps to +-127", np.abs(q).max(axis=-1),
                 np.full((2, 3), 127, dtype=np.int8), rng)


# ---------------------------------------------------------------------- 15.2 group-wise
def reference_groups(w, bits, g):
    out, n = w.shape
    x = w.astype(np.float64).reshape(out, n // g, g)
    levels = 2 ** bits - 1
    lo = np.minimum(x.min(-1, keepdims=True), 0)
    hi = np.maximum(x.max(-1, keepdims=True), 0)
    scale = (hi - lo) / levels
    scale = np.where(scale == 0, 1.0, scale)
    zero = np.clip(np.rint(-lo / scale), 0, levels)
    q = np.clip(np.rint(x / scale) + zero, 0, levels)
    return q.reshape(out, n), scale[..., 0], zero[..., 0]


@ex("15.2")
@pytest.mark.parametrize("bits", [4, 3, 8])
def test_15_2_groups_with_a_zero_point(rng, bits):
    for _ in range(3):
        g = int(rng.choice([2, 4, 8, 16]))
        w = weights(rng, int(rng.integers(2, 7)), g * int(rng.integers(1, 5)))
        w[0, :g] = np.abs(w[0, :g])      # a group of positive weights (its zero point is 0)
        w[-1, -g:] = -np.abs(w[-1, -g:])  # and one of negative weights (zero point 2^b - 1)
        q, s, z = groupwise_quantize(w, bits, g)
        wq, ws, wz = reference_groups(w, bits, g)
        where = f"groupwise_quantize(w {w.shape}, bits={bits}, group_size={g})"
        assert_close(f"{where} scale (out, n / g)", s, ws, rng, rtol=1e-5, atol=0)
        assert_equal(f"{where} zero (the integer level of 0)", np.asarray(z).astype(np.int64),
                     wz.astype(np.int64), rng)
        if np.asarray(q).dtype != np.uint8 or np.asarray(z).dtype != np.uint8:
            fail(where, f"q and zero must be uint8, got {q.dtype} and {z.dtype}", rng)
        bad = np.abs(q.astype(np.int64) - wq) > 0
        if bad.mean() > 0.01 or (np.abs(q.astype(np.int64) - wq) > 1).any():
            fail(f"{where} q = round(w / scale) + zero", f"{int(bad.sum())} of {bad.size} levels "
                 f"differ from the formula's (first at {np.argwhere(bad)[:3].tolist()})", rng)
        rec = (q.reshape(w.shape[0], -1, g) - z[..., None].astype(np.float64)) * s[..., None]
        if (np.abs(rec.reshape(w.shape) - w) > np.repeat(s, g, axis=1) * 0.5001).any():
            fail(f"{where}: (q - zero) * scale", "a weight is more than half a step off", rng)


@ex("15.2")
def test_15_2_zero_is_stored_exactly(rng):
    w = rng.standard_normal((3, 8)).astype(np.float32)
    w[:, ::3] = 0.0
    w[1, 4:] = 0.0  # a group of zeros: scale 1, zero point 0, levels 0
    with np.errstate(all="raise"):  # no division by a zero scale
        q, s, z = groupwise_quantize(w, 4, 4)
    rec = (q.reshape(3, 2, 4).astype(np.float64) - z[..., None]) * s[..., None]
    assert_equal("a weight of 0 reconstructs as exactly 0", rec.reshape(3, 8)[:, ::3],
                 np.zeros((3, 3)), rng)
    assert_equal("groupwise_quantize of a group of zeros: (scale, zero, q)",
                 np.array([float(s[1, 1]), float(z[1, 1]), *q[1, 4:].astype(float)]),
                 np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]), rng)


# ---------------------------------------------------------------------- 15.3 int8 matmul
@ex("15.3")
def test_15_3_int32_accumulation_and_rescaling(rng):
    for _ in range(3):
        n, k, m = int(rng.integers(1, 6)), int(rng.integers(1, 300)), int(rng.integers(1, 7))
        xq = rng.integers(-127, 128, (n, k)).astype(np.int8)
        wq = rng.integers(-127, 128, (m, k)).astype(np.int8)
        xq[0] = 127  # sums far beyond int8 and int16
        wq[0] = 127 if rng.random() < 0.5 else -127
        xs = rng.uniform(0.001, 0.1, (n, 1)).astype(np.float32)
        ws = rng.uniform(0.001, 0.1, (m, 1)).astype(np.float32)
        acc = xq.astype(np.int64) @ wq.astype(np.int64).T
        want = acc * xs.astype(np.float64) * ws.astype(np.float64).T
        got = int8_matmul(xq, xs, wq, ws)
        assert_close(f"int8_matmul(xq {xq.shape}, x_scale {xs.shape}, wq {wq.shape}, "
                     f"w_scale {ws.shape}) = (xq wq^T) x_scale w_scale^T", got, want, rng,
                     rtol=1e-5, atol=1e-6)
        if np.asarray(got).dtype != np.float32:
            fail("int8_matmul's result", f"expected float32, got {got.dtype}", rng)


@ex("15.3")
def test_15_3_approximates_the_float_product(rng):
    x = rng.standard_normal((4, 32)).astype(np.float32)
    w = rng.standard_normal((5, 32)).astype(np.float32)
    xs = np.abs(x).max(1, keepdims=True) / 127
    ws = np.abs(w).max(1, keepdims=True) / 127
    xq = np.rint(x / xs).astype(np.int8)
    wq = np.rint(w / ws).astype(np.int8)
    got = int8_matmul(xq, xs, wq, ws)
    err = np.abs(got - x @ w.T).max()
    if err > 0.05 * np.abs(x @ w.T).max():
        fail("int8_matmul of quantized x and w", f"far from x @ w.T (max error {err:.3g})", rng)
