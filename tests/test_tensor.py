"""Tensor basics: construction and dtype rules, autograd semantics, graph release, no_grad,
dtype preservation."""

import gc
import sys
import weakref

import numpy as np
import pytest
from helpers import to_numpy

import tinyllm as tl
import tinyllm.functional as F


# ---------------------------------------------------------------------- construction and dtypes
def test_dtype_rules():
    assert tl.tensor(1.5).dtype == np.float32
    assert tl.tensor([1.0, 2.0]).dtype == np.float32
    assert tl.tensor([[1, 2.5]]).dtype == np.float32
    assert tl.tensor(np.zeros(3)).dtype == np.float64  # NumPy float keeps its dtype
    assert tl.tensor(np.zeros(3, np.float32)).dtype == np.float32
    assert tl.tensor(np.float64(2.0)).dtype == np.float64
    assert tl.tensor([1, 2]).dtype.kind == "i"
    assert tl.tensor(np.arange(3, dtype=np.int32)).dtype == np.int32
    assert tl.tensor([1, 2], dtype="float64").dtype == np.float64
    assert tl.tensor(np.zeros(2), dtype=np.float32).dtype == np.float32
    assert tl.Tensor([1.0]).dtype == np.float32


def test_integer_tensors_cannot_require_grad():
    for make in (lambda: tl.tensor([1, 2], requires_grad=True),
                 lambda: tl.Tensor(np.arange(3), requires_grad=True),
                 lambda: tl.tensor(np.arange(3)).requires_grad_()):
        with pytest.raises(TypeError, match="int"):
            make()


def test_properties_and_conversions(rng):
    a = rng.standard_normal((2, 3))
    t = tl.tensor(a, requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64 and t.requires_grad
    assert t.data is a or np.shares_memory(t.data, a) or np.array_equal(t.data, a)
    assert isinstance(t.numpy(), np.ndarray) and np.array_equal(t.numpy(), a)
    assert t.grad is None and t.is_leaf
    d = t.detach()
    assert not d.requires_grad and d.is_leaf and np.array_equal(d.numpy(), a)
    s = t.sum()
    assert isinstance(s.item(), float) and s.item() == pytest.approx(a.sum())
    assert t.to("cpu") is t
    assert t.to("cpu", dtype="float32").dtype == np.float32
    assert "tensor(" in repr(t)
    assert len(t) == 2
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        t.item()


# ---------------------------------------------------------------------- autograd semantics
def test_used_twice_accumulates():
    x = tl.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 1)


def test_leaf_grad_accumulates_across_backward_calls():
    x = tl.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3 + 2 * x.numpy())
    x.zero_grad()
    assert x.grad is None


def test_backward_with_explicit_gradient():
    x = tl.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 2).backward(np.array([1.0, -1.0]))
    np.testing.assert_allclose(x.grad, [2.0, -2.0])
    y = tl.tensor(np.array([3.0]), requires_grad=True)
    y.backward()  # a leaf scalar
    np.testing.assert_allclose(y.grad, [1.0])


def test_long_chain_does_not_hit_recursion_limit():
    x = tl.tensor(np.array([0.5]), requires_grad=True)
    y = x
    n = max(3000, sys.getrecursionlimit() + 100)
    for _ in range(n):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** n], rtol=1e-9)


def test_graph_is_released_after_backward():
    x = tl.tensor(np.ones(1000), requires_grad=True)
    h = x * 2
    ref = weakref.ref(h)
    loss = (h.exp() * h).sum()
    del h
    loss.backward()
    del loss
    gc.collect()
    assert ref() is None, "an intermediate tensor survived backward() and the loss going away"


def test_memory_does_not_grow_across_steps():
    w = tl.tensor(np.ones((50, 50)), requires_grad=True)
    refs = []
    for _ in range(5):
        h = w @ w
        refs.append(weakref.ref(h))
        loss = (h * h).mean()
        del h
        loss.backward()
        w.grad = None
    del loss
    gc.collect()
    assert all(r() is None for r in refs)


