"""Grading tests of the autograd exercises of lesson 02 (lesson 03's are in
test_exercises_autograd_ii.py).

Lesson order: a test of exercise LL.N uses only what exercises up to LL.N built. So the 02.x
tests call the Functions' ``backward`` directly on arrays, walk graphs with
``reference_backward`` (not the engine's walk, exercises 02.3 and 02.4), broadcast with
``using_np_unbroadcast`` (unbroadcast is exercise 03.1), and never need ``no_grad`` (03.6) or
``tl.gradcheck`` (02.5). Every test draws several random cases from the ``rng`` fixture, so that
no hard-coded answer passes; failures name the quantity, with expected and got and the seed.
"""

import numpy as np
import pytest
from exercise_asserts import (
    assert_close,
    assert_equal,
    broadcast_pair,
    creator,
    fail,
    np_unbroadcast,
    random_shape,
    reference_backward,
    using_np_unbroadcast,
)

import tinyllm as tl
from tinyllm import autograd, ops
from tinyllm.gradcheck import numerical_grad

NEEDS = [(True, True), (False, True), (True, False)]


def run(fn_cls, *arrays, gy, needs=None, **kw):
    """A Function's forward then backward, called directly on arrays (no graph, no walk)."""
    f = fn_cls(**kw)
    f.needs_grad = needs or (True,) * len(arrays)
    f.forward(*arrays)
    return f.backward(gy)


def check_needs(name, grads, needs, seed):
    for i, (g, need) in enumerate(zip(grads, needs)):
        if not need and g is not None:
            fail(name, f"input {i} has needs_grad False, so its gradient must be None "
                       f"(got an array of shape {np.shape(g)})", seed)


# ---------------------------------------------------------------------- 02.1 Mul / Div backward
def _pairs(rng):
    """Equal shapes, then broadcasting both ways: (a shape, b shape)."""
    out = [(np.array([2.0, -3.0]).shape, (2,))]
    for _ in range(3):
        big, small = broadcast_pair(rng)
        out += [(big, big), (big, small), (small, big)]
    return out


def _check_binary_backward(rng, fn_cls, sign, draw_b, rules):
    """``fn_cls.backward`` for a (sign) b on every pair of shapes of ``_pairs`` and every
    needs_grad; ``rules`` are (the formula in words, its NumPy form (a, b, gy) -> array) for
    dL/da and dL/db, each unbroadcast to its input's shape."""
    with using_np_unbroadcast():
        for sa, sb in _pairs(rng):
            a, b = rng.standard_normal(sa), draw_b(sb)
            gy = rng.standard_normal(np.broadcast_shapes(sa, sb))
            for needs in NEEDS:
                ga, gb = run(fn_cls, a, b, gy=gy, needs=needs)  # exactly two gradients
                grads = (ga, gb)
                what = f"{fn_cls.__name__}.backward, a {sa} {sign} b {sb}, needs_grad {needs}"
                check_needs(what, grads, needs, rng)
                for i, (shape, (formula, rule)) in enumerate(zip((sa, sb), rules)):
                    if needs[i]:
                        assert_close(f"{what}: {formula}", grads[i],
                                     np_unbroadcast(rule(a, b, gy), shape), rng)


@pytest.mark.exercise("02.1")
def test_02_1_mul_backward(rng):
    _check_binary_backward(rng, ops.Mul, "*", rng.standard_normal, [
        ("dL/da = unbroadcast(gy * b, a.shape)", lambda a, b, gy: gy * b),
        ("dL/db = unbroadcast(gy * a, b.shape)", lambda a, b, gy: gy * a)])


@pytest.mark.exercise("02.1")
def test_02_1_div_backward(rng):
    def draw_b(shape):  # |b| in [0.5, 2], either sign: away from the pole at 0
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)

    _check_binary_backward(rng, ops.Div, "/", draw_b, [
        ("dL/da = unbroadcast(gy / b, a.shape)", lambda a, b, gy: gy / b),
        ("dL/db = unbroadcast(-gy * a / b**2, b.shape)", lambda a, b, gy: -gy * a / b**2)])


@pytest.mark.exercise("02.1")
def test_02_1_through_tensors(rng):
    for _ in range(3):
        s = random_shape(rng)
        a0, b0 = rng.standard_normal(s), rng.uniform(1.0, 3.0, s)
        a, b = tl.tensor(a0, requires_grad=True), tl.tensor(b0, requires_grad=True)
        y = a * b / b * a  # = a^2
        gy = rng.standard_normal(s)
        grads = reference_backward(y, gy)
        assert_close(f"gradient of a*b/b*a (= a^2) with respect to a, shape {s}", grads[id(a)],
                     2 * a0 * gy, rng)
        assert_close(f"gradient of a*b/b*a with respect to b (it cancels), shape {s}",
                     grads[id(b)], np.zeros(s), rng, atol=1e-9)


