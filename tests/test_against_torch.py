"""Forward values and gradients of every op and F function against PyTorch autograd."""

import numpy as np
import pytest
from helpers import broadcast_partner, random_shape, to_numpy

import tinyllm as tl
import tinyllm.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

pytestmark = pytest.mark.torch

TOL = {np.float64: dict(atol=1e-10, rtol=1e-8), np.float32: dict(atol=2e-5, rtol=2e-4)}

MASK = np.array([[True, False, True, True], [True, True, False, True], [True, False, False, False]])
IDX = np.array([2, 0, 2, 2])
TGT = np.array([[1, 0, 4], [-100, 3, 3]])


def _tsdpa(q, k, v, mask=None, is_causal=False):
    if is_causal:  # torch aligns the causal mask top-left; tinyllm bottom-right (KV cache)
        t, s = q.shape[-2], k.shape[-2]
        cm = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        mask = cm if mask is None else (mask & cm)
    return TF.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# (id, tinyllm fn, torch fn, shapes, kind)
CASES = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, [(2, 3, 4), (3, 1)], None),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, [(4,), (2, 3, 4)], None),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, [(2, 3, 4), ()], None),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [(2, 3, 4), (3, 1)], "away"),
    ("scalars", lambda a: 1 - a * 0.5 + 2 / (a + 3) - a / 3 + (2 + a) * 3,
     lambda a: 1 - a * 0.5 + 2 / (a + 3) - a / 3 + (2 + a) * 3, [(3, 2)], "pos"),
    ("neg", lambda a: -a, lambda a: -a, [(3,)], None),
    ("pow", lambda a: a ** 2 + a ** 3 + a ** 0.5 + a ** -1.0,
     lambda a: a ** 2 + a ** 3 + a ** 0.5 + a ** -1.0, [(2, 3)], "pos"),
    ("matmul_1d_1d", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)], None),
    ("matmul_1d_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 3)], None),
    ("matmul_2d_1d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4,)], None),
    ("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 5)], None),
    ("matmul_bcast", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)], None),
    ("matmul_batched_1d", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4,)], None),
    ("exp", lambda a: a.exp(), lambda a: a.exp(), [(2, 3)], None),
    ("log", lambda a: a.log(), lambda a: a.log(), [(2, 3)], "pos"),
    ("sqrt", lambda a: a.sqrt(), lambda a: a.sqrt(), [(2, 3)], "pos"),
    ("tanh", lambda a: a.tanh(), lambda a: a.tanh(), [(2, 3)], None),
    ("relu", lambda a: a.relu(), lambda a: a.relu(), [(2, 3)], "away"),
    ("sigmoid", lambda a: a.sigmoid(), lambda a: a.sigmoid(), [(2, 3)], None),
    ("tl_funcs", lambda a: tl.exp(a) + tl.log(a) + tl.sqrt(a) + tl.tanh(a),
     lambda a: a.exp() + a.log() + a.sqrt() + a.tanh(), [(3,)], "pos"),
    ("sum", lambda a: a.sum(), lambda a: a.sum(), [(2, 3, 4)], None),
    ("sum_axis", lambda a: a.sum(axis=-2), lambda a: a.sum(dim=-2), [(2, 3, 4)], None),
    ("sum_tuple_keep", lambda a: a.sum(axis=(0, 2), keepdims=True),
     lambda a: a.sum(dim=(0, 2), keepdim=True), [(2, 3, 4)], None),
    ("mean", lambda a: a.mean(), lambda a: a.mean(), [(2, 3, 4)], None),
    ("mean_tuple", lambda a: a.mean(axis=(-1, 0)), lambda a: a.mean(dim=(-1, 0)),
     [(2, 3, 4)], None),
    ("mean_keep", lambda a: a.mean(axis=1, keepdims=True), lambda a: a.mean(dim=1, keepdim=True),
     [(2, 3, 4)], None),
    ("max", lambda a: a.max(), lambda a: a.max(), [(2, 3, 4)], None),
    ("max_axis", lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [(2, 3, 4)], None),
    ("max_tuple_keep", lambda a: a.max(axis=(0, -1), keepdims=True),
     lambda a: a.amax(dim=(0, -1), keepdim=True), [(2, 3, 4)], None),
    ("var", lambda a: a.var(axis=-1), lambda a: a.var(dim=-1, unbiased=False), [(3, 5)], None),
    ("reshape", lambda a: a.reshape(-1, 6), lambda a: a.reshape(-1, 6), [(2, 3, 4)], None),
    ("transpose2", lambda a: a.transpose(0, 2), lambda a: a.transpose(0, 2), [(2, 3, 4)], None),
    ("transpose_neg", lambda a: a.transpose(-1, -2), lambda a: a.transpose(-1, -2),
     [(2, 3, 4)], None),
    ("permute", lambda a: a.permute(1, 2, 0), lambda a: a.permute(1, 2, 0), [(2, 3, 4)], None),
    ("T", lambda a: a.T, lambda a: a.T, [(3, 4)], None),
    ("index", lambda a: a[1:, ::2] * a[-1, 1:3], lambda a: a[1:, ::2] * a[-1, 1:3], [(3, 4)], None),
    ("index_repeat", lambda a: a[IDX], lambda a: a[torch.from_numpy(IDX)], [(3, 4)], None),
    ("index_pairs", lambda a: a[IDX, IDX],
     lambda a: a[torch.from_numpy(IDX), torch.from_numpy(IDX)], [(3, 4)], None),
    ("index_bool", lambda a: a[MASK], lambda a: a[torch.from_numpy(MASK)], [(3, 4)], None),
    ("concatenate", lambda a, b: tl.concatenate([a, b], axis=1),
     lambda a, b: torch.cat([a, b], dim=1), [(2, 3), (2, 2)], None),
    ("stack", lambda a, b: tl.stack([a, b], axis=-1), lambda a, b: torch.stack([a, b], dim=-1),
     [(2, 3), (2, 3)], None),
    ("where", lambda a, b: tl.where(MASK, a, b),
     lambda a, b: torch.where(torch.from_numpy(MASK), a, b), [(3, 1), (4,)], None),
    ("softmax", lambda a: F.softmax(a, axis=1), lambda a: TF.softmax(a, dim=1), [(2, 3, 4)], None),
    ("log_softmax", lambda a: F.log_softmax(a), lambda a: TF.log_softmax(a, dim=-1),
     [(2, 3, 4)], None),
    ("gelu", lambda a: F.gelu(a), lambda a: TF.gelu(a), [(3, 4)], None),
    ("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"),
     lambda a: TF.gelu(a, approximate="tanh"), [(3, 4)], None),
    ("F.relu", lambda a: F.relu(a), lambda a: TF.relu(a), [(3, 4)], "away"),
    ("linear", lambda x, w, b: F.linear(x, w, b), lambda x, w, b: TF.linear(x, w, b),
     [(2, 3, 4), (5, 4), (5,)], None),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, w, b),
     lambda x, w, b: TF.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5), [(2, 3, 6), (6,), (6,)],
     None),
    ("embedding", lambda w: F.embedding(TGT.clip(0), w),
     lambda w: TF.embedding(torch.from_numpy(TGT.clip(0)), w), [(5, 3)], None),
    ("cross_entropy", lambda x: F.cross_entropy(x, TGT),
     lambda x: TF.cross_entropy(x.reshape(-1, 5), torch.from_numpy(TGT).reshape(-1)),
     [(2, 3, 5)], None),
    ("cross_entropy_sum", lambda x: F.cross_entropy(x, TGT, reduction="sum"),
     lambda x: TF.cross_entropy(x.reshape(-1, 5), torch.from_numpy(TGT).reshape(-1),
                                reduction="sum"), [(2, 3, 5)], None),
    ("cross_entropy_none", lambda x: F.cross_entropy(x, TGT, reduction="none"),
     lambda x: TF.cross_entropy(x.reshape(-1, 5), torch.from_numpy(TGT).reshape(-1),
                                reduction="none").reshape(2, 3), [(2, 3, 5)], None),
    ("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
     lambda q, k, v: _tsdpa(q, k, v), [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)], None),
    ("sdpa_causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: _tsdpa(q, k, v, is_causal=True), [(2, 4, 4), (2, 4, 4), (2, 4, 3)], None),
    ("sdpa_mask", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=MASK),
     lambda q, k, v: _tsdpa(q, k, v, mask=torch.from_numpy(MASK)),
     [(2, 2, 3, 4), (2, 2, 4, 4), (2, 2, 4, 3)], None),
    ("sdpa_mask_bcast", lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, mask=MASK[0][None, None, None, :]),
     lambda q, k, v: _tsdpa(q, k, v, mask=torch.from_numpy(MASK[0][None, None, None, :])),
     [(2, 2, 3, 4), (2, 2, 4, 4), (2, 2, 4, 3)], None),
]