def test_intermediates_freed_even_when_loss_is_kept():
    x = tl.tensor(np.ones(5), requires_grad=True)
    h = x.tanh()
    ref = weakref.ref(h)
    loss = (h * 3).sum()
    del h
    loss.backward()
    gc.collect()
    assert ref() is None


def test_second_backward_raises_clearly():
    x = tl.tensor(np.ones(3), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward"):
        loss.backward()


def test_no_grad_records_nothing():
    x = tl.tensor(np.ones(3), requires_grad=True)
    with tl.no_grad():
        y = (x * 2).exp().sum()
        assert not tl.is_grad_enabled()
    assert tl.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    z = x * 2
    assert z.requires_grad


def test_no_grad_restores_after_exception():
    with pytest.raises(KeyError):
        with tl.no_grad():
            raise KeyError
    assert tl.is_grad_enabled()
    with tl.no_grad():
        with tl.no_grad():
            pass
        assert not tl.is_grad_enabled()
        with tl.enable_grad():
            assert tl.is_grad_enabled()
    assert tl.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = tl.tensor(np.array([2.0]), requires_grad=True)
    y = x * x.detach()
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [2.0])


def test_retain_grad_keeps_intermediate_gradient():
    x = tl.tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.numpy())


def test_comparisons_give_masks_without_grad():
    x = tl.tensor(np.array([1.0, -1.0]), requires_grad=True)
    m = x > 0
    assert m.dtype == bool and not m.requires_grad
    np.testing.assert_array_equal(m.numpy(), [True, False])


def test_numpy_array_on_the_left():
    x = tl.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, tl.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 4.0])


# ---------------------------------------------------------------------- dtype preservation
def _targets(shape):
    return np.arange(int(np.prod(shape[:-1]))).reshape(shape[:-1]) % shape[-1]


