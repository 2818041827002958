"""Finite-difference gradient checks (float64) of every primitive op, on broadcasting shapes.

Runs on the ``device`` fixture (CPU here; CuPy with TINYLLM_TEST_DEVICE=cuda on a GPU machine).
The reference is ``helpers.fd_grads``, independent of ``tl.gradcheck``.
"""

import numpy as np
import pytest
from helpers import check_grads, fd_grads, to_numpy

import tinyllm as tl

POS = "pos"  # inputs drawn positive (log, sqrt, division)
AWAY = "away"  # inputs kept away from 0 (relu kink, division)

# (id, fn, input shapes, value kind)
CASES = [
    ("add_bcast_3x1", lambda a, b: a + b, [(2, 3, 4), (3, 1)], None),
    ("add_bcast_vec", lambda a, b: a + b, [(2, 3, 4), (4,)], None),
    ("add_scalar_tensor", lambda a, b: a + b, [(2, 3, 4), ()], None),
    ("add_both_expand", lambda a, b: a + b, [(3, 1), (1, 4)], None),
    ("add_python_number", lambda a: a + 2.5, [(3, 2)], None),
    ("radd", lambda a: 2.5 + a, [(3, 2)], None),
    ("sub_bcast", lambda a, b: a - b, [(2, 3, 4), (3, 1)], None),
    ("sub_bcast_rev", lambda a, b: a - b, [(4,), (2, 3, 4)], None),
    ("rsub", lambda a: 1 - a, [(3, 2)], None),
    ("mul_bcast", lambda a, b: a * b, [(2, 3, 4), (3, 1)], None),
    ("mul_bcast_scalar", lambda a, b: a * b, [(), (2, 3)], None),
    ("mul_python_number", lambda a: a * 0.5, [(3,)], None),
    ("rmul", lambda a: 3 * a, [(3,)], None),
    ("div_bcast", lambda a, b: a / b, [(2, 3, 4), (4,)], AWAY),
    ("div_bcast_rev", lambda a, b: a / b, [(3, 1), (2, 3, 4)], AWAY),
    ("rdiv", lambda a: 2 / a, [(3, 2)], AWAY),
    ("div_number", lambda a: a / 3, [(3, 2)], None),
    ("neg", lambda a: -a, [(2, 3)], None),
    ("pow2", lambda a: a ** 2, [(2, 3)], None),
    ("pow3", lambda a: a ** 3, [(2, 3)], None),
    ("pow_half", lambda a: a ** 0.5, [(2, 3)], POS),
    ("pow_neg", lambda a: a ** -1.5, [(2, 3)], POS),
    ("x_times_x", lambda a: a * a, [(2, 3)], None),
    ("used_twice", lambda a: a * a + a * 3 - a / 2, [(2, 3)], None),
    ("used_twice_bcast", lambda a, b: (a + b) * b, [(2, 3), (3,)], None),
    ("diamond", lambda a: (a.exp() + a.tanh()) * (a * 2), [(4,)], None),
    ("exp", lambda a: a.exp(), [(2, 3)], None),
    ("log", lambda a: a.log(), [(2, 3)], POS),
    ("sqrt", lambda a: a.sqrt(), [(2, 3)], POS),
    ("tanh", lambda a: a.tanh(), [(2, 3)], None),
    ("relu", lambda a: a.relu(), [(2, 3)], AWAY),
    ("sigmoid", lambda a: a.sigmoid(), [(2, 3)], None),
    ("abs", lambda a: a.abs(), [(2, 3)], AWAY),
    ("tl_exp_log_sqrt_tanh", lambda a: tl.tanh(tl.sqrt(tl.exp(tl.log(a)))), [(3,)], POS),
    ("matmul_1d_1d", lambda a, b: a @ b, [(4,), (4,)], None),
    ("matmul_1d_2d", lambda a, b: a @ b, [(4,), (4, 3)], None),
    ("matmul_2d_1d", lambda a, b: a @ b, [(3, 4), (4,)], None),
    ("matmul_2d_2d", lambda a, b: a @ b, [(3, 4), (4, 2)], None),
    ("matmul_batched", lambda a, b: a @ b, [(2, 3, 4), (2, 4, 2)], None),
    ("matmul_batched_2d", lambda a, b: a @ b, [(2, 3, 4), (4, 2)], None),
    ("matmul_2d_batched", lambda a, b: a @ b, [(3, 4), (2, 4, 2)], None),
    ("matmul_bcast_batch", lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)], None),
    ("matmul_1d_batched", lambda a, b: a @ b, [(4,), (2, 4, 3)], None),
    ("matmul_batched_1d", lambda a, b: a @ b, [(2, 3, 4), (4,)], None),
    ("sum_all", lambda a: a.sum(), [(2, 3, 4)], None),
    ("sum_axis0", lambda a: a.sum(axis=0), [(2, 3, 4)], None),
    ("sum_axis_neg", lambda a: a.sum(axis=-1), [(2, 3, 4)], None),
    ("sum_tuple", lambda a: a.sum(axis=(0, 2)), [(2, 3, 4)], None),
    ("sum_tuple_neg_keep", lambda a: a.sum(axis=(-1, 0), keepdims=True), [(2, 3, 4)], None),
    ("sum_keepdims", lambda a: a.sum(axis=1, keepdims=True), [(2, 3, 4)], None),
    ("sum_none_keep", lambda a: a.sum(keepdims=True), [(2, 3)], None),
    ("sum_0d", lambda a: a.sum(), [()], None),
    ("mean_all", lambda a: a.mean(), [(2, 3, 4)], None),
    ("mean_axis", lambda a: a.mean(axis=1), [(2, 3, 4)], None),
    ("mean_neg_keep", lambda a: a.mean(axis=-2, keepdims=True), [(2, 3, 4)], None),
    ("mean_tuple", lambda a: a.mean(axis=(1, 2)), [(2, 3, 4)], None),
    ("max_all", lambda a: a.max(), [(2, 3, 4)], None),
    ("max_axis", lambda a: a.max(axis=1), [(2, 3, 4)], None),
    ("max_neg_keep", lambda a: a.max(axis=-1, keepdims=True), [(2, 3, 4)], None),
    ("max_tuple", lambda a: a.max(axis=(0, 2)), [(2, 3, 4)], None),
    ("var", lambda a: a.var(axis=-1), [(3, 4)], None),
    ("reshape", lambda a: a.reshape(4, 6), [(2, 3, 4)], None),
    ("reshape_minus1", lambda a: a.reshape(-1, 2) * tl.tensor(np.arange(2.0), device=a.device),
     [(2, 3, 4)], None),
    ("reshape_tuple", lambda a: a.reshape((3, 8)), [(2, 3, 4)], None),
    ("flatten", lambda a: a.flatten(), [(2, 3)], None),
    ("transpose_all", lambda a: a.transpose(), [(2, 3, 4)], None),
    ("transpose_perm", lambda a: a.transpose(1, 2, 0), [(2, 3, 4)], None),
    ("transpose_swap", lambda a: a.transpose(0, 2), [(2, 3, 4)], None),
    ("transpose_neg", lambda a: a.transpose(-1, -2), [(2, 3, 4)], None),
    ("T", lambda a: a.T, [(3, 4)], None),
    ("permute", lambda a: a.permute(2, 0, 1), [(2, 3, 4)], None),
    ("index_int", lambda a: a[1], [(3, 4)], None),
    ("index_neg_int", lambda a: a[-1, 2], [(3, 4)], None),
    ("index_slice", lambda a: a[:, 1:3], [(3, 4)], None),
    ("index_step", lambda a: a[::2, ::-1], [(3, 4)], None),
    ("index_none_ellipsis", lambda a: a[None, ..., 0], [(2, 3, 4)], None),
    ("index_repeated", lambda a: a[np.array([0, 2, 0, 0])], [(3, 4)], None),
    ("index_repeated_list", lambda a: a[[1, 1, 2]], [(3, 4)], None),
    ("index_repeated_2d", lambda a: a[np.array([[0, 1], [1, 1]])], [(3, 2)], None),
    ("index_pairs", lambda a: a[np.array([0, 0, 2]), np.array([1, 1, 3])], [(3, 4)], None),
    ("index_mixed", lambda a: a[:, np.array([3, 3, 0])], [(3, 4)], None),
    ("index_tensor", lambda a: a[tl.tensor(np.array([2, 2, 1]), device=a.device)], [(3, 4)], None),
    ("index_bool", lambda a: a[np.array([True, False, True])], [(3, 4)], None),
    ("index_bool_2d", lambda a: a[np.array([[True, False], [False, True], [True, True]])],
     [(3, 2)], None),
    ("concatenate0", lambda a, b: tl.concatenate([a, b]), [(2, 3), (4, 3)], None),
    ("concatenate_neg", lambda a, b, c: tl.concatenate([a, b, c], axis=-1),
     [(2, 3), (2, 1), (2, 2)], None),
    ("concatenate_same", lambda a: tl.concatenate([a, a * 2], axis=1), [(2, 3)], None),
    ("cat", lambda a, b: tl.cat([a, b], axis=1), [(2, 2, 3), (2, 1, 3)], None),
    ("stack0", lambda a, b: tl.stack([a, b]), [(2, 3), (2, 3)], None),
    ("stack1", lambda a, b, c: tl.stack([a, b, c], axis=1), [(2, 3), (2, 3), (2, 3)], None),
    ("stack_neg", lambda a, b: tl.stack([a, b], axis=-1), [(2, 3), (2, 3)], None),
    ("where", lambda a, b: tl.where(np.array([[True, False, True], [False, False, True]]), a, b),
     [(2, 3), (2, 3)], None),
    ("where_bcast", lambda a, b: tl.where(np.array([True, False, True]), a, b),
     [(2, 1), (3,)], None),
    ("where_number", lambda a: tl.where(np.array([True, False]), a, 0.0), [(3, 2)], None),
    ("masked_fill", lambda a: a.masked_fill(np.array([[True, False]]), -1.0), [(3, 2)], None),
    ("to_dtype", lambda a: a.to(dtype="float64") * 2, [(3,)], None),
    ("deep_chain", None, [(3,)], None),  # filled below
]


