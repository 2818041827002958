"""``tinyllm.functional``: forward against NumPy closed forms, gradients against finite
differences."""

import math

import numpy as np
import pytest
from helpers import assert_close, check_grads, to_numpy

import tinyllm as tl
import tinyllm.functional as F


def np_log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_attention(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v


def np_gelu(x):
    vals = [0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in x.ravel()]
    return np.array(vals).reshape(x.shape)


# ---------------------------------------------------------------------- forward values
def test_softmax_and_log_softmax_forward(rng, device):
    x = rng.standard_normal((2, 3, 5)) * 3
    for axis in (-1, 1, 0):
        want = np_log_softmax(x, axis)
        t = tl.tensor(x, device=device)
        assert_close(F.log_softmax(t, axis=axis), want, f"log_softmax {axis}")
        assert_close(F.softmax(t, axis=axis), np.exp(want), f"softmax {axis}")
    t = tl.tensor(x, device=device)
    assert_close(F.softmax(t, dim=1), np.exp(np_log_softmax(x, 1)), "dim=")


def test_log_softmax_is_stable_at_large_logits(device):
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype=np.float32)
    for fn in (F.log_softmax, F.softmax):
        out = to_numpy(fn(tl.tensor(x, device=device)))
        assert np.all(np.isfinite(out)), f"{fn.__name__} at 1e4 gave {out}"
    ls = to_numpy(F.log_softmax(tl.tensor(x, device=device)))
    np.testing.assert_allclose(ls[0], [0.0, -1e4, -2e4], rtol=1e-6)
    np.testing.assert_allclose(ls[1], [-math.log(3)] * 3, rtol=1e-6)
    t = tl.tensor(x, requires_grad=True, device=device)
    F.cross_entropy(t, np.array([1, 2])).backward()
    assert np.all(np.isfinite(to_numpy(t.grad)))


@pytest.mark.parametrize("case", ["plain scores", "causal", "scores above 60", "a row all masked",
                                  "a row far below 0", "rows around -30"])
def test_attention_float32_fast_path_equals_the_plain_form(case, rng, device):
    """In float32 on NumPy the fast path skips the row maxima when no score is above 60, and
    falls back to them for large scores or a row whose sum would be tiny. In every case its
    weights, compared element by element, are as close to the float64 result as the plain
    form's float32 ones (within 4 times their largest relative error); its outputs and
    gradients are within 4 times the plain form's error or a floor, and all are finite.

    The weights are what the fast path changes, and their relative errors are steady from one
    draw to the next (fast / plain: at most 1.6 over 1500 draws). The outputs and gradients go
    through near-cancelling differences (dS = P (dP - rowsum(dP P)), where one key takes most
    of a row's weight), whose float32 error varies tenfold between draws in either form, so
    they get a floor as well: 1e-6 of their size, and 1e-4 in the rows around -30, built to
    make one key dominate identical rows (the worst of either form over 1500 draws: 1.3e-5).
    A wrong formula is off by far more than either."""
    b, h, t, d = 2, 3, int(rng.integers(5, 40)), 8
    q, k, v, gy = (rng.standard_normal((b, h, t, d)).astype(np.float32) for _ in range(4))
    kwargs, mask = {"is_causal": case == "causal"}, None
    if case == "scores above 60":
        q *= 100  # scores of a few hundred: exp would overflow (above 88) without the shift
    if case == "a row far below 0":  # every score of head 0 below -100: the plain form's turn
        q[0, 0] = -400 * np.abs(k[0, 0]).mean(axis=0)
        k[0, 0] = np.abs(k[0, 0])
    if case == "rows around -30":  # head 0's scores about -15 to -45: small sums, still exact
        q[0, 0] = -13.0
        k[0, 0] = np.abs(k[0, 0])
    if case == "a row all masked":
        mask = np.ones((b, 1, 1, t), dtype=bool)
        mask[1] = False  # batch row 1 sees no key: uniform weights, as the plain form gives

    def run(fast, dtype):
        with tl.fast_paths(fast):
            ts = [tl.tensor(a.astype(dtype), requires_grad=True, device=device) for a in (q, k, v)]
            y, w = F.scaled_dot_product_attention(
                *ts, mask=None if mask is None else tl.tensor(mask, device=device),
                return_weights=True, **kwargs)
            y.backward(tl.tensor(gy.astype(dtype), device=device))
            return [to_numpy(a) for a in (w, y, *(x.grad for x in ts))]

    fast, plain, exact = run(True, np.float32), run(False, np.float32), run(False, np.float64)
    held = exact[0] >= 1e-30  # weights float32 holds as normal numbers (the rest underflow)
    rel = [float((np.abs(w[held] - exact[0][held]) / exact[0][held]).max())
           for w in (fast[0], plain[0])]
    assert rel[0] <= 4 * max(rel[1], float(np.finfo(np.float32).eps)), (
        f"attention weights ({case}): the fast path's are up to {rel[0]:.3g} from the float64 "
        f"result (relative), the plain float32 form's {rel[1]:.3g}")
    floor = 1e-4 if case == "rows around -30" else 1e-6
    for name, got, ref, want in zip(("weights", "output", "dq", "dk", "dv"), fast, plain, exact):
        assert got.dtype == np.float32, f"{case}: fast {name} are {got.dtype}"
        assert np.all(np.isfinite(got)), f"{case}: fast {name} not finite"
        err, err_plain = np.abs(got - want).max(), np.abs(ref - want).max()
        bound = max(4 * float(err_plain), floor * max(1.0, float(np.abs(want).max())))
        assert err <= bound, (f"attention {name} ({case}): the fast path is {err:.3g} from the "
                              f"float64 result, the plain float32 form {err_plain:.3g}")
    if case == "a row far below 0":
        assert fast[0][0, 0].sum(axis=-1) == pytest.approx(np.ones(t), abs=1e-5)