DTYPE_CASES = [
    ("add", lambda a, b: a + b, [(2, 3), (3,)]),
    ("sub", lambda a, b: a - b, [(2, 3), (3,)]),
    ("mul", lambda a, b: a * b, [(2, 3), (3,)]),
    ("div", lambda a, b: a / (b * b + 1), [(2, 3), (3,)]),
    ("mul_half", lambda a: a * 0.5, [(3,)]),
    ("div_3", lambda a: a / 3, [(3,)]),
    ("pow_2", lambda a: a ** 2, [(3,)]),
    ("pow_3", lambda a: a ** 3, [(3,)]),
    ("pow_1.5", lambda a: (a * a + 1) ** 1.5, [(3,)]),
    ("rsub", lambda a: 1 - a, [(3,)]),
    ("rdiv", lambda a: 1 / (a * a + 1), [(3,)]),
    ("radd_float", lambda a: 0.1 + a, [(3,)]),
    ("np_float64_scalar", lambda a: a * np.float64(0.5), [(3,)]),
    ("neg", lambda a: -a, [(3,)]),
    ("matmul", lambda a, b: a @ b, [(2, 3), (3, 4)]),
    ("matmul_batched", lambda a, b: a @ b, [(2, 2, 3), (3,)]),
    ("exp", lambda a: a.exp(), [(3,)]),
    ("log", lambda a: (a * a + 1).log(), [(3,)]),
    ("sqrt", lambda a: (a * a + 1).sqrt(), [(3,)]),
    ("tanh", lambda a: a.tanh(), [(3,)]),
    ("relu", lambda a: a.relu(), [(3,)]),
    ("sigmoid", lambda a: a.sigmoid(), [(3,)]),
    ("sum", lambda a: a.sum(axis=0), [(2, 3)]),
    ("mean", lambda a: a.mean(axis=(0, 1)), [(2, 3)]),
    ("max", lambda a: a.max(axis=-1), [(2, 3)]),
    ("var", lambda a: a.var(axis=-1), [(2, 3)]),
    ("reshape", lambda a: a.reshape(-1), [(2, 3)]),
    ("transpose", lambda a: a.transpose(0, 2), [(2, 3, 4)]),
    ("T", lambda a: a.T, [(2, 3)]),
    ("getitem", lambda a: a[np.array([0, 0, 1])], [(2, 3)]),
    ("concatenate", lambda a, b: tl.concatenate([a, b]), [(2, 3), (1, 3)]),
    ("stack", lambda a, b: tl.stack([a, b]), [(2, 3), (2, 3)]),
    ("where", lambda a, b: tl.where(np.array([True, False, True]), a, b), [(2, 3), (3,)]),
    ("where_number", lambda a: tl.where(np.array([True, False, True]), a, 0.0), [(2, 3)]),
    ("softmax", lambda a: F.softmax(a), [(2, 3)]),
    ("log_softmax", lambda a: F.log_softmax(a), [(2, 3)]),
    ("gelu", lambda a: F.gelu(a), [(2, 3)]),
    ("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), [(2, 3)]),
    ("F.relu", lambda a: F.relu(a), [(2, 3)]),
    ("cross_entropy", lambda a: F.cross_entropy(a, _targets((2, 3, 4))), [(2, 3, 4)]),
    ("cross_entropy_none", lambda a: F.cross_entropy(a, _targets((2, 4)), reduction="none"),
     [(2, 4)]),
    ("layer_norm", lambda a, w, b: F.layer_norm(a, w, b), [(2, 3), (3,), (3,)]),
    ("embedding", lambda w: F.embedding(np.array([0, 1, 1]), w), [(3, 2)]),
    ("dropout", lambda a: F.dropout(a, 0.5), [(4, 5)]),
    ("linear", lambda a, w, b: F.linear(a, w, b), [(2, 3), (4, 3), (4,)]),
    ("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     [(2, 3, 4), (2, 3, 4), (2, 3, 5)]),
    ("sdpa_mask", lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, mask=np.array([True, True, False])), [(2, 3, 4), (2, 3, 4), (2, 3, 5)]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,fn,shapes", DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_dtype_is_preserved_in_forward_and_backward(name, fn, shapes, dtype, rng, device):
    ts = [tl.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True, device=device)
          for s in shapes]
    out = fn(*ts)
    assert out.dtype == dtype, f"{name}: {np.dtype(dtype)} inputs gave a {out.dtype} output"
    (out * out).sum().backward()
    for i, t in enumerate(ts):
        assert t.grad is not None, f"{name}: input {i} got no gradient"
        assert t.grad.dtype == dtype, f"{name}: gradient of input {i} is {t.grad.dtype}"
        assert t.grad.shape == t.shape
        assert np.all(np.isfinite(to_numpy(t.grad)))


def test_zero_dim_gradients_accumulate_over_many_uses():
    """0-d math yields NumPy scalars; a third use must still add up (an engine regression)."""
    a = tl.tensor(np.array(2.0), requires_grad=True)
    (a * 3 + a * 5 + a * 7).backward()
    assert isinstance(a.grad, np.ndarray) and a.grad.shape == ()
    assert float(a.grad) == 15.0


def test_reduction_axis_zero_on_a_0d_tensor():
    a = tl.tensor(np.array(2.0), requires_grad=True)
    y = a.sum(axis=0) + a.mean(axis=-1)
    y.backward()
    assert y.shape == () and float(a.grad) == 2.0


# ---------------------------------------------------------------------- PyTorch semantics (#15)
def test_transpose_of_two_axes_swaps_them_at_any_ndim(rng):
    a = rng.standard_normal((3, 4))
    for axes in ((0, 1), (1, 0), (-2, -1), (-1, -2)):
        np.testing.assert_array_equal(tl.tensor(a).transpose(*axes).numpy(), a.T)
    q, k = tl.tensor(rng.standard_normal((5, 2))), tl.tensor(rng.standard_normal((6, 2)))
    assert (q @ k.transpose(-2, -1)).shape == (5, 6)  # unbatched attention scores
    b = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(tl.tensor(b).transpose(2, 0, 1).numpy(), b.transpose(2, 0, 1))
    np.testing.assert_array_equal(tl.tensor(b).transpose((1, 0, 2)).numpy(), b.transpose(1, 0, 2))


def test_integer_tensors_to_powers_follow_pytorch():
    x = tl.tensor(np.array([1, 2, 3, 4]))
    for p in (2.7, 0.5, -1.0, 2.0):
        y = x ** p
        assert y.dtype == np.float32, f"int ** {p} should be float32, got {y.dtype}"
        np.testing.assert_allclose(y.numpy(), np.array([1, 2, 3, 4.0]) ** p, rtol=1e-6)
    assert (x ** 2).dtype.kind == "i" and (x ** 2).tolist() == [1, 4, 9, 16]
    with pytest.raises(ValueError, match="negative integer power"):
        x ** -1


def test_var_with_too_few_elements_is_nan():
    one = tl.tensor(np.array([3.0]))
    assert np.isnan(one.var(correction=1).item())
    assert np.isnan(tl.tensor(np.zeros(0)).var().item())
    assert np.isinf(tl.tensor(np.array([1.0, 2.0])).var(correction=3).item())
    assert tl.tensor(np.array([1.0, 3.0])).var(correction=1).item() == 2.0


def test_a_float32_leaf_keeps_float32_gradients_when_the_graph_promotes(rng):
    x = tl.tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    w = tl.tensor(rng.standard_normal(3))  # float64
    y = x * w
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, w.numpy().astype(np.float32))


def test_tensor_copies_as_tensor_and_from_numpy_share():
    a = np.arange(3.0)
    t, s, f = tl.tensor(a), tl.as_tensor(a), tl.from_numpy(a)
    a[0] = 10.0
    assert t.numpy()[0] == 0.0, "tl.tensor must copy (as torch.tensor does)"
    assert s.numpy()[0] == 10.0 and f.numpy()[0] == 10.0, "as_tensor/from_numpy share memory"
    assert tl.tensor(t) is not t and not np.shares_memory(tl.tensor(t).data, t.data)
    assert tl.as_tensor(t) is t
    assert tl.as_tensor(a, dtype="float32").dtype == np.float32
    assert tl.as_tensor([1.0, 2.0]).dtype == np.float32
    with pytest.raises(TypeError, match="NumPy array"):
        tl.from_numpy([1.0, 2.0])


def test_gradcheck_is_not_fooled_by_shared_memory(rng):
    a = rng.standard_normal(4)
    for x in (tl.tensor(a, requires_grad=True), tl.from_numpy(a).requires_grad_()):
        # the function closes over the very array the input was made from
        assert tl.gradcheck(lambda t: t * t + tl.tensor(a), x)
        np.testing.assert_array_equal(x.numpy(), a)  # the caller's tensor was not written
    assert x.grad is None  # gradcheck differentiates its own copies


def test_max_and_min_over_an_axis_of_an_empty_tensor_are_empty():
    x = tl.tensor(np.zeros((0, 3)), requires_grad=True)
    for red in ("max", "min", "amax", "amin"):
        y = getattr(x, red)(axis=1)
        assert y.shape == (0,)
        y.sum().backward()
        assert x.grad.shape == (0, 3)
    with pytest.raises(ValueError, match="empty"):
        x.max(axis=0)
    with pytest.raises(ValueError, match="empty"):
        x.max()


def test_gradient_of_x_to_the_zero_is_zero_at_zero():
    x = tl.tensor(np.array([0.0, 2.0, -1.0]), requires_grad=True)
    (x ** 0.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])


