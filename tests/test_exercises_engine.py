"""Grading tests of the engine exercises (lessons 02 to 09).

Each test checks one fixed example and fresh random shapes/values drawn from the seeded ``rng``
fixture (the seed is printed on failure), against NumPy closed forms or ``helpers.fd_grads``.
A lesson's tests use only what that lesson and earlier ones built: the 02.x tests call the
Functions' ``backward`` directly (no sum, no broadcasting, no no_grad), and no 02/03 test uses
``tl.gradcheck`` (exercise 02.5).
"""

import math

import numpy as np
import pytest
from helpers import fd_grads

import tinyllm as tl
import tinyllm.functional as F
from tinyllm import autograd, ops
from tinyllm.gradcheck import numerical_grad

ex = pytest.mark.exercise


def close(got, want, what, atol=1e-7, rtol=1e-6):
    got = np.asarray(got.numpy() if isinstance(got, tl.Tensor) else got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: expected shape {want.shape}, got shape {got.shape}"
    assert np.allclose(got, want, atol=atol, rtol=rtol), (
        f"{what}\ngot:\n{got}\nexpected:\n{want}")


def run(fn_cls, *arrays, gy, needs=None, **kw):
    """Call a Function's forward then backward directly on arrays (no autograd machinery)."""
    f = fn_cls(**kw) if kw else fn_cls()
    f.needs_grad = needs or (True,) * len(arrays)
    y = f.forward(*arrays)
    return y, f.backward(gy)


def shape_of(rng, lo=1, hi=3):
    return tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(lo, hi + 1))))


# ---------------------------------------------------------------------- 02.1 Mul / Div backward
@ex("02.1")
def test_02_1_mul_backward(rng):
    cases = [(np.array([2.0, -3.0]), np.array([5.0, 0.5]), np.array([1.0, 2.0]))]
    s = shape_of(rng)
    cases.append((rng.standard_normal(s), rng.standard_normal(s), rng.standard_normal(s)))
    for a, b, gy in cases:
        _, (ga, gb) = run(ops.Mul, a, b, gy=gy)
        close(ga, gy * b, f"d(a*b)/da times the incoming gradient should be gy*b (a={a}, b={b})")
        close(gb, gy * a, f"d(a*b)/db times the incoming gradient should be gy*a (a={a}, b={b})")
        _, (ga, gb) = run(ops.Mul, a, b, gy=gy, needs=(False, True))
        assert ga is None, "Mul.backward should return None for an input with needs_grad False"


@ex("02.1")
def test_02_1_div_backward(rng):
    cases = [(np.array([3.0, -1.0]), np.array([2.0, 4.0]), np.array([1.0, 1.0]))]
    s = shape_of(rng)
    b = rng.standard_normal(s)
    b = np.where(np.abs(b) < 0.3, 1.0, b)
    cases.append((rng.standard_normal(s), b, rng.standard_normal(s)))
    for a, b, gy in cases:
        _, (ga, gb) = run(ops.Div, a, b, gy=gy)
        close(ga, gy / b, "d(a/b)/da should be 1/b (times gy)")
        close(gb, -gy * a / b**2, "d(a/b)/db should be -a/b^2 (times gy)")


@ex("02.1")
def test_02_1_through_tensors(rng):
    a0, b0 = rng.standard_normal(3), rng.standard_normal(3) + 3.0
    a, b = tl.tensor(a0, requires_grad=True), tl.tensor(b0, requires_grad=True)
    gy = rng.standard_normal(3)
    (a * b / b * a).backward(gy)  # = a^2
    close(a.grad, 2 * a0 * gy, "a*b/b*a = a^2, so its gradient is 2a (times gy)")


# ---------------------------------------------------------------------- 02.2 Exp Log Tanh Pow
@ex("02.2")
def test_02_2_elementwise_backward(rng):
    for x in (np.array([0.5, 1.0, 2.0]), np.abs(rng.standard_normal(shape_of(rng))) + 0.1):
        gy = rng.standard_normal(x.shape)
        _, (g,) = run(ops.Exp, x, gy=gy)
        close(g, gy * np.exp(x), "exp'(x) = exp(x)")
        _, (g,) = run(ops.Log, x, gy=gy)
        close(g, gy / x, "log'(x) = 1/x")
        _, (g,) = run(ops.Tanh, x, gy=gy)
        close(g, gy * (1 - np.tanh(x) ** 2), "tanh'(x) = 1 - tanh(x)^2")
        for p in (2.0, 3.0, 0.5, -1.5, float(rng.uniform(-3, 3))):
            _, (g,) = run(ops.Pow, x, gy=gy, p=p)
            close(g, gy * p * x ** (p - 1), f"(x^p)' = p x^(p-1) with p={p}")


