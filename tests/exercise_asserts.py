"""Uniform checks for the exercise tests: each failure names the quantity, expected and got.

A student reads these messages in the notebook's ``check()`` report, so each one says *which*
quantity is wrong, its expected and actual shape, where the worst entry is and a few values of
both, and the seed of the random case (``TINYLLM_TEST_SEED=<seed>`` replays it)::

    assert_close("dL/db of a * b, a (2, 3), b (3,)", got, want, rng)

``seed`` may be the ``rng`` fixture's generator itself (its seed is read back) or an int.
Also here, written apart from the engine so that a test never leans on the code it grades:
``fd_grads`` (central differences without ``no_grad``, which is exercise 03.6),
``reference_backward`` (a walk of the graph that needs neither ``topological_order`` nor
``accumulate``, exercises 02.3 and 02.4), ``np_unbroadcast`` and random shapes that broadcast.
"""

from __future__ import annotations

import numpy as np
from helpers import to_numpy

import tinyllm as tl

__all__ = ["assert_close", "assert_equal", "fail", "seed_note", "to_numpy", "fd_grads",
           "reference_backward", "np_unbroadcast", "random_shape", "broadcast_pair",
           "using_np_unbroadcast", "creator"]


def seed_of(seed):
    if seed is None or isinstance(seed, (int, np.integer)):
        return None if seed is None else int(seed)
    entropy = getattr(getattr(getattr(seed, "bit_generator", None), "seed_seq", None),
                      "entropy", None)
    return int(entropy) if isinstance(entropy, (int, np.integer)) else None


def seed_note(seed) -> str:
    s = seed_of(seed)
    return "" if s is None else f"\n(random case from seed {s}: replay with TINYLLM_TEST_SEED={s})"


def fail(name: str, detail: str, seed=None):
    raise AssertionError(f"{name}: {detail}{seed_note(seed)}")


def _show(a) -> str:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        text = np.array2string(a, precision=5, threshold=30, edgeitems=3, max_line_width=100)
    else:
        text = np.array2string(a, threshold=60, edgeitems=6, max_line_width=100)
    return text.replace("\n", "\n    ")


def assert_close(name: str, got, expected, seed=None, atol: float = 1e-6, rtol: float = 1e-5,
                 dtype=None):
    """``got`` equals ``expected`` within ``atol + rtol * |expected|``, with the same shape
    (and ``dtype``, when given)."""
    if got is None:
        fail(name, f"got None, expected an array of shape {np.shape(expected)}", seed)
    g, e = to_numpy(got), np.asarray(to_numpy(expected))
    if g.shape != e.shape:
        fail(name, f"wrong shape: expected {e.shape}, got {g.shape}", seed)
    if dtype is not None and g.dtype != np.dtype(dtype):
        fail(name, f"wrong dtype: expected {np.dtype(dtype)}, got {g.dtype}", seed)
    g64, e64 = g.astype(np.float64), e.astype(np.float64)
    both_inf = np.isinf(e64) & (g64 == e64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both_inf, 0.0, np.abs(g64 - e64))
    tol = atol + rtol * np.abs(np.where(np.isinf(e64), 0.0, e64))
    bad = ~(diff <= tol)  # NaN counts as wrong
    if not bad.any():
        return
    worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(diff, nan=np.inf), -1.0)),
                             e.shape) if e.shape else ()
    where = f" at index {tuple(int(i) for i in worst)}" if e.shape else ""
    fail(name, f"wrong values (shape {e.shape}): {int(bad.sum())} of {bad.size} entries "
               f"differ; worst{where}: expected {e64[worst]:.6g}, got {g64[worst]:.6g}\n"
               f"  expected:\n    {_show(e)}\n  got:\n    {_show(g)}", seed)