def test_gelu_exact_matches_math_erf(rng, device):
    x = np.concatenate([rng.standard_normal(50) * 3, [-10.0, -5.0, 0.0, 5.0, 10.0]])
    for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-6)):
        got = to_numpy(F.gelu(tl.tensor(x.astype(dtype), device=device)))
        assert got.dtype == dtype
        np.testing.assert_allclose(got, np_gelu(x), atol=tol, rtol=tol * 10)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_fast_path_equals_the_plain_form(approximate, layout, rng, device):
    """GELU's in-place float32 fast path: the plain form's values and gradients to float32
    rounding, over a wide range (both tails, exact and negative zeros, values below float32's
    normal range), contiguous (where the sign is moved with integer ops) and strided."""
    x = np.concatenate([rng.standard_normal(3000) * 4, [-30.0, -9.0, -0.0, 0.0, 9.0, 30.0],
                        [1e-30, -1e-30, 1e-40, -1e-40, 1e-8, -1e-8]])
    x = x.astype(np.float32).reshape(-1, 6)
    x = x[:, ::2] if layout == "strided" else x
    gy = rng.standard_normal(x.shape).astype(np.float32)
    out = {}
    for fast in (True, False):
        with tl.fast_paths(fast):
            t = tl.tensor(x, requires_grad=True, device=device)
            y = F.gelu(t, approximate=approximate)
            y.backward(tl.tensor(gy, device=device))
            out[fast] = to_numpy(y), to_numpy(t.grad)
    for i, what in enumerate(("values", "gradients")):
        got, want = out[True][i], out[False][i]
        assert got.dtype == np.float32, f"fast {what} are {got.dtype}"
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6,
                                   err_msg=f"gelu({approximate!r}) fast {what} vs plain")
    assert np.all(np.isfinite(out[True][1])), "fast GELU gradient not finite in the tails"


def test_gelu_tanh_matches_formula(rng, device):
    x = rng.standard_normal(30) * 3
    want = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert_close(F.gelu(tl.tensor(x, device=device), approximate="tanh"), want, "gelu tanh")


def test_relu_sigmoid_tanh_linear(rng, device):
    x = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((5, 4))
    b = rng.standard_normal(5)
    assert_close(F.relu(tl.tensor(x, device=device)), np.maximum(x, 0), "relu")
    assert_close(F.sigmoid(tl.tensor(x, device=device)), 1 / (1 + np.exp(-x)), "sigmoid")
    assert_close(F.tanh(tl.tensor(x, device=device)), np.tanh(x), "tanh")
    t = lambda a: tl.tensor(a, device=device)
    assert_close(F.linear(t(x), t(w), t(b)), x @ w.T + b, "linear")
    assert_close(F.linear(t(x), t(w)), x @ w.T, "linear without bias")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_forward(rng, device, reduction):
    logits = rng.standard_normal((2, 3, 5)) * 2
    targets = rng.integers(0, 5, size=(2, 3))
    targets[0, 1] = -100
    per = -np.take_along_axis(np_log_softmax(logits), targets.clip(0)[..., None], -1)[..., 0]
    per[targets == -100] = 0
    want = {"mean": per.sum() / (targets != -100).sum(), "sum": per.sum(), "none": per}[reduction]
    got = F.cross_entropy(tl.tensor(logits, device=device), targets, reduction=reduction)
    assert_close(got, np.asarray(want), f"cross_entropy {reduction}")