@ex("02.2")
def test_02_2_returns_tuples_and_works_in_a_chain(rng):
    x0 = np.abs(rng.standard_normal(4)) + 0.5
    x = tl.tensor(x0, requires_grad=True)
    gy = rng.standard_normal(4)
    ((x ** 3).log().tanh().exp()).backward(gy)
    t = np.tanh(3 * np.log(x0))
    close(x.grad, gy * np.exp(t) * (1 - t**2) * 3 / x0, "exp(tanh(log(x^3))) chain rule")


# ---------------------------------------------------------------------- 02.3 topological order
def _random_graph(rng, n):
    leaves = [tl.tensor(rng.standard_normal(2), requires_grad=True) for _ in range(3)]
    nodes = list(leaves)
    for _ in range(n):
        i, j = rng.integers(0, len(nodes), size=2)
        op = int(rng.integers(0, 3))
        a, b = nodes[int(i)], nodes[int(j)]
        nodes.append(a * b if op == 0 else (a - b if op == 1 else a.tanh()))
    root = nodes[-1]
    for t in nodes[-6:-1]:
        root = root * t
    return leaves, nodes, root


def _check_order(order, root):
    ids = [id(t) for t in order]
    assert len(ids) == len(set(ids)), "topological_order listed a tensor twice"
    assert order and order[-1] is root, "the root must come last (after everything it depends on)"
    pos = {id(t): k for k, t in enumerate(order)}
    stack, seen = [root], set()
    while stack:  # every tensor reachable from the root is listed, after its inputs
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        assert id(t) in pos, "a tensor of the graph is missing from topological_order"
        if t.grad_fn is not None:
            for p in t.grad_fn.inputs:
                if p.requires_grad:
                    assert pos[id(p)] < pos[id(t)], "an input came after the tensor made from it"
                    stack.append(p)
    assert len(seen) == len(order), "topological_order listed tensors that are not in the graph"


@ex("02.3")
def test_02_3_topological_order_small():
    a = tl.tensor(np.array([1.0]), requires_grad=True)
    b = a * a
    c = b * a
    d = c * b
    order = autograd.topological_order(d)
    _check_order(order, d)
    assert [id(t) for t in order] == [id(a), id(b), id(c), id(d)]


@ex("02.3")
def test_02_3_topological_order_random_graph(rng):
    _, _, root = _random_graph(rng, int(rng.integers(10, 40)))
    _check_order(autograd.topological_order(root), root)


@ex("02.3")
def test_02_3_long_chain_needs_no_recursion():
    x = tl.tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0
    _check_order(autograd.topological_order(y), y)
    y.backward(np.array([2.0]))
    close(x.grad, [2.0], "gradient through a 3000-op chain of *1.0")


# ---------------------------------------------------------------------- 02.4 accumulate
@ex("02.4")
def test_02_4_accumulate_direct(rng):
    g1, g2, g3 = (rng.standard_normal(shape_of(rng, 2, 2)) for _ in range(3))
    g2, g3 = g2.reshape(g1.shape) if g2.size == g1.size else g1 * 2, g1 * -0.5
    keep1 = g1.copy()
    grads, owned = {}, set()
    autograd.accumulate(grads, owned, "k", g1)
    close(grads["k"], g1, "the first gradient is stored as it is")
    autograd.accumulate(grads, owned, "k", g2)
    close(grads["k"], keep1 + g2, "the second gradient is added")
    close(g1, keep1, "accumulate must not change the first gradient in place (it may be shared)")
    autograd.accumulate(grads, owned, "k", g3)
    close(grads["k"], keep1 + g2 + g3, "the third gradient is added too")
    autograd.accumulate(grads, owned, "other", g3)
    close(grads["other"], g3, "keys are separate")


@ex("02.4")
def test_02_4_tensor_used_twice(rng):
    for x0 in (np.array([1.0, -2.0]), rng.standard_normal(shape_of(rng))):
        x = tl.tensor(x0, requires_grad=True)
        gy = rng.standard_normal(x0.shape)
        (x * x + x * 3.0 - x).backward(gy)
        close(x.grad, gy * (2 * x0 + 2), "x used four times: d(x*x + 3x - x)/dx = 2x + 2")


