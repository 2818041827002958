"""Bad input gets a clear exception at the call site, naming the shapes or values involved."""

import os

import numpy as np
import pytest

import tinyllm as tl
import tinyllm.functional as F


def t(shape, dtype=np.float32, requires_grad=False):
    return tl.tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad)


def test_matmul_shape_mismatch_names_shapes():
    with pytest.raises(ValueError) as info:
        t((2, 3)) @ t((4, 5))
    msg = str(info.value)
    assert "(2, 3)" in msg and "(4, 5)" in msg and "3" in msg and "4" in msg, msg
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        t((3,)) @ t((2,))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 4, 2\)"):
        t((2, 3, 4)) @ t((5, 4, 2))  # batch axes 2 and 5 do not broadcast


@pytest.mark.parametrize("op", ["add", "subtract", "multiply", "divide"])
def test_broadcast_mismatch_names_shapes(op):
    fn = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
          "multiply": lambda a, b: a * b, "divide": lambda a, b: a / b}[op]
    with pytest.raises(ValueError) as info:
        fn(t((2, 3)), t((4,)))
    msg = str(info.value)
    assert "(2, 3)" in msg and "(4,)" in msg and op in msg, msg


def test_backward_on_non_scalar_without_gradient():
    y = t((2, 3), requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"scalar.*\(2, 3\)"):
        y.backward()


def test_backward_gradient_of_wrong_shape():
    y = t((2, 3), requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
        y.backward(np.ones(4))


def test_backward_through_graph_built_under_no_grad():
    x = t((3,), requires_grad=True)
    with tl.no_grad():
        y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="no_grad"):
        y.backward()


def test_second_backward_through_freed_graph():
    x = t((3,), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time|already"):
        y.backward()


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError) as info:
        tl.tensor(np.arange(6).reshape(2, 3), requires_grad=True)
    msg = str(info.value)
    assert "int64" in msg and "(2, 3)" in msg and "float" in msg, msg


def test_nan_seed_gradient():
    y = t((2,), requires_grad=True) * 2
    with pytest.raises(ValueError, match="NaN"):
        y.backward(np.array([1.0, np.nan]))


def test_reshape_to_incompatible_shape():
    with pytest.raises(ValueError) as info:
        t((2, 3)).reshape(4, 2)
    msg = str(info.value)
    assert "(2, 3)" in msg and "(4, 2)" in msg and "6" in msg, msg


def test_cross_entropy_target_out_of_range():
    with pytest.raises(ValueError) as info:
        F.cross_entropy(t((2, 5)), np.array([1, 7]))
    msg = str(info.value)
    assert "7" in msg and "5" in msg, msg
    with pytest.raises(ValueError, match="-3"):
        F.cross_entropy(t((2, 5)), np.array([-3, 1]))


def test_cross_entropy_target_shape_and_dtype():
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(2, 3\).*\(6,\)"):
        F.cross_entropy(t((2, 3, 5)), np.zeros(6, dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(t((2, 5)), np.zeros(2))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(t((2, 5)), np.zeros(2, dtype=np.int64), reduction="avg")


def test_embedding_id_out_of_range():
    with pytest.raises(IndexError) as info:
        F.embedding(np.array([[0, 9]]), t((5, 3)))
    msg = str(info.value)
    assert "9" in msg and "5" in msg, msg
    with pytest.raises(IndexError, match="-1"):
        F.embedding(np.array([-1]), t((5, 3)))
    with pytest.raises(TypeError, match="integer"):
        F.embedding(np.array([0.0]), t((5, 3)))


def test_bad_attention_mask_shape():
    q = t((2, 3, 4))
    k = t((2, 5, 4))
    with pytest.raises(ValueError) as info:
        F.scaled_dot_product_attention(q, k, k, mask=np.ones((3, 4), bool))
    msg = str(info.value)
    assert "(3, 4)" in msg and "(2, 3, 5)" in msg, msg
    with pytest.raises(TypeError, match="boolean"):
        F.scaled_dot_product_attention(q, k, k, mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 5, 3\)"):
        F.scaled_dot_product_attention(q, t((2, 5, 3)), k)


def test_other_shape_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        tl.concatenate([t((2, 3)), t((2, 4))], axis=0)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        tl.stack([t((2, 3)), t((3, 2))])
    with pytest.raises(ValueError, match="axis 3"):
        t((2, 3)).sum(axis=3)
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        t((2, 3))[5]
    with pytest.raises(ValueError, match="features"):
        F.linear(t((2, 3)), t((4, 5)))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        F.layer_norm(t((2, 3)), t((4,)), t((3,)))
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(t((2,)), approximate="fast")
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(t((2,)), 1.5)


def test_gradcheck_refuses_float32_inputs():
    with pytest.raises(TypeError, match="float64"):
        tl.gradcheck(lambda a: a * 2, t((2,), requires_grad=True))


@pytest.mark.gpu
def test_mixing_devices():
    if os.environ.get("TINYLLM_TEST_DEVICE") not in ("cuda", "fake-cuda"):
        pytest.skip("mixing devices needs CuPy and a GPU (TINYLLM_TEST_DEVICE=cuda) or the fake "
                    "device (TINYLLM_TEST_DEVICE=fake-cuda)")
    from tinyllm.backend import cupy_or_error

    try:
        cupy_or_error()
    except RuntimeError as e:
        pytest.skip(str(e))
    a = tl.tensor(np.ones((2, 3)), device="cpu")
    b = tl.tensor(np.ones((2, 3)), device="cuda")
    with pytest.raises(RuntimeError) as info:
        a + b
    msg = str(info.value)
    assert "cpu" in msg and "cuda" in msg and "(2, 3)" in msg, msg


def test_asking_for_cuda_without_cupy_is_clear():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="CuPy"):
            tl.tensor([1.0], device="cuda")
    else:
        pytest.skip("CuPy is installed")
    with pytest.raises(ValueError, match="tpu"):
        tl.tensor([1.0], device="tpu")