def test_cross_entropy_custom_ignore_index(rng, device):
    logits = rng.standard_normal((4, 3))
    t = np.array([0, 2, 1, 2])
    got = F.cross_entropy(tl.tensor(logits, device=device), t, ignore_index=2)
    lsm = np_log_softmax(logits)
    assert_close(got, np.asarray(-(lsm[0, 0] + lsm[2, 1]) / 2), "ignore_index=2")


def test_layer_norm_forward(rng, device):
    x = rng.standard_normal((2, 3, 6)) * 2 + 1
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    want = (x - mu) / np.sqrt(var + 1e-5) * w + b
    t = lambda a: tl.tensor(a, device=device)
    assert_close(F.layer_norm(t(x), t(w), t(b)), want, "layer_norm")
    want2 = (x - mu) / np.sqrt(var + 0.1) * w + b
    assert_close(F.layer_norm(t(x), t(w), t(b), eps=0.1), want2, "layer_norm eps=0.1")


def test_embedding_forward(rng, device):
    w = rng.standard_normal((7, 3))
    ids = rng.integers(0, 7, size=(2, 4))
    assert_close(F.embedding(ids, tl.tensor(w, device=device)), w[ids], "embedding")
    assert_close(F.embedding(tl.tensor(ids, device=device), tl.tensor(w, device=device)), w[ids],
                 "embedding with tensor ids")


def test_dropout(device):
    tl.manual_seed(0)
    x = tl.tensor(np.ones((200, 100)), device=device)
    assert F.dropout(x, 0.3, training=False) is x
    assert F.dropout(x, 0.0) is x
    y = to_numpy(F.dropout(x, 0.3, training=True))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02, f"kept fraction {kept.mean()}, expected about 0.7"
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    xg = tl.tensor(np.ones((50, 40)), requires_grad=True, device=device)
    y = F.dropout(xg, 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(xg.grad), to_numpy(y))  # the same mask, scaled


def test_scaled_dot_product_attention_forward(rng, device):
    q, k, v = (rng.standard_normal(s) for s in [(2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5)])
    t = lambda a: tl.tensor(a, device=device)
    assert_close(F.scaled_dot_product_attention(t(q), t(k), t(v)), np_attention(q, k, v), "sdpa")
    mask = rng.random((2, 1, 1, 6)) < 0.7
    mask[..., 0] = True
    assert_close(F.scaled_dot_product_attention(t(q), t(k), t(v), mask=mask),
                 np_attention(q, k, v, mask), "sdpa with padding mask")
    causal = np.tril(np.ones((4, 6), bool), k=2)
    assert_close(F.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=True),
                 np_attention(q, k, v, causal), "sdpa causal with S > T")
    out, weights = F.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=True,
                                                  return_weights=True)
    assert np.all(to_numpy(weights)[..., ~causal] < 1e-30)
    np.testing.assert_allclose(to_numpy(weights).sum(-1), 1.0)


def test_causal_mask():
    np.testing.assert_array_equal(F.causal_mask(3), np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(F.causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])


def test_fused_matches_composed(rng):
    x = rng.standard_normal((3, 5))
    t = tl.tensor(x, requires_grad=True)
    composed = t - t.max(axis=-1, keepdims=True)
    composed = composed - composed.exp().sum(axis=-1, keepdims=True).log()
    composed.sum().backward()
    g_composed = t.grad
    t.grad = None
    fused = F.log_softmax(t)
    fused.sum().backward()
    assert_close(fused, composed.detach(), "log_softmax fused vs composed")
    assert_close(t.grad, g_composed, "log_softmax gradient fused vs composed")


# ---------------------------------------------------------------------- gradients (float64)
def _mask(shape, rng):
    m = rng.random(shape) < 0.6
    m[..., 0] = True
    return m