# ---------------------------------------------------------------------- 02.5 numerical_grad
@ex("02.5")
def test_02_5_numerical_grad(rng):
    for x0 in (np.array([0.5, -1.0, 2.0]), rng.standard_normal(shape_of(rng))):
        c0 = rng.standard_normal(x0.shape)
        x, c = tl.tensor(x0.copy()), tl.tensor(c0.copy())
        w = rng.standard_normal(x0.shape)
        g = numerical_grad(lambda a, b: a * a * a * b, [x, c], 0, w, 1e-6)
        close(g, 3 * x0**2 * c0 * w, "numerical d/dx of sum(w * x^3 c) should be 3 w x^2 c",
              atol=1e-5, rtol=1e-5)
        g = numerical_grad(lambda a, b: a * a * a * b, [x, c], 1, w, 1e-6)
        close(g, x0**3 * w, "numerical d/dc of sum(w * x^3 c) should be w x^3", atol=1e-5)
        close(x.data, x0, "numerical_grad must put every perturbed element back")


@ex("02.5")
def test_02_5_gradcheck_uses_it(rng):
    x = tl.tensor(rng.standard_normal(shape_of(rng)), requires_grad=True)
    assert tl.gradcheck(lambda a: (a * a).tanh(), x)

    class Wrong(tl.Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, gy):
            return (gy * self.a,)

    with pytest.raises(tl.GradcheckError):
        tl.gradcheck(lambda a: Wrong()(a), tl.tensor(np.abs(x.data) + 1, requires_grad=True))


# ---------------------------------------------------------------------- 03.1 unbroadcast
@ex("03.1")
def test_03_1_unbroadcast_fixed():
    g = np.arange(12.0).reshape(3, 4)
    close(ops.unbroadcast(g, (4,)), g.sum(0), "(3, 4) -> (4,) sums axis 0")
    close(ops.unbroadcast(g, (3, 1)), g.sum(1, keepdims=True), "(3, 4) -> (3, 1) keeps axis 1")
    close(ops.unbroadcast(g, ()), g.sum(), "(3, 4) -> () sums everything")
    close(ops.unbroadcast(g, (1, 1)), g.sum(keepdims=True), "(3, 4) -> (1, 1)")


@ex("03.1")
def test_03_1_unbroadcast_random(rng):
    for _ in range(10):
        big = shape_of(rng, 0, 4)
        small = []
        drop = int(rng.integers(0, len(big) + 1))
        for n in big[drop:]:
            small.append(1 if rng.random() < 0.5 else n)
        small = tuple(small)
        g = rng.standard_normal(big)
        want = g.copy()
        for _ in range(drop):
            want = want.sum(0)
        for ax, n in enumerate(small):
            if n == 1:
                want = want.sum(ax, keepdims=True)
        close(ops.unbroadcast(g, small), want, f"unbroadcast {big} -> {small}")
        a, b = tl.tensor(g, requires_grad=True), tl.tensor(rng.standard_normal(small),
                                                          requires_grad=True)
        w = rng.standard_normal(big)
        (a + b).backward(w)
        assert b.grad.shape == small, f"the gradient of a {small} operand has shape {b.grad.shape}"


# ---------------------------------------------------------------------- 03.2 Sum / Mean backward
def _axes(rng, ndim):
    r = rng.random()
    if r < 0.25 or ndim == 0:
        return None
    if r < 0.6:
        return int(rng.integers(-ndim, ndim))
    return tuple(int(a) for a in rng.choice(ndim, size=int(rng.integers(1, ndim + 1)),
                                            replace=False))


@ex("03.2")
def test_03_2_sum_and_mean_backward(rng):
    fixed = [((2, 3), 1, False), ((2, 3, 4), (0, 2), True), ((3,), None, False)]
    draws = [(s := shape_of(rng, 1, 3), _axes(rng, len(s)), bool(rng.random() < 0.5))
             for _ in range(6)]
    for shape, axis, keep in fixed + draws:
        x0 = rng.standard_normal(shape)
        for name in ("sum", "mean"):
            x = tl.tensor(x0, requires_grad=True)
            y = getattr(x, name)(axis=axis, keepdims=keep)
            w = rng.standard_normal(y.shape)
            y.backward(w)
            ax = tuple(range(len(shape))) if axis is None else axis
            wk = w if keep else np.expand_dims(w, ax)
            n = x0.size / max(y.size, 1) if name == "mean" else 1
            close(x.grad, np.broadcast_to(wk / n, shape),
                  f"{name}(axis={axis}, keepdims={keep}) of shape {shape}: each element gets "
                  f"the gradient of its {'sum' if name == 'sum' else 'mean (divided by n)'}")