# ---------------------------------------------------------------------- 02.2 Exp Log Tanh Pow
@pytest.mark.exercise("02.2")
def test_02_2_elementwise_backward(rng):
    for x in (np.array([0.5, 1.0, 2.0]), *(rng.uniform(0.1, 2.0, random_shape(rng))
                                          for _ in range(3))):
        gy = rng.standard_normal(x.shape)
        (g,) = run(ops.Exp, x, gy=gy)
        assert_close(f"Exp.backward at x of shape {x.shape}: exp'(x) = exp(x)", g,
                     gy * np.exp(x), rng)
        (g,) = run(ops.Log, x, gy=gy)
        assert_close(f"Log.backward at x of shape {x.shape}: log'(x) = 1/x", g, gy / x, rng)
        (g,) = run(ops.Tanh, x, gy=gy)
        assert_close(f"Tanh.backward at x of shape {x.shape}: tanh'(x) = 1 - tanh(x)^2", g,
                     gy * (1 - np.tanh(x) ** 2), rng)
        for p in (2.0, 3.0, 1.0, 4.0, 0.5, -1.5, float(rng.uniform(-3, 3))):
            (g,) = run(ops.Pow, x, gy=gy, p=p)
            assert_close(f"Pow.backward with p={p:g}: (x^p)' = p x^(p-1)", g,
                         gy * p * x ** (p - 1), rng)


