"""Tensor semantics that follow PyTorch (issue 15): transposes, integer powers and promotion,
empty reductions, indexing, comparisons and hashing, copying and sharing constructors, fast paths."""

import gc
import weakref

import numpy as np
import pytest

import tinyllm as tl
import tinyllm.functional as F


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
