"""Grading tests of lesson 19's exercises: 19.1 RoPE, 19.2 RMSNorm, 19.3 repeat_kv, 19.4 SwiGLU.

Each test checks a fixed example and fresh random shapes and values drawn from the seeded ``rng``
fixture (the seed is printed on failure; replay with TINYLLM_TEST_SEED=<seed>), against
independent NumPy: the rotation of each channel pair written as a 2x2 matrix, loops over heads,
closed-form derivatives and ``helpers.fd_grads`` central differences. No test needs a later
exercise: each calls its own Function, and the tables a test feeds to RoPE are its own.
"""

import numpy as np
import pytest
from helpers import fd_grads

import tinyllm as tl
from tinyllm.repeat_kv import RepeatKV
from tinyllm.rms_norm import RMSNorm
from tinyllm.rope import RoPE, rope_angles, rotate_half
from tinyllm.swiglu import SwiGLU

ex = pytest.mark.exercise


def close(got, want, what, atol=1e-9, rtol=1e-7):
    got = np.asarray(got.numpy() if isinstance(got, tl.Tensor) else got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: expected shape {want.shape}, got {got.shape}"
    if not np.allclose(got, want, atol=atol, rtol=rtol):
        i = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
        raise AssertionError(f"{what}: at index {tuple(int(j) for j in i)} expected "
                             f"{want[i]:.8g}, got {got[i]:.8g} (max difference "
                             f"{np.max(np.abs(got - want)):.3g})\nexpected:\n{want}\ngot:\n{got}")


def run(fn, *arrays, gy, needs=None):
    """Call a Function's forward then backward directly on arrays (no autograd machinery)."""
    fn.needs_grad = needs or (True,) * len(arrays)
    y = fn.forward(*arrays)
    return y, fn.backward(gy)


# ---------------------------------------------------------------------- 19.1 RoPE
def pair_rotation(x, angles):
    """Rotate channel pairs (i, i + D/2) of x (..., T, D) by angles (T, D/2), as 2x2 matrices."""
    half = x.shape[-1] // 2
    y = np.empty_like(x)
    for i in range(half):
        c, s = np.cos(angles[:, i]), np.sin(angles[:, i])
        a, b = x[..., i], x[..., i + half]
        y[..., i], y[..., i + half] = c * a - s * b, s * a + c * b
    return y


def tables(angles):
    both = np.concatenate([angles, angles], axis=-1)
    return np.cos(both), np.sin(both)


@ex("19.1")
def test_19_1_angles_use_the_base_and_the_pair_index(rng):
    close(rope_angles(np.array([0, 1, 2]), 4, base=100.0),
          [[0, 0], [1, 0.1], [2, 0.2]], "rope_angles([0, 1, 2], head_dim=4, base=100): "
          "theta_i = base ** (-2i / head_dim) = [1, 0.1], times each position")
    d, base = 2 * int(rng.integers(2, 9)), float(rng.uniform(2.0, 1e6))
    pos = np.sort(rng.choice(5000, size=int(rng.integers(2, 7)), replace=False))
    want = pos[:, None].astype(np.float64) * base ** (-np.arange(0, d, 2) / d)
    got = rope_angles(pos, d, base)
    close(got, want, f"rope_angles(positions={pos.tolist()}, head_dim={d}, base={base:.6g}) "
          "(in float64)", atol=0, rtol=1e-9)


@ex("19.1")
def test_19_1_rotate_half(rng):
    close(rotate_half(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])), [-4, -5, -6, 1, 2, 3],
          "rotate_half([x1 | x2]) = [-x2 | x1] on the halves of the last axis")
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), 2 * int(rng.integers(1, 6)))
    x = rng.standard_normal(shape)
    h = shape[-1] // 2
    close(rotate_half(x), np.concatenate([-x[..., h:], x[..., :h]], axis=-1),
          f"rotate_half of shape {shape}")