GRAD_CASES = [
    ("softmax", lambda x: F.softmax(x), [(2, 3, 4)]),
    ("softmax_axis0", lambda x: F.softmax(x, axis=0), [(3, 4)]),
    ("log_softmax", lambda x: F.log_softmax(x), [(2, 3, 4)]),
    ("log_softmax_axis1", lambda x: F.log_softmax(x, axis=1), [(2, 3, 4)]),
    ("gelu", lambda x: F.gelu(x), [(3, 5)]),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), [(3, 5)]),
    ("relu", lambda x: F.relu(x), [(3, 5)]),
    ("sigmoid", lambda x: F.sigmoid(x), [(3, 5)]),
    ("tanh", lambda x: F.tanh(x), [(3, 5)]),
    ("linear", lambda x, w, b: F.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)]),
    ("linear_1d", lambda x, w: F.linear(x, w), [(4,), (5, 4)]),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, w, b), [(2, 3, 6), (6,), (6,)]),
    ("layer_norm_eps", lambda x, w, b: F.layer_norm(x, w, b, eps=0.5), [(4, 3), (3,), (3,)]),
    ("embedding", lambda w: F.embedding(np.array([[0, 2, 2], [4, 0, 2]]), w), [(5, 3)]),
    ("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
     [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)]),
    ("sdpa_causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     [(2, 4, 3), (2, 4, 3), (2, 4, 2)]),
    ("sdpa_causal_cache", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     [(1, 2, 3), (1, 4, 3), (1, 4, 2)]),
    ("sdpa_kv_broadcast", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
     [(2, 3, 3, 4), (2, 1, 5, 4), (5, 3)]),
    ("sdpa_scale", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3),
     [(3, 4), (2, 4), (2, 3)]),
]


@pytest.mark.parametrize("name,fn,shapes", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_functional_gradient_matches_finite_differences(name, fn, shapes, rng, device):
    arrays = [rng.standard_normal(s) for s in shapes]
    check_grads(fn, *arrays, rng=rng, device=device, name=name, atol=1e-6, rtol=1e-4)


def test_sdpa_mask_gradient(rng, device):
    mask = _mask((2, 1, 3, 5), rng)  # broadcasts over heads
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=mask)
    arrays = [rng.standard_normal(s) for s in [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)]]
    check_grads(fn, *arrays, rng=rng, device=device, name="sdpa mask")


def test_sdpa_mask_and_causal_gradient(rng, device):
    mask = _mask((1, 4), rng)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True)
    arrays = [rng.standard_normal(s) for s in [(2, 4, 3), (2, 4, 3), (2, 4, 2)]]
    check_grads(fn, *arrays, rng=rng, device=device, name="sdpa mask & causal")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient(reduction, rng, device):
    targets = rng.integers(0, 4, size=(2, 3))
    targets[1, 2] = -100
    fn = lambda x: F.cross_entropy(x, targets, reduction=reduction)
    check_grads(fn, rng.standard_normal((2, 3, 4)), rng=rng, device=device, name="cross_entropy")


def test_cross_entropy_2d_gradient_with_ignore(rng, device):
    targets = np.array([3, -1, 0, 3, -1])
    fn = lambda x: F.cross_entropy(x, targets, ignore_index=-1)
    check_grads(fn, rng.standard_normal((5, 4)), rng=rng, device=device, name="cross_entropy 2d")


# ---------------------------------------------------------------------- #15: 0-d, new F.*
def test_softmax_and_gelu_on_0d_tensors(device):
    x = tl.tensor(np.array(0.7), requires_grad=True, device=device)
    for fn, want in ((F.softmax, 1.0), (F.log_softmax, 0.0),
                     (F.gelu, 0.7 * 0.5 * (1 + math.erf(0.7 / math.sqrt(2)))),
                     (lambda a: F.gelu(a, approximate="tanh"), None)):
        y = fn(x)
        assert y.shape == ()
        if want is not None:
            assert abs(y.item() - want) < 1e-12
        y.backward()
    assert x.grad.shape == ()


def test_mse_loss_and_pad_refuse_bad_arguments():
    a = tl.tensor(np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"\(3, 1\).*\(3,\)"):
        F.mse_loss(a, tl.tensor(np.zeros(3)))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(a, a, reduction="avg")
    with pytest.raises(ValueError, match="pairs"):
        F.pad(a, (1,))
    with pytest.raises(ValueError, match="pairs"):
        F.pad(a, (-1, 0))
    with pytest.raises(NotImplementedError, match="reflect"):
        F.pad(a, (1, 1), mode="reflect")


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"dropout_p": 0.0, "scale": 0.3}])
def test_attention_fast_path_equals_the_plain_form(kwargs, rng, device):
    """The in-place fast path gives the plain form's values and gradients (and both are right)."""
    arrays = [rng.standard_normal(s) for s in [(2, 3, 4), (2, 3, 4), (2, 3, 2)]]
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs)
    results = []
    for fast in (True, False):
        with tl.fast_paths(fast):
            results.append(check_grads(fn, *arrays, rng=np.random.default_rng(0), device=device,
                                       name=f"attention fast={fast}"))
    for g_fast, g_plain in zip(*results):
        np.testing.assert_allclose(g_fast, g_plain, rtol=1e-12, atol=1e-14)