def _deep(a):
    y = a
    for i in range(60):
        y = (y * 0.9 + 0.1 * (y if i % 2 else y.tanh())) / 1.01
    return y


CASES[-1] = ("deep_chain", _deep, [(3,)], None)


def draw(rng, shape, kind):
    x = rng.standard_normal(shape)
    if kind == POS:
        x = np.abs(x) + 0.5
    elif kind == AWAY:
        x = np.sign(x) * (np.abs(x) + 0.3)
        x[x == 0] = 0.7
    return x


@pytest.mark.parametrize("name,fn,shapes,kind", CASES, ids=[c[0] for c in CASES])
def test_op_gradient_matches_finite_differences(name, fn, shapes, kind, rng, device):
    arrays = [draw(rng, s, kind) for s in shapes]
    check_grads(fn, *arrays, rng=rng, device=device, name=name)


def test_grads_on_constant_operand_are_left_alone(rng, device):
    a = tl.tensor(rng.standard_normal((2, 3)), requires_grad=True, device=device)
    b = tl.tensor(rng.standard_normal((3,)), device=device)
    (a * b).sum().backward()
    assert b.grad is None
    np.testing.assert_allclose(to_numpy(a.grad), np.broadcast_to(to_numpy(b), (2, 3)))


def test_max_ties_split_the_gradient(device):
    x = tl.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]), requires_grad=True, device=device)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [[0, 0.5, 0.5], [0.5, 0, 0.5]])