@ex("19.1")
def test_19_1_forward_rotates_each_pair(rng):
    x = np.array([[1.0, 0.0, 0.0, 2.0]])  # pairs (x0, x2) = (1, 0) and (x1, x3) = (0, 2)
    cos, sin = tables(np.array([[np.pi / 2, np.pi]]))
    y, _ = run(RoPE(cos, sin), x, gy=np.ones_like(x))
    close(y, [[0.0, 0.0, 1.0, -2.0]], "RoPE of [1, 0, 0, 2]: pair (x0, x2) turned by 90 degrees, "
          "pair (x1, x3) by 180", atol=1e-12)
    b, h, t, d = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(2, 6)),
                  2 * int(rng.integers(1, 5)))
    angles = rng.uniform(-np.pi, np.pi, size=(t, d // 2))
    x = rng.standard_normal((b, h, t, d))
    cos, sin = tables(angles)
    y, _ = run(RoPE(cos, sin), x, gy=np.ones_like(x))
    close(y, pair_rotation(x, angles), f"RoPE forward for x of shape {(b, h, t, d)} (each pair "
          "(x_i, x_{i+D/2}) rotated by its angle)")


@ex("19.1")
def test_19_1_backward_is_the_inverse_rotation(rng):
    t, d = int(rng.integers(2, 6)), 2 * int(rng.integers(1, 5))
    angles = rng.uniform(-np.pi, np.pi, size=(t, d // 2))
    cos, sin = tables(angles)
    x = rng.standard_normal((2, t, d))
    gy = rng.standard_normal(x.shape)
    _, (gx,) = run(RoPE(cos, sin), x, gy=gy)
    close(gx, pair_rotation(gy, -angles), "RoPE backward: the transpose of a rotation is the "
          "rotation by minus the angle, dx = R(-angle) dy")
    fd = fd_grads(lambda a: RoPE(cos, sin)(a), [x], gy)[0]
    xt = tl.tensor(x, requires_grad=True)
    RoPE(cos, sin)(xt).backward(gy)
    close(xt.grad, fd, "d RoPE / dx through autograd against central differences", atol=1e-6)


# ---------------------------------------------------------------------- 19.2 RMSNorm
def np_rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


@ex("19.2")
def test_19_2_forward(rng):
    y, _ = run(RMSNorm(eps=0.0), np.array([[3.0, -4.0]]), np.array([1.0, 2.0]),
               gy=np.ones((1, 2)))
    close(y, [[3 / np.sqrt(12.5), -8 / np.sqrt(12.5)]], "rms_norm([3, -4], w=[1, 2], eps=0): "
          "rms = sqrt((9 + 16) / 2)")
    shape = tuple(int(n) for n in rng.integers(1, 4, size=int(rng.integers(1, 3)))) + (
        int(rng.integers(2, 8)),)
    x = rng.standard_normal(shape) * 0.5 + float(rng.uniform(0.5, 2))  # a mean far from 0
    w = rng.standard_normal(shape[-1])
    eps = float(rng.uniform(0.05, 0.5))  # large enough to matter
    y, _ = run(RMSNorm(eps=eps), x, w, gy=np.ones(shape))
    close(y, np_rms_norm(x, w, eps), f"RMSNorm forward, x of shape {shape}, eps={eps:.3f} "
          "(x / sqrt(mean(x^2) + eps) * w: no mean subtracted)")


@ex("19.2")
def test_19_2_backward(rng):
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(2, 7)))
    x = rng.standard_normal(shape) + 0.7
    w = rng.standard_normal(shape[-1])
    eps = float(rng.uniform(1e-3, 0.3))
    gy = rng.standard_normal(shape)
    fn = RMSNorm(eps=eps)
    _, (gx, gw) = run(fn, x, w, gy=gy)
    r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    xhat, g = x * r, gy * w
    close(gx, r * (g - xhat * (g * xhat).mean(-1, keepdims=True)),
          f"RMSNorm backward dx for shape {shape}, eps={eps:.3f}: r (g - xhat mean(g xhat)), "
          "g = dy w (LayerNorm's - mean(g) term is not there)")
    close(gw, (gy * xhat).reshape(-1, shape[-1]).sum(0), "RMSNorm backward dw = sum of dy * xhat")
    want = fd_grads(lambda a, b: RMSNorm(eps=eps)(a, b), [x, w], gy)
    xt, wt = tl.tensor(x, requires_grad=True), tl.tensor(w, requires_grad=True)
    RMSNorm(eps=eps)(xt, wt).backward(gy)
    close(xt.grad, want[0], "d rms_norm / dx against central differences", atol=1e-6)
    close(wt.grad, want[1], "d rms_norm / dw against central differences", atol=1e-6)


# ---------------------------------------------------------------------- 19.3 repeat_kv
@ex("19.3")
def test_19_3_forward_repeats_each_head_in_order(rng):
    x = np.arange(2.0).reshape(1, 2, 1, 1)  # key/value heads [a, b] = [0, 1]
    y, _ = run(RepeatKV(3), x, gy=np.ones((1, 6, 1, 1)))
    close(y.reshape(-1), [0, 0, 0, 1, 1, 1], "repeat_kv of heads [a, b] with n_rep=3 is "
          "[a, a, a, b, b, b] (query head h reads key/value head h // n_rep)")
    b, h, t, d = (int(rng.integers(1, 3)), int(rng.integers(2, 5)), int(rng.integers(1, 5)),
                  int(rng.integers(1, 5)))
    n_rep = int(rng.integers(2, 5))
    x = rng.standard_normal((b, h, t, d))
    y, _ = run(RepeatKV(n_rep), x, gy=np.ones((b, h * n_rep, t, d)))
    want = np.stack([x[:, q // n_rep] for q in range(h * n_rep)], axis=1)
    close(y, want, f"repeat_kv of (B, n_kv_head, T, D) = {(b, h, t, d)} with n_rep={n_rep}")


@ex("19.3")
def test_19_3_backward_sums_the_copies(rng):
    b, h, t, d = (int(rng.integers(1, 3)), int(rng.integers(2, 5)), int(rng.integers(1, 5)),
                  int(rng.integers(1, 5)))
    n_rep = int(rng.integers(2, 5))
    x = rng.standard_normal((b, h, t, d))
    gy = rng.standard_normal((b, h * n_rep, t, d))
    _, (gx,) = run(RepeatKV(n_rep), x, gy=gy)
    want = np.zeros_like(x)
    for q in range(h * n_rep):
        want[:, q // n_rep] += gy[:, q]
    close(gx, want, f"repeat_kv backward with n_kv_head={h}, n_rep={n_rep}: key/value head j "
          "gets the sum of the gradients of query heads j*n_rep .. j*n_rep + n_rep - 1")
    xt = tl.tensor(x, requires_grad=True)
    RepeatKV(n_rep)(xt).backward(gy)
    close(xt.grad, want, "the same through autograd")


# ---------------------------------------------------------------------- 19.4 SwiGLU
def sig(a):
    return 1 / (1 + np.exp(-a))


@ex("19.4")
def test_19_4_forward(rng):
    y, _ = run(SwiGLU(), np.array([0.0, 2.0, -1.0]), np.array([5.0, 3.0, 4.0]),
               gy=np.ones(3))
    close(y, [0.0, 2 * sig(2.0) * 3, -sig(-1.0) * 4],
          "swiglu(gate=[0, 2, -1], up=[5, 3, 4]) = gate * sigmoid(gate) * up")
    shape = tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(1, 4))))
    gate, up = rng.standard_normal(shape) * 2, rng.standard_normal(shape) + 1
    y, _ = run(SwiGLU(), gate, up, gy=np.ones(shape))
    close(y, gate * sig(gate) * up, f"swiglu forward for shape {shape}: silu(gate) * up")


@ex("19.4")
def test_19_4_backward(rng):
    shape = tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(1, 4))))
    gate, up = rng.standard_normal(shape) * 2, rng.standard_normal(shape) + 1
    gy = rng.standard_normal(shape)
    _, (g_gate, g_up) = run(SwiGLU(), gate, up, gy=gy)
    s = sig(gate)
    close(g_gate, gy * up * s * (1 + gate * (1 - s)), "d swiglu / d gate = dy * up * "
          "silu'(gate), silu'(a) = s (1 + a (1 - s)) with s = sigmoid(a)")
    close(g_up, gy * gate * s, "d swiglu / d up = dy * silu(gate)")
    _, (g_gate, g_up) = run(SwiGLU(), gate, up, gy=gy, needs=(False, True))
    assert g_gate is None, "SwiGLU.backward should return None for an input with needs_grad False"
    _, (g_gate, g_up) = run(SwiGLU(), gate, up, gy=gy, needs=(True, False))
    assert g_up is None, "SwiGLU.backward should return None for an input with needs_grad False"
    want = fd_grads(lambda a, b: SwiGLU()(a, b), [gate, up], gy)
    at, bt = tl.tensor(gate, requires_grad=True), tl.tensor(up, requires_grad=True)
    SwiGLU()(at, bt).backward(gy)
    close(at.grad, want[0], "d swiglu / d gate against central differences", atol=1e-6)
    close(bt.grad, want[1], "d swiglu / d up against central differences", atol=1e-6)