# ---------------------------------------------------------------------- 03.3 Reshape / Transpose
@ex("03.3")
def test_03_3_reshape_and_transpose_backward(rng):
    shape = shape_of(rng, 2, 4)
    x0 = rng.standard_normal(shape)
    x = tl.tensor(x0, requires_grad=True)
    y = x.reshape(-1, shape[-1])
    w = rng.standard_normal(y.shape)
    y.backward(w)
    close(x.grad, w.reshape(shape), "reshape's gradient is the output gradient reshaped back")
    perm = tuple(int(p) for p in rng.permutation(len(shape)))
    for axes in (perm, None, (1, 0) + tuple(range(2, len(shape)))):
        x = tl.tensor(x0, requires_grad=True)
        y = x.permute(*axes) if axes else x.T
        w = rng.standard_normal(y.shape)
        y.backward(w)
        want = np.transpose(w, np.argsort(axes)) if axes else w.T
        close(x.grad, want, f"transpose{axes}: the gradient is transposed back by the inverse")
    x = tl.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    x.T.backward(np.arange(6.0).reshape(3, 2))
    close(x.grad, np.arange(6.0).reshape(3, 2).T, "T of a (2, 3) tensor")


# ---------------------------------------------------------------------- 03.4 GetItem backward
@ex("03.4")
def test_03_4_getitem_scatter_add(rng):
    x = tl.tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 3, 1])].backward(np.array([1.0, 2.0, 3.0, 4.0]))
    close(x.grad, [0.0, 7.0, 0.0, 3.0], "repeated indices must add up (1+2+4 at index 1)")
    n, c = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    x0 = rng.standard_normal((n, c))
    idx = rng.integers(0, n, size=int(rng.integers(3, 9)))
    x = tl.tensor(x0, requires_grad=True)
    w = rng.standard_normal((len(idx), c))
    x[idx].backward(w)
    want = np.zeros_like(x0)
    for k, i in enumerate(idx):
        want[i] += w[k]
    close(x.grad, want, f"x[{idx.tolist()}]: rows picked several times get the sum")


@ex("03.4")
def test_03_4_getitem_basic(rng):
    x0 = rng.standard_normal((4, 5))
    for index in [(1,), (slice(1, 3), slice(None, None, 2)), (-1, 2), (Ellipsis, 0)]:
        x = tl.tensor(x0, requires_grad=True)
        y = x[index]
        w = rng.standard_normal(y.shape)
        y.backward(w)
        want = np.zeros_like(x0)
        want[index] = w
        close(x.grad, want, f"x[{index}]: the gradient lands where the elements came from")


# ---------------------------------------------------------------------- 03.5 MatMul backward
@ex("03.5")
def test_03_5_matmul_2d(rng):
    for m, k, n in [(2, 3, 4), tuple(int(v) for v in rng.integers(1, 6, size=3))]:
        a0, b0 = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        a, b = tl.tensor(a0, requires_grad=True), tl.tensor(b0, requires_grad=True)
        w = rng.standard_normal((m, n))
        (a @ b).backward(w)
        close(a.grad, w @ b0.T, "dL/dA = dL/dC @ B^T")
        close(b.grad, a0.T @ w, "dL/dB = A^T @ dL/dC")


@ex("03.5")
def test_03_5_matmul_1d_and_batched(rng):
    k = int(rng.integers(1, 5))
    batch = shape_of(rng, 1, 2)
    shapes = [((k,), (k,)), ((k,), (k, 3)), ((3, k), (k,)), (batch + (2, k), (k, 3)),
              ((1,) * len(batch) + (2, k), batch + (k, 3)), (batch + (2, k), (k,))]
    for sa, sb in shapes:
        a0, b0 = rng.standard_normal(sa), rng.standard_normal(sb)
        w = rng.standard_normal(np.matmul(a0, b0).shape)
        a, b = tl.tensor(a0, requires_grad=True), tl.tensor(b0, requires_grad=True)
        (a @ b).backward(w)
        ga, gb = fd_grads(lambda x, y: x @ y, [a0, b0], w)
        close(a.grad, ga, f"gradient of A in {sa} @ {sb} (finite differences)", atol=1e-6)
        close(b.grad, gb, f"gradient of B in {sa} @ {sb} (finite differences)", atol=1e-6)