def test_repeated_index_scatter_adds(device):
    x = tl.tensor(np.zeros(4), requires_grad=True, device=device)
    idx = np.array([1, 1, 1, 3])
    x[idx].sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0, 3, 0, 1])


def test_fd_helper_is_right_on_a_closed_form():
    """The reference itself: d/dx sum(w * x^3) = 3 w x^2."""
    x = np.array([0.5, -1.0, 2.0])
    w = np.array([1.0, 2.0, -1.0])
    (g,) = fd_grads(lambda t: t ** 3, [x], w)
    np.testing.assert_allclose(g, 3 * w * x ** 2, rtol=1e-6)


# ---------------------------------------------------------------------- tl.gradcheck itself
class _WrongSquare(tl.Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return (gy * 3 * self.x,)  # should be 2x


def test_gradcheck_passes_on_correct_functions(rng):
    a = tl.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = tl.tensor(rng.standard_normal((3,)), requires_grad=True)
    assert tl.gradcheck(lambda x, y: (x * y).tanh() @ y, a, b)
    assert tl.gradcheck(lambda x: x.exp().sum(axis=0), rng.standard_normal((3, 2)))


def test_gradcheck_names_input_index_and_values(rng):
    x = tl.tensor(rng.standard_normal((2, 3)) + 5.0, requires_grad=True)
    c = tl.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    with pytest.raises(tl.GradcheckError) as info:
        tl.gradcheck(lambda a, b: a * b + _WrongSquare()(b), x, c)
    msg = str(info.value)
    assert "input 1" in msg and "(2, 3)" in msg and "index (" in msg, msg
    assert "autograd gives" in msg and "finite differences give" in msg, msg
    assert not tl.gradcheck(lambda a: _WrongSquare()(a), c, raise_exception=False)


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        tl.gradcheck(lambda a: a * 2, tl.tensor(np.ones(3, np.float32), requires_grad=True))


def test_gradcheck_on_non_contiguous_input(rng):
    a = tl.tensor(rng.standard_normal((4, 3)).T, requires_grad=True)
    assert tl.gradcheck(lambda x: x * x, a)
