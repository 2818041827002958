"""Property tests: broadcasting binary ops agree with NumPy in forward and in backward."""

import numpy as np
import pytest
from helpers import fd_grads

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import tinyllm as tl  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=False)

OPS = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
}

shapes2 = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4)


def _values(draw, shape, positive=False):
    seed = draw(st.integers(0, 2**31 - 1))
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.abs(x) + 0.5 if positive else x


def _sum_to(g, shape):
    """NumPy's own answer to 'undo the broadcast': sum over the axes that were expanded."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


@SETTINGS
@given(data=st.data(), shapes=shapes2, op=st.sampled_from(sorted(OPS)))
def test_binary_op_broadcasts_like_numpy(data, shapes, op):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    a = _values(data.draw, sa)
    b = _values(data.draw, sb, positive=op == "div")
    fn, np_fn = OPS[op]
    ta, tb = tl.tensor(a, requires_grad=True), tl.tensor(b, requires_grad=True)
    out = fn(ta, tb)
    assert out.shape == out_shape
    np.testing.assert_allclose(out.numpy(), np_fn(a, b), rtol=1e-12)
    w = np.random.default_rng(0).standard_normal(out_shape)
    out.backward(w)
    assert ta.grad.shape == sa and tb.grad.shape == sb
    # closed forms, each reduced with NumPy sums
    if op in ("add", "sub"):
        want_a, want_b = _sum_to(w, sa), _sum_to(w if op == "add" else -w, sb)
    elif op == "mul":
        want_a, want_b = _sum_to(w * b, sa), _sum_to(w * a, sb)
    else:
        want_a, want_b = _sum_to(w / b, sa), _sum_to(-w * a / b**2, sb)
    np.testing.assert_allclose(ta.grad, want_a.reshape(sa), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tb.grad, want_b.reshape(sb), rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3,
                                                                max_side=3))
def test_composite_expression_matches_finite_differences(data, shapes):
    arrays = [_values(data.draw, s) for s in shapes.input_shapes]
    fn = lambda a, b, c: (a * b + c).tanh() * a - c / (b * b + 1)
    w = np.random.default_rng(1).standard_normal(shapes.result_shape)
    ts = [tl.tensor(x, requires_grad=True) for x in arrays]
    fn(*ts).backward(w)
    want = fd_grads(fn, arrays, w)
    for t, g, s in zip(ts, want, shapes.input_shapes):
        assert t.grad.shape == s
        np.testing.assert_allclose(t.grad, g, rtol=1e-5, atol=1e-7)


@SETTINGS
@given(data=st.data(), shapes=shapes2)
def test_where_broadcasts(data, shapes):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    a, b = _values(data.draw, sa), _values(data.draw, sb)
    cond = np.random.default_rng(2).random(out_shape) < 0.5
    ta, tb = tl.tensor(a, requires_grad=True), tl.tensor(b, requires_grad=True)
    out = tl.where(cond, ta, tb)
    np.testing.assert_array_equal(out.numpy(), np.where(cond, a, b))
    w = np.random.default_rng(3).standard_normal(out_shape)
    out.backward(w)
    np.testing.assert_allclose(ta.grad, _sum_to(np.where(cond, w, 0), sa).reshape(sa))
    np.testing.assert_allclose(tb.grad, _sum_to(np.where(cond, 0, w), sb).reshape(sb))


@SETTINGS
@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=4),
       keepdims=st.booleans(), red=st.sampled_from(["sum", "mean", "max"]))
def test_reductions_match_numpy(data, shape, keepdims, red):
    x = _values(data.draw, shape)
    axis = None
    if shape:
        axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), unique_by=lambda a:
                                  a % len(shape), max_size=len(shape)))
        axis = data.draw(st.sampled_from([None, tuple(axes)] + ([axes[0]] if axes else [])))
    if axis == ():
        axis = None
    t = tl.tensor(x, requires_grad=True)
    out = getattr(t, red)(axis=axis, keepdims=keepdims)
    want = getattr(np, {"sum": "sum", "mean": "mean", "max": "amax"}[red])(x, axis=axis,
                                                                         keepdims=keepdims)
    assert out.shape == np.shape(want)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)
    w = np.random.default_rng(4).standard_normal(np.shape(want))
    out.backward(w)
    assert t.grad.shape == shape
    (g,) = fd_grads(lambda a: getattr(a, red)(axis=axis, keepdims=keepdims), [x], w)
    np.testing.assert_allclose(t.grad, g, rtol=1e-5, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
def test_mixed_indexing_matches_torch(data, shape):
    """Random mixes of integers, slices, None, ... and integer arrays index as PyTorch does."""
    torch = pytest.importorskip("torch")
    items, axis = [], 0
    while axis < len(shape):
        kind = data.draw(st.sampled_from(["int", "slice", "array", "none", "ellipsis"]))
        n = shape[axis]
        if kind == "int":
            items.append(data.draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            items.append(slice(data.draw(st.integers(0, n)), None, data.draw(st.sampled_from([1, 2]))))
        elif kind == "array":
            items.append(np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))))
        elif kind == "none":
            items.append(None)
            continue
        else:  # ... covers the remaining axes
            items.append(Ellipsis)
            break
        axis += 1
    index = tuple(items)
    x = np.random.default_rng(5).standard_normal(shape)
    t = tl.tensor(x, requires_grad=True)
    p = torch.tensor(x, requires_grad=True)
    out = t[index]
    ref = p[tuple(torch.from_numpy(i) if isinstance(i, np.ndarray) else i for i in index)]
    assert out.shape == tuple(ref.shape), f"x{list(shape)}[{index}]"
    np.testing.assert_array_equal(out.numpy(), ref.detach().numpy())
    w = np.random.default_rng(6).standard_normal(out.shape)
    out.backward(w)
    ref.backward(torch.from_numpy(w))
    np.testing.assert_allclose(t.grad, p.grad.numpy(), rtol=1e-12)
