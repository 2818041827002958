"""Tensor basics: construction and dtype rules, autograd semantics, graph release, no_grad,
dtype preservation (the PyTorch semantics of issue 15 are in test_tensor_semantics.py)."""

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