def assert_equal(name: str, got, expected, seed=None):
    """Exact equality of arrays, lists or numbers (shape included)."""
    if isinstance(expected, (list, tuple, str, int, bool, type(None))) and not isinstance(
            got, np.ndarray):
        if got != expected:
            fail(name, f"expected {expected!r}, got {got!r}", seed)
        return
    g, e = to_numpy(got), np.asarray(to_numpy(expected))
    if g.shape != e.shape:
        fail(name, f"wrong shape: expected {e.shape}, got {g.shape}", seed)
    if not np.array_equal(g, e):
        bad = g != e
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if e.shape else ()
        fail(name, f"wrong values (shape {e.shape}): {int(bad.sum())} of {bad.size} differ; "
                   f"first at index {first}: expected {e[first]!r}, got {g[first]!r}\n"
                   f"  expected:\n    {_show(e)}\n  got:\n    {_show(g)}", seed)


# ---------------------------------------------------------------------------- independent tools
def fd_grads(fn, arrays, weight, eps=1e-6, which=None):
    """Central differences of L = sum(fn(*tensors) * weight) w.r.t. each array (float64).

    The tensors are made without ``requires_grad``, so no graph is recorded and ``no_grad``
    (exercise 03.6) is not needed.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    which = range(len(arrays)) if which is None else which
    weight = np.asarray(weight, dtype=np.float64)

    def loss():
        out = fn(*[tl.tensor(a.copy()) for a in arrays])
        return float((to_numpy(out).astype(np.float64) * weight).sum())

    grads = []
    for k, a in enumerate(arrays):
        if k not in which:
            grads.append(None)
            continue
        g = np.zeros_like(a)
        for idx in np.ndindex(*a.shape):
            old = a[idx]
            a[idx] = old + eps
            up = loss()
            a[idx] = old - eps
            down = loss()
            a[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def creator(t):
    """The Function that made ``t`` (``grad_fn``; a student edition from before may call it
    ``_ctx``), None for a leaf."""
    fn = getattr(t, "grad_fn", None)
    return fn if fn is not None else getattr(t, "_ctx", None)


def reference_backward(root, seed) -> dict:
    """``{id(tensor): dL/dtensor}`` for every tensor below ``root``, from the Functions'
    ``backward`` alone: a walk written here, apart from the engine's ``run_backward``."""
    order, seen = [], set()

    def visit(t):  # recursive: the test graphs are small
        if id(t) in seen:
            return
        seen.add(id(t))
        fn = creator(t)
        if fn is not None:
            for p in fn.inputs:
                if p.requires_grad:
                    visit(p)
        order.append(t)

    visit(root)
    grads = {id(root): np.asarray(seed, dtype=np.float64)}
    for t in reversed(order):
        fn = creator(t)
        if fn is None or id(t) not in grads:
            continue
        for p, g in zip(fn.inputs, fn.backward(grads[id(t)])):
            if g is not None and p.requires_grad:
                grads[id(p)] = grads[id(p)] + g if id(p) in grads else np.array(g)
    return grads


def np_unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` (the reference for exercise 03.1, in plain NumPy)."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g.reshape(shape)


class using_np_unbroadcast:
    """``with using_np_unbroadcast(): ...`` runs with ``tinyllm.ops.unbroadcast`` replaced by
    ``np_unbroadcast``, so that a lesson-02 test of broadcasting needs no exercise 03.1."""

    def __enter__(self):
        from tinyllm import ops

        self.ops, self.saved = ops, ops.unbroadcast
        ops.unbroadcast = np_unbroadcast
        return self

    def __exit__(self, *exc):
        self.ops.unbroadcast = self.saved


def random_shape(rng, min_ndim=1, max_ndim=3, min_side=1, max_side=5) -> tuple:
    ndim = int(rng.integers(min_ndim, max_ndim + 1))
    return tuple(int(n) for n in rng.integers(min_side, max_side + 1, size=ndim))


def broadcast_pair(rng, max_ndim=3, max_side=5) -> tuple[tuple, tuple]:
    """``(big, small)``: ``small`` broadcasts to ``big`` and differs from it (a leading axis
    dropped or a side set to 1 where ``big`` has more), so a gradient must be summed."""
    while True:
        big = random_shape(rng, 1, max_ndim, 2, max_side)
        drop = int(rng.integers(0, len(big)))
        small = [1 if rng.random() < 0.5 else n for n in big[drop:]]
        if tuple(small) != big:
            return big, tuple(small)