# ---------------------------------------------------------------------- 03.6 no_grad
@ex("03.6")
def test_03_6_no_grad(rng):
    x = tl.tensor(rng.standard_normal(shape_of(rng)), requires_grad=True)
    assert tl.is_grad_enabled()
    with tl.no_grad():
        assert not tl.is_grad_enabled(), "inside no_grad, is_grad_enabled() should be False"
        y = (x * 2).exp()
    assert not y.requires_grad and y.grad_fn is None, "an op under no_grad must record no graph"
    assert tl.is_grad_enabled(), "no_grad must switch gradients back on when the block ends"
    with pytest.raises(ZeroDivisionError):
        with tl.no_grad():
            raise ZeroDivisionError
    assert tl.is_grad_enabled(), "no_grad must restore the flag even when the block raises"
    with tl.no_grad():
        with tl.no_grad():
            pass
        assert not tl.is_grad_enabled(), "a nested no_grad must restore the outer state (off)"
    assert (x * 2).requires_grad


# ---------------------------------------------------------------------- 04.1 LogSoftmax
def np_log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@ex("04.1")
def test_04_1_log_softmax_forward(rng):
    close(F.log_softmax(tl.tensor(np.array([[0.0, 0.0]]))), [[-math.log(2)] * 2],
          "log_softmax([0, 0])")
    x0 = rng.standard_normal(shape_of(rng, 1, 3)) * 3
    axis = int(rng.integers(-x0.ndim, x0.ndim))
    close(F.log_softmax(tl.tensor(x0), axis=axis), np_log_softmax(x0, axis),
          f"log_softmax over axis {axis} of shape {x0.shape}")
    big = np.array([[1e4, 0.0, -1e4]], dtype=np.float32)
    out = F.log_softmax(tl.tensor(big)).numpy()
    assert np.all(np.isfinite(out)), f"log_softmax at logits 1e4 must stay finite, got {out}"
    close(out, [[0.0, -1e4, -2e4]], "log_softmax at large logits (subtract the max first)")


@ex("04.1")
def test_04_1_log_softmax_backward(rng):
    x0 = rng.standard_normal(shape_of(rng, 1, 3))
    axis = int(rng.integers(-x0.ndim, x0.ndim))
    x = tl.tensor(x0, requires_grad=True)
    w = rng.standard_normal(x0.shape)
    F.log_softmax(x, axis=axis).backward(w)
    p = np.exp(np_log_softmax(x0, axis))
    close(x.grad, w - p * w.sum(axis=axis, keepdims=True),
          "d log_softmax: dx = dy - softmax(x) * sum(dy)")


