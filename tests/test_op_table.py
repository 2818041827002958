"""Every row of the op table (``tests/op_table.py``), on the ``device`` fixture:

* forward values, shape and dtype against PyTorch (float32, float64, and int64 where legal);
* gradients and their dtypes against PyTorch;
* gradients against central differences in float64 (no PyTorch needed);
* rows of a Function with a fast path run with fast paths on and off;
* every public op and Tensor method has a row, or a reason in ``EXEMPT``.

Inputs are built with ``tl.tensor(..., device=device)`` and compared through ``.numpy()``, so the
table runs unchanged on a GPU (``TINYLLM_TEST_DEVICE=cuda``) or the strict fake device.
"""

import numpy as np
import pytest
from helpers import check_grads, to_numpy
from op_table import EXEMPT, ROWS

import tinyllm as tl
import tinyllm.functional as F

TOL = {"float64": dict(atol=1e-10, rtol=1e-8), "float32": dict(atol=2e-5, rtol=2e-4),
       "int64": dict(atol=0, rtol=0)}

CASES = [pytest.param(row, dtype, fast, id=f"{row.id}-{dtype}" + ("" if fast else "-plain"))
         for row in ROWS for dtype in row.dtypes()
         for fast in ((True, False) if row.fast_path else (True,))]


def draw(rng, shape, kind, dtype):
    if dtype == "int64":
        x = rng.integers(1, 5, size=shape) if kind == "pos" else rng.integers(-3, 4, size=shape)
        if kind == "away":
            x[x == 0] = 1
        return x.astype(np.int64)
    if kind == "unit":
        return rng.uniform(-0.9, 0.9, size=shape).astype(dtype)
    x = rng.standard_normal(shape)
    if kind == "pos":
        x = np.abs(x) + 0.5
    elif kind == "away":
        x = np.sign(x) * (np.abs(x) + 0.3)
        x[x == 0] = 0.7
    return x.astype(dtype)


def make_inputs(row, arrays, device, requires_grad):
    ts = []
    for i, a in enumerate(arrays):
        if i == 0 and row.noncontig and a.ndim:
            # a strided view of a larger tensor, made a leaf: the op sees non-contiguous data
            t = tl.tensor(np.stack([a, a], axis=-1), device=device)[..., 0].detach()
            if device == "cpu":
                assert not t.data.flags.c_contiguous
        else:
            t = tl.tensor(a, device=device)
        if requires_grad and a.dtype.kind == "f":
            t.requires_grad_()
        ts.append(t)
    return ts


def as_numpy(x):
    return to_numpy(x) if not isinstance(x, (int, float, bool)) else np.asarray(x)


@pytest.mark.torch
@pytest.mark.parametrize("row,dtype,fast", CASES)
def test_row_matches_torch(row, dtype, fast, rng, device):
    torch = pytest.importorskip("torch")
    arrays = [draw(rng, s, row.kind, dtype) for s in row.shapes]
    grad = row.grad and dtype != "int64"
    ts = make_inputs(row, arrays, device, grad)
    with tl.fast_paths(fast):
        out = row.fn(*ts)
        ps = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
        ref = row.ref(*ps)
        got = as_numpy(out)
        want = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
        what = f"{row.id} ({dtype})"
        assert got.shape == want.shape, f"{what}: shape {got.shape}, torch {want.shape}"
        assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch {want.dtype}"
        tol = TOL.get(str(got.dtype), TOL["int64"])  # exact for integer and boolean results
        np.testing.assert_allclose(got, want, err_msg=f"{what}: forward", **tol)
        if not grad:
            return
        w = rng.standard_normal(want.shape).astype(got.dtype)
        out.backward(tl.tensor(w, device=device))
        ref.backward(torch.from_numpy(w))
    for i, (t, p, a) in enumerate(zip(ts, ps, arrays)):
        if a.dtype.kind != "f":
            continue
        want_g = p.grad.numpy() if p.grad is not None else np.zeros(a.shape, a.dtype)
        assert t.grad is not None, f"{what}: input {i} got no gradient"
        g = to_numpy(t.grad)
        assert g.dtype == a.dtype, f"{what}: gradient of input {i} is {g.dtype}"
        np.testing.assert_allclose(g, want_g, err_msg=f"{what}: gradient of input {i}",
                                   **TOL[dtype])


FD_ROWS = [pytest.param(row, id=row.id) for row in ROWS
           if row.grad and row.fd and row.shapes and "float64" in row.floats]


@pytest.mark.parametrize("row", FD_ROWS)
def test_row_gradient_matches_finite_differences(row, rng, device):
    arrays = [draw(rng, s, row.kind, "float64") for s in row.shapes]
    check_grads(row.fn, *arrays, rng=rng, device=device, name=row.id)


# ---------------------------------------------------------------------- the table is complete
NOT_METHODS = {"__module__", "__doc__", "__slots__", "__qualname__", "__array_priority__",
               "__weakref__", "__dict__", "__annotations__", "__firstlineno__",
               "__static_attributes__", "__abstractmethods__"}


def public_names() -> set:
    names = set()
    for cls in tl.Tensor.__mro__[:-1]:  # Tensor, TensorMethods, Node (not object)
        for n in vars(cls):
            dunder = n.startswith("__") and n.endswith("__")
            if (dunder and n not in NOT_METHODS) or not n.startswith("_"):
                names.add(f"Tensor.{n}")
    names |= {f"F.{n}" for n in F.__all__} | {f"tl.{n}" for n in tl.__all__}
    return names


def test_every_public_op_has_a_row():
    names = public_names()
    covered = {c for row in ROWS for c in row.covers}
    missing = sorted(names - covered - set(EXEMPT))
    assert not missing, ("public ops without a row in tests/op_table.py (add one, or a reason "
                         f"to EXEMPT): {missing}")
    unknown = sorted((covered | set(EXEMPT)) - names)
    assert not unknown, f"op_table names that are not public tinyllm names: {unknown}"
    both = sorted(covered & set(EXEMPT))
    assert not both, f"names both covered and exempt: {both}"


def _functions(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _functions(sub)


def test_every_fast_path_is_checked_against_its_plain_form():
    with_fast = {f.__name__ for f in _functions(tl.Function) if f.fast_forward is not None}
    checked = {row.fast_path for row in ROWS if row.fast_path}
    assert with_fast <= checked, (f"Functions with a fast path but no op-table row that runs it "
                                  f"fast and plain: {sorted(with_fast - checked)}")


def test_row_ids_are_unique():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