def _draw(rng, shape, kind):
    x = rng.standard_normal(shape)
    if kind == "pos":
        x = np.abs(x) + 0.5
    elif kind == "away":
        x = np.sign(x) * (np.abs(x) + 0.3)
    return x


def compare(tl_fn, torch_fn, arrays, dtype, rng, device="cpu", what=""):
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    ts = [tl.tensor(a.copy(), requires_grad=True, device=device) for a in arrays]
    ps = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    out, ref = tl_fn(*ts), torch_fn(*ps)
    tol = dict(TOL[dtype])
    got = to_numpy(out)
    assert got.dtype == dtype, f"{what}: output dtype {got.dtype}"
    np.testing.assert_allclose(got, ref.detach().numpy(), err_msg=f"{what}: forward", **tol)
    w = rng.standard_normal(ref.shape).astype(dtype)
    out.backward(tl.tensor(w, device=device))
    ref.backward(torch.from_numpy(w))
    for i, (t, p) in enumerate(zip(ts, ps)):
        want = p.grad.numpy() if p.grad is not None else np.zeros(p.shape, dtype)
        g = to_numpy(t.grad)
        assert g.dtype == dtype, f"{what}: gradient of input {i} is {g.dtype}"
        np.testing.assert_allclose(g, want, err_msg=f"{what}: gradient of input {i}", **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,tl_fn,torch_fn,shapes,kind", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(name, tl_fn, torch_fn, shapes, kind, dtype, rng, device):
    arrays = [_draw(rng, s, kind) for s in shapes]
    compare(tl_fn, torch_fn, arrays, dtype, rng, device, what=name)


def test_log_softmax_and_cross_entropy_at_large_logits(device):
    x = np.array([[1e4, 0.0, -1e4, 5.0], [-1e4, -1e4, 1e4, 1e4]], dtype=np.float32)
    t = np.array([1, 3])
    compare(lambda a: F.log_softmax(a), lambda a: TF.log_softmax(a, -1), [x], np.float32,
            np.random.default_rng(0), device, "log_softmax 1e4")
    compare(lambda a: F.cross_entropy(a, t), lambda a: TF.cross_entropy(a, torch.from_numpy(t)),
            [x], np.float32, np.random.default_rng(0), device, "cross_entropy 1e4")


_BINARY = [
    (lambda a, b: a + b, lambda a, b: a + b),
    (lambda a, b: a - b, lambda a, b: a - b),
    (lambda a, b: a * b, lambda a, b: a * b),
    (lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
    (lambda a, b: (a * b).tanh() + a.exp() * b, lambda a, b: (a * b).tanh() + a.exp() * b),
    (lambda a, b: tl.where(a > 0, a, b), lambda a, b: torch.where(a > 0, a, b)),
]


def test_random_broadcasting_against_torch(rng, device):
    """Many random shape pairs that broadcast, through the binary ops, both orders."""
    for case in range(60):
        shape = random_shape(rng, 0, 4, 4)
        other = broadcast_partner(rng, shape)
        if rng.random() < 0.5:
            shape, other = other, shape
        k = case % len(_BINARY)
        dtype = np.float64 if case % 2 else np.float32
        compare(*_BINARY[k], [rng.standard_normal(shape), rng.standard_normal(other)], dtype,
                rng, device, what=f"case {case}: op {k} on {shape} and {other}")


def test_random_matmul_and_reductions_against_torch(rng, device):
    for _ in range(30):
        batch = random_shape(rng, 0, 2, 3)
        m, k, n = (int(v) for v in rng.integers(1, 5, size=3))
        a_shape = broadcast_partner(rng, batch) + (m, k)
        b_shape = batch + (k, n)
        if rng.random() < 0.5:
            a_shape, b_shape = b_shape[:-2] + (n, m), broadcast_partner(rng, batch) + (m, k)
        if rng.random() < 0.2:
            a_shape = a_shape[-1:]
        compare(lambda a, b: a @ b, lambda a, b: a @ b,
                [rng.standard_normal(a_shape), rng.standard_normal(b_shape)], np.float64, rng,
                device, what=f"matmul {a_shape} @ {b_shape}")
        x_shape = random_shape(rng, 1, 4, 4)
        axes = tuple(int(a) for a in np.flatnonzero(rng.random(len(x_shape)) < 0.5))
        axes = tuple(a - len(x_shape) if rng.random() < 0.5 else a for a in axes) or None
        keep = bool(rng.random() < 0.5)
        for tl_red, th_red in [("sum", "sum"), ("mean", "mean"), ("max", "amax")]:
            dims = axes if axes is not None else tuple(range(len(x_shape)))
            compare(lambda a, r=tl_red, ax=axes, k=keep: getattr(a, r)(axis=ax, keepdims=k),
                    lambda a, r=th_red, d=dims, k=keep: getattr(a, r)(dim=d, keepdim=k),
                    [rng.standard_normal(x_shape)], np.float64, rng, device,
                    what=f"{tl_red} of {x_shape} over {axes} keepdims={keep}")


def test_exact_gelu_and_erf_in_float64_match_torch_to_1e_12(rng, device):
    """float64 uses Cody's erf (the float32 polynomial is only good to 1.5e-7)."""
    x = np.concatenate([rng.standard_normal(200) * 3, np.linspace(-8, 8, 161),
                        [-30.0, -6.0, -0.46875, 0.0, 0.46875, 4.0, 6.0, 30.0]])
    got = to_numpy(F.gelu(tl.tensor(x, device=device)))
    want = TF.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-13, rtol=1e-12)
    erf = to_numpy(F.erf(tl.tensor(x, device=device).data))
    np.testing.assert_allclose(erf, torch.erf(torch.from_numpy(x)).numpy(), atol=1e-15, rtol=1e-14)
    t = tl.tensor(x, requires_grad=True, device=device)
    F.gelu(t).sum().backward()
    p = torch.from_numpy(x).requires_grad_()
    TF.gelu(p).sum().backward()
    np.testing.assert_allclose(to_numpy(t.grad), p.grad.numpy(), atol=1e-13, rtol=1e-12)