# ---------------------------------------------------------------------- 06.1 Embedding backward
@ex("06.1")
def test_06_1_embedding_backward(rng):
    w0 = np.zeros((3, 2))
    wt = tl.tensor(w0, requires_grad=True)
    F.embedding(np.array([2, 0, 2]), wt).backward(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    close(wt.grad, [[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]], "id 2 appears twice: its rows add")
    v, c = int(rng.integers(2, 8)), int(rng.integers(1, 5))
    ids = rng.integers(0, v, size=shape_of(rng, 1, 2))
    wt = tl.tensor(rng.standard_normal((v, c)), requires_grad=True)
    g = rng.standard_normal(ids.shape + (c,))
    F.embedding(ids, wt).backward(g)
    want = np.zeros((v, c))
    for pos in np.ndindex(*ids.shape):
        want[ids[pos]] += g[pos]
    close(wt.grad, want, "dW[v] = sum of the output gradients at the positions where ids == v")


# ---------------------------------------------------------------------- 07 attention
def np_attention(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def _qkv(rng):
    b, h = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    t, d = (int(n) for n in rng.integers(1, 5, size=2))
    s = t + int(rng.integers(0, 3))  # S >= T: with is_causal no query row is fully masked
    return [rng.standard_normal(sh) for sh in [(b, h, t, d), (b, h, s, d), (b, h, s, d + 1)]]


@ex("07.1")
def test_07_1_attention_forward(rng):
    q = np.array([[1.0, 0.0]])
    k = np.array([[1.0, 0.0], [0.0, 1.0]])
    v = np.array([[1.0, 2.0], [3.0, 4.0]])
    e = math.exp(1 / math.sqrt(2))
    close(F.scaled_dot_product_attention(tl.tensor(q), tl.tensor(k), tl.tensor(v)),
          [[(e * 1 + 3) / (e + 1), (e * 2 + 4) / (e + 1)]], "softmax(q k^T / sqrt(2)) v")
    q, k, v = _qkv(rng)
    t = lambda a: tl.tensor(a)
    close(F.scaled_dot_product_attention(t(q), t(k), t(v)), np_attention(q, k, v),
          f"attention with q {q.shape}, k {k.shape}, v {v.shape}")
    mask = rng.random((q.shape[0], 1, q.shape[2], k.shape[2])) < 0.6
    mask[..., 0] = True
    close(F.scaled_dot_product_attention(t(q), t(k), t(v), mask=mask), np_attention(q, k, v, mask),
          "attention with a boolean mask (True = attend), broadcast over heads")
    big = tl.tensor(q * 1e3)
    out = F.scaled_dot_product_attention(big, t(k), t(v)).numpy()
    assert np.all(np.isfinite(out)), "attention must subtract the row max before exp"


@ex("07.2")
def test_07_2_attention_backward(rng):
    q, k, v = _qkv(rng)
    for kwargs in ({}, {"is_causal": True}):
        fn = lambda a, b, c, kw=kwargs: F.scaled_dot_product_attention(a, b, c, **kw)
        ts = [tl.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = fn(*ts)
        w = rng.standard_normal(out.shape)
        out.backward(w)
        want = fd_grads(fn, [q, k, v], w)
        for name, tt, g in zip("qkv", ts, want):
            close(tt.grad, g, f"d attention / d{name} {kwargs} (finite differences)", atol=1e-6,
                  rtol=1e-5)


@ex("07.3")
def test_07_3_causal_mask(rng):
    close(F.causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]], "causal_mask(3)")
    t = int(rng.integers(1, 7))
    s = t + int(rng.integers(0, 4))
    m = np.asarray(F.causal_mask(t, s))
    assert m.dtype == bool, f"causal_mask must be boolean, got {m.dtype}"
    want = np.array([[j <= i + (s - t) for j in range(s)] for i in range(t)])
    close(m, want, f"causal_mask({t}, {s}): query i sees keys j <= i + (S - T)")


# ---------------------------------------------------------------------- 08.1 LayerNorm backward
@ex("08.1")
def test_08_1_layer_norm_backward(rng):
    shape = shape_of(rng, 1, 2) + (int(rng.integers(2, 7)),)
    x0 = rng.standard_normal(shape) * 2 + 1
    c = shape[-1]
    w0, b0 = rng.standard_normal(c), rng.standard_normal(c)
    fn = lambda x, w, b: F.layer_norm(x, w, b)
    ts = [tl.tensor(a, requires_grad=True) for a in (x0, w0, b0)]
    out = fn(*ts)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    want = fd_grads(fn, [x0, w0, b0], g, which=[0])[0]
    close(ts[0].grad, want, f"d layer_norm / dx for shape {shape} (finite differences)",
          atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------- 09.1 CrossEntropy
@ex("09.1")
def test_09_1_cross_entropy(rng):
    close(F.cross_entropy(tl.tensor(np.zeros((2, 4))), np.array([1, 3])), math.log(4),
          "uniform logits over 4 classes give log(4)")
    n, v = int(rng.integers(2, 7)), int(rng.integers(2, 6))
    x0 = rng.standard_normal((n, v)) * 2
    t = rng.integers(0, v, size=n)
    t[int(rng.integers(0, n))] = -100
    lsm = np_log_softmax(x0)
    keep = t != -100
    per = np.where(keep, -lsm[np.arange(n), t.clip(0)], 0.0)
    for reduction, want in (("mean", per.sum() / keep.sum()), ("sum", per.sum()), ("none", per)):
        x = tl.tensor(x0, requires_grad=True)
        out = F.cross_entropy(x, t, reduction=reduction)
        close(out, want, f"cross_entropy reduction={reduction} (ignoring target -100)")
        w = rng.standard_normal(out.shape)
        out.backward(w)
        onehot = np.eye(v)[t.clip(0)]
        scale = (w / keep.sum()) if reduction == "mean" else w
        scale = scale[:, None] if reduction == "none" else scale
        close(x.grad, (np.exp(lsm) - onehot) * keep[:, None] * scale,
              f"d cross_entropy / d logits = softmax - onehot (reduction={reduction})")