def test_comparisons_are_elementwise_and_hash_is_identity(rng):
    a = rng.integers(0, 3, size=(2, 3)).astype(np.float64)
    b = rng.integers(0, 3, size=(3,)).astype(np.float64)
    ta, tb = tl.tensor(a), tl.tensor(b)
    for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
        got = getattr(ta, op)(tb)
        assert isinstance(got, tl.Tensor) and got.dtype == bool and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), getattr(a, op)(b))
    np.testing.assert_array_equal((ta == 1.0).numpy(), a == 1.0)
    np.testing.assert_array_equal((1.0 == ta).numpy(), a == 1.0)
    assert (ta == None) is False and (ta != "x") is True  # noqa: E711
    assert len({ta, tb, ta}) == 2 and {ta: 1}[ta] == 1
    assert hash(ta) == id(ta)


def test_mixed_integer_and_array_indexing_follows_pytorch(rng):
    """Integers index first (each removes its axis), then the arrays: x[1, :, d] == x[1][:, d]."""
    x = rng.standard_normal((2, 3, 12, 5, 4))
    d = np.array([0, 2])
    got = tl.tensor(x)[1, :, 3:11:2, d, 0:2]
    assert got.shape == (3, 4, 2, 2)  # NumPy would give (2, 3, 4, 2)
    np.testing.assert_array_equal(got.numpy(), x[1][:, 3:11:2, d, 0:2])
    y = rng.standard_normal((3, 3, 4))
    t = tl.tensor(y, requires_grad=True)
    for index, want in [((0, slice(None), d), y[0][:, d]), ((Ellipsis, 0, d), y[..., 0, :][..., d]),
                        ((None, 0, d), y[None, 0][:, d]), ((d, 0, d), y[:, 0][d, d]),
                        ((np.int64(1), slice(None), d), y[1][:, d])]:
        out = t[index]
        np.testing.assert_array_equal(out.numpy(), want)
        out.sum().backward()
    assert t.grad is not None and t.grad.shape == y.shape
    np.testing.assert_array_equal(tl.tensor(y)[d, :, 0].numpy(), y[d, :, 0])  # one array: NumPy's


