"""The strict fake device (``tests/fakecupy``) is strict: each way in which code written for
NumPy breaks on CuPy raises here too, and every copy to the host is counted.

These tests use the fake directly (no installing); ``test_fake_device_bounds.py`` and
``test_fake_device_parity.py`` run tinyllm on it.
"""

import gc
import operator

import fakecupy as cp
import fakecupy.cupyx as cupyx
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _zero_counters():
    cp.reset()


def dev(shape=(2, 3), dtype="float32"):
    return cp.asarray(np.arange(np.prod(shape), dtype=dtype).reshape(shape))


# ---------------------------------------------------------------------------- no implicit NumPy
@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda a: np.ascontiguousarray(a),
                                     lambda a: np.array2string(a)], ids=["asarray", "array",
                                                                         "contiguous", "print"])
def test_no_implicit_conversion_to_numpy(convert):
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        convert(dev())


@pytest.mark.parametrize("fn", [np.exp, np.tanh, lambda a: np.maximum(a, a), np.isfinite],
                         ids=["exp", "tanh", "maximum", "isfinite"])
def test_numpy_ufuncs_refuse_device_arrays(fn):
    with pytest.raises(TypeError, match="Implicit conversion"):
        fn(dev())


@pytest.mark.parametrize("fn", [lambda a: np.concatenate([a, a]), lambda a: np.sum(a),
                                lambda a: np.where(a > 1, a, 0), lambda a: np.isin(a, [1]),
                                lambda a: np.add.at(a, [0], 1.0)],
                         ids=["concatenate", "sum", "where", "isin", "add.at"])
def test_numpy_functions_refuse_device_arrays(fn):
    with pytest.raises(TypeError):
        fn(dev())


# ---------------------------------------------------------------------------- no host arrays mixed in
@pytest.mark.parametrize("op", [operator.add, operator.mul, operator.truediv, operator.lt,
                                operator.matmul], ids=lambda f: f.__name__)
def test_host_arrays_mixed_into_device_operations_raise(op):
    a, h = dev((2, 2)), np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="host NumPy array"):
        op(a, h)
    with pytest.raises(TypeError, match="host NumPy array"):
        op(h, a)
    with pytest.raises(TypeError, match="host NumPy array"):
        op(a, np.asarray(2.0, np.float32))  # a 0-d host array is a host array too


def test_host_arrays_refused_as_index_value_and_argument():
    a = dev((3, 2))
    with pytest.raises(TypeError, match="as an index"):
        a[np.array([0, 2])]
    with pytest.raises(TypeError, match="as an index"):
        a[np.array([True, False, True])]
    with pytest.raises(TypeError, match="host NumPy array"):
        a[0] = np.zeros(2, np.float32)
    with pytest.raises(TypeError, match="host NumPy array"):
        a += np.ones((3, 2), np.float32)
    with pytest.raises(TypeError, match="host NumPy array"):
        cp.where(a > 1, a, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="host NumPy array"):
        cp.concatenate([a, np.zeros((1, 2))])
    with pytest.raises(TypeError, match="host NumPy array"):
        cupyx.scatter_add(a, cp.asarray([0, 0]), np.ones((2, 2)))
    with pytest.raises(TypeError, match="device array to write into"):
        cupyx.scatter_add(np.zeros(3), cp.asarray([0]), cp.asarray([1.0]))