@pytest.mark.exercise("02.2")
def test_02_2_float32_stays_float32(rng):
    x = rng.uniform(0.5, 2.0, random_shape(rng)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    for cls, kw in ((ops.Exp, {}), (ops.Log, {}), (ops.Tanh, {}), (ops.Pow, {"p": 3.0}),
                    (ops.Pow, {"p": 0.5})):
        (g,) = run(cls, x, gy=gy, **kw)
        if g.dtype != np.float32:
            fail(f"{cls.__name__}.backward{kw or ''} on float32", f"the gradient is {g.dtype}: "
                 "training runs in float32, never upcast", rng)


@pytest.mark.exercise("02.2")
def test_02_2_works_in_a_chain(rng):
    for _ in range(3):
        x0 = rng.uniform(0.5, 1.5, random_shape(rng))
        x = tl.tensor(x0, requires_grad=True)
        y = (x ** 3).log().tanh().exp()
        gy = rng.standard_normal(x0.shape)
        t = np.tanh(3 * np.log(x0))
        assert_close("gradient of exp(tanh(log(x^3))) (the chain rule through your four rules)",
                     reference_backward(y, gy)[id(x)], gy * np.exp(t) * (1 - t**2) * 3 / x0, rng)


# ---------------------------------------------------------------------- 02.3 topological order
def _random_graph(rng, n):
    leaves = [tl.tensor(rng.standard_normal(2), requires_grad=True) for _ in range(3)]
    nodes = list(leaves)
    for _ in range(n):
        i, j = rng.integers(0, len(nodes), size=2)
        op = int(rng.integers(0, 4))
        a, b = nodes[int(i)], nodes[int(j)]
        nodes.append(a * b if op == 0 else a - b if op == 1 else a.tanh() if op == 2
                     else a * tl.tensor(rng.standard_normal(2)))  # a constant input
    root = nodes[-1]
    for t in nodes[-6:-1]:
        root = root * t
    return root


def _check_order(order, root, seed=None):
    what = "topological_order(root)"
    ids = [id(t) for t in order]
    if len(ids) != len(set(ids)):
        fail(what, f"listed a tensor twice ({len(ids)} entries, {len(set(ids))} different)", seed)
    if not order or order[-1] is not root:
        fail(what, "the root must come last (after everything it depends on)", seed)
    pos = {id(t): k for k, t in enumerate(order)}
    stack, seen = [root], set()
    while stack:  # every tensor reachable from the root through inputs that require grad
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if id(t) not in pos:
            fail(what, f"a tensor of the graph (shape {t.shape}) is missing from the order", seed)
        fn = creator(t)
        for p in (fn.inputs if fn is not None else ()):
            if p.requires_grad:
                if pos.get(id(p), len(order)) > pos[id(t)]:
                    fail(what, f"an input (position {pos.get(id(p))}) comes after the tensor "
                               f"made from it (position {pos[id(t)]})", seed)
                stack.append(p)
    if len(seen) != len(order):
        fail(what, f"listed {len(order) - len(seen)} tensors that are not in the graph "
                   "(inputs that do not require grad, such as constants, are left out)", seed)


@pytest.mark.exercise("02.3")
def test_02_3_topological_order_small():
    a = tl.tensor(np.array([1.0]), requires_grad=True)
    b = a * a
    c = b * a
    d = c * b
    order = autograd.topological_order(d)
    _check_order(order, d)
    assert_equal("topological_order of d = (a*a*a)*(a*a): the tensors in order a, b, c, d",
                 [{id(a): "a", id(b): "b", id(c): "c", id(d): "d"}.get(id(t), "?")
                  for t in order], ["a", "b", "c", "d"])


@pytest.mark.exercise("02.3")
def test_02_3_topological_order_random_graphs(rng):
    for _ in range(4):
        root = _random_graph(rng, int(rng.integers(10, 40)))
        _check_order(autograd.topological_order(root), root, rng)


@pytest.mark.exercise("02.3")
def test_02_3_long_chain_needs_no_recursion():
    x = tl.tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0
    order = autograd.topological_order(y)
    _check_order(order, y)
    assert_equal("the length of the order of a 3000-op chain", len(order), 3001)


# ---------------------------------------------------------------------- 02.4 accumulate
@pytest.mark.exercise("02.4")
def test_02_4_accumulate_direct(rng):
    for _ in range(3):
        s = random_shape(rng)
        g1, g2, g3 = (rng.standard_normal(s) for _ in range(3))
        keep1, keep2 = g1.copy(), g2.copy()
        grads, owned = {}, set()
        autograd.accumulate(grads, owned, "k", g1)
        assert_close("grads['k'] after the first gradient (stored as it is)", grads["k"], g1, rng)
        autograd.accumulate(grads, owned, "k", g2)
        assert_close("grads['k'] after a second gradient: their sum", grads["k"], keep1 + keep2,
                     rng)
        assert_close("the first gradient after the second was added (it may be shared: "
                     "never change it in place)", g1, keep1, rng)
        fresh = grads["k"]
        autograd.accumulate(grads, owned, "k", g3)
        assert_close("grads['k'] after a third gradient", grads["k"], keep1 + keep2 + g3, rng)
        if grads["k"] is not fresh:
            fail("accumulate", "the third gradient should be added in place into the sum that "
                               "the second made (that array is owned: no new array needed)", rng)
        assert_close("the second gradient after the third was added", g2, keep2, rng)
        autograd.accumulate(grads, owned, "other", g3)
        assert_close("grads['other'] (keys are separate)", grads["other"], g3, rng)


@pytest.mark.exercise("02.4")
def test_02_4_tensor_used_twice(rng):
    for x0 in (np.array([1.0, -2.0]), *(rng.standard_normal(random_shape(rng))
                                        for _ in range(3))):
        x = tl.tensor(x0, requires_grad=True)
        gy = rng.standard_normal(x0.shape)
        (x * x + x * 3.0 - x).backward(gy)
        assert_close("x.grad of x*x + 3x - x (x used four times): 2x + 2", x.grad,
                     gy * (2 * x0 + 2), rng)


# ---------------------------------------------------------------------- 02.5 numerical_grad
@pytest.mark.exercise("02.5")
def test_02_5_numerical_grad(rng):
    for x0 in (np.array([0.5, -1.0, 2.0]), *(rng.uniform(-2, 2, random_shape(rng))
                                            for _ in range(3))):
        c0 = rng.standard_normal(x0.shape)
        x, c = tl.tensor(x0.copy()), tl.tensor(c0.copy())
        w = rng.standard_normal(x0.shape)
        f = lambda a, b: a * a * a * b
        for eps in (1e-6, 1e-3):  # at 1e-3 a one-sided difference is off by about 3e-3
            g = numerical_grad(f, [x, c], 0, w, eps)
            assert_close(f"numerical d/dx of sum(w * x^3 c) with eps={eps:g} (3 w x^2 c, "
                         "central differences)", g, 3 * x0**2 * c0 * w, rng, atol=2e-5,
                         rtol=1e-5)
        g = numerical_grad(f, [x, c], 1, w, 1e-6)
        assert_close("numerical d/dc of sum(w * x^3 c) (w x^3)", g, x0**3 * w, rng, atol=1e-5)
        assert_close("x after numerical_grad (every perturbed element must be put back)",
                     x.data, x0, rng, atol=0, rtol=0)


@pytest.mark.exercise("02.5")
def test_02_5_gradcheck_uses_it(rng):
    x = tl.tensor(rng.standard_normal(random_shape(rng)), requires_grad=True)
    if not tl.gradcheck(lambda a: (a * a).tanh(), x):
        fail("tl.gradcheck of tanh(x * x)", "reported a wrong gradient for a correct one", rng)

    class Wrong(tl.Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, gy):
            return (gy * self.a,)  # should be 2 a gy

    with pytest.raises(tl.GradcheckError):
        tl.gradcheck(lambda a: Wrong()(a), tl.tensor(np.abs(x.data) + 1, requires_grad=True))