def test_sum_over_an_empty_axis_tuple_reduces_every_axis():
    """axis=() means every axis, as PyTorch's dim=() (NumPy would reduce nothing)."""
    x = tl.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.sum(axis=()).shape == () and x.sum(axis=()).item() == 15.0
    assert x.mean(dim=()).item() == 2.5 and x.max(axis=()).item() == 5.0
    x.sum(axis=()).backward()
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_integer_promotion_follows_pytorch():
    i = tl.tensor(np.arange(4))
    f = tl.tensor(np.ones(4, np.float32))
    assert (i / 2).dtype == np.float32 and (i * 0.5).dtype == np.float32
    assert (i * f).dtype == np.float32 and (f + i).dtype == np.float32
    assert i.exp().dtype == np.float32 and i.mean().dtype == np.float32
    assert (i + 1).dtype == i.dtype and (i * 2).tolist() == [0, 2, 4, 6]
    i32 = tl.tensor(np.arange(3, dtype=np.int32))
    assert (i32 + 1).dtype == np.int32


def test_fast_paths_switch():
    from tinyllm import backend

    start = backend.fast_paths_enabled()
    with tl.fast_paths(False):
        assert not backend.fast_paths_enabled()
        with tl.fast_paths(True):
            assert backend.fast_paths_enabled()
        assert not backend.fast_paths_enabled()
    assert backend.fast_paths_enabled() == start


def test_a_function_with_a_fast_path_is_freed_by_backward_without_the_cycle_collector(rng):
    """Nothing may keep a Function alive once backward has used it (its saved arrays are the
    activations); reference counting alone must free it, for fast and plain paths alike."""
    for fast in (True, False):
        q = tl.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
        with tl.fast_paths(fast):
            out = F.scaled_dot_product_attention(q, q, q)
        ref = weakref.ref(out.grad_fn)
        gc.disable()
        try:
            out.sum().backward()
            assert ref() is None, f"fast={fast}: the attention Function outlived backward"
        finally:
            gc.enable()


def test_a_function_needs_a_tensor_among_its_inputs():
    from tinyllm import ops

    with pytest.raises(TypeError, match="Exp needs at least one tensor"):
        ops.Exp()(np.array([1.0]))


def test_0d_results_hold_arrays_not_numpy_scalars():
    x = tl.tensor(np.array(2.0))
    for t in (x > 1, x == 2.0, x.isclose(2.0), tl.tensor(np.arange(3.0)).argmax(), x.sum(), x * 2):
        assert isinstance(t.data, np.ndarray) and t.shape == (), type(t.data)