def test_scalars_mix_freely_as_in_cupy():
    a = dev((2,))
    for out in (a * 2, 2 * a, a * np.float32(2), np.float32(2) * a, a + True, 1 - a):
        assert isinstance(out, cp.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(cp.asnumpy(np.float32(2) * a), [0.0, 2.0])


# ---------------------------------------------------------------------------- transfers counted
@pytest.mark.parametrize("copy, what", [
    (float, "float()"), (int, "int()"), (bool, "bool()"), (lambda a: a.item(), ".item()"),
    (lambda a: a.tolist(), ".tolist()"), (cp.asnumpy, ".get()"), (lambda a: a.get(), ".get()"),
    (repr, "repr()"), (lambda a: f"{a:.3f}", "format()"), (lambda a: range(10)[a], "index"),
])
def test_every_copy_to_the_host_is_counted_with_its_place(copy, what):
    a = cp.asarray(np.int64(3)).astype("int64")
    cp.reset()
    copy(a)
    assert cp.counters.to_host == 1, cp.counters.host_copies
    assert what in cp.counters.host_copies[0] and "test_fake_device.py:" in cp.counters.host_copies[0]


def test_reductions_stay_on_the_device():
    a = dev((3, 4))
    cp.reset()
    for r in (a.sum(), a.max(axis=None), a.mean(), cp.vdot(a.reshape(-1), a.reshape(-1)),
              (a > 2).any(), cp.sqrt(a.sum()), a[1, 2]):
        assert isinstance(r, cp.ndarray) and r.shape == ()
    assert cp.counters.to_host == 0
    assert float(a.sum()) == 66.0 and cp.counters.to_host == 1


def test_results_sized_by_the_data_are_counted():
    """Boolean-mask indexing and nonzero need the count on the host (a sync in CuPy)."""
    a = dev((3, 4))
    cp.reset()
    a[a > 4]
    (a > 4).nonzero()
    cp.flatnonzero(a)
    assert cp.counters.to_host == 3, cp.counters.host_copies
    a[a > 4] = 0.0  # assigning through a mask needs no count
    a[cp.asarray([0, 2])]
    assert cp.counters.to_host == 3, cp.counters.host_copies


def test_host_to_device_copies_are_counted():
    cp.asarray(np.zeros(3))
    cp.asarray([1, 2])
    a = cp.zeros(3)  # made on the device: no copy
    assert cp.asarray(a) is a
    assert cp.counters.to_device == 2
    stacked = cp.array([a.sum(), a.max()])  # device scalars stacked where they are
    assert stacked.shape == (2,) and cp.counters.to_device == 2


# ---------------------------------------------------------------------------- memory accounted
def test_allocations_and_live_bytes():
    gc.collect()
    base = cp.get_default_memory_pool().used_bytes()
    a = cp.zeros((100,), dtype="float32")
    view = a[10:20].reshape(2, 5).T  # views of a: no new buffer
    assert cp.counters.allocations == 1
    assert cp.get_default_memory_pool().used_bytes() == base + 400
    b = a * 2
    assert cp.counters.allocations == 2 and cp.get_default_memory_pool().used_bytes() == base + 800
    del a, b
    gc.collect()
    assert cp.get_default_memory_pool().used_bytes() == base + 400  # the view keeps a's buffer
    del view
    gc.collect()
    assert cp.get_default_memory_pool().used_bytes() == base


def test_in_place_and_out_arguments_keep_the_array():
    a = dev((4,))
    cp.reset()
    a += 1
    a *= 2
    assert cp.exp(a, out=a) is a
    assert cp.counters.allocations == 0
    np.testing.assert_allclose(a.get(), np.exp(2 * (np.arange(4) + 1)), rtol=1e-6)


# ---------------------------------------------------------------------------- the namespace
def test_namespace_mirrors_what_tinyllm_uses():
    a = dev((2, 3))
    assert cp.get_array_module(a) is cp and cp.get_array_module(np.zeros(1)) is np
    assert cp.cuda.runtime.getDeviceCount() == 1 and cp.cuda.Device(0).id == 0
    assert cp.finfo(cp.float32).min == np.finfo(np.float32).min and cp.float32 is np.float32
    x = cp.zeros(3)
    cupyx.scatter_add(x, cp.asarray([0, 0, 2]), cp.asarray([1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(x.get(), [3.0, 0.0, 5.0])  # repeated indices add up
    cp.add.at(x, cp.asarray([1, 1]), 1.0)
    np.testing.assert_array_equal(x.get(), [3.0, 2.0, 5.0])
    parts = cp.split(a, [1], axis=1)
    assert [p.shape for p in parts] == [(2, 1), (2, 2)] and all(isinstance(p, cp.ndarray) for p in parts)
    assert cp.broadcast_shapes((2, 1), (3,)) == (2, 3)


def test_random_is_seeded_and_not_numpys_stream():
    cp.random.seed(3)
    u = cp.random.random((4,), dtype="float32")
    cp.random.seed(3)
    assert isinstance(u, cp.ndarray) and u.dtype == np.float32
    np.testing.assert_array_equal(cp.random.random((4,), dtype="float32").get(), u.get())
    assert not np.array_equal(u.get(), np.random.default_rng(3).random(4, dtype="float32"))


def test_install_and_uninstall():
    import sys

    if cp.installed():
        pytest.skip("the whole run is on the fake device (TINYLLM_TEST_DEVICE=fake-cuda)")
    before = sys.modules.get("cupy")
    cp.install()
    try:
        import cupy
        import cupyx as installed_x

        assert cupy is cp and installed_x is cupyx and cp.installed()
    finally:
        cp.uninstall()
    assert sys.modules.get("cupy") is before
