"""Shared helpers of the engine tests: an independent finite-difference gradient, random shapes.

``fd_grads`` is written here on purpose, apart from ``tl.gradcheck`` (which is exercise 02.5): the
engine's tests must not lean on the code they test. It evaluates ``fn`` on fresh float64 copies of
the inputs, so it never writes into an array that a tensor owns.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm as tl


def to_numpy(x):
    """A host NumPy array from a Tensor, a NumPy or a CuPy array, or a number."""
    if isinstance(x, tl.Tensor):
        return x.numpy()
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)


def make(array, device="cpu", requires_grad=True, dtype=None):
    """A tensor holding a copy of ``array`` on ``device``."""
    return tl.tensor(np.array(array, dtype=dtype), requires_grad=requires_grad, device=device)


def fd_grads(fn, arrays, weight, eps=1e-6, device="cpu", which=None):
    """Central differences of L = sum(fn(*tensors) * weight) w.r.t. each array in ``arrays``.

    ``fn`` takes tensors and returns a tensor; ``arrays`` are float64 NumPy arrays (left
    unchanged). ``which`` lists the input positions to differentiate (default: all).
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    which = range(len(arrays)) if which is None else which
    weight = np.asarray(weight, dtype=np.float64)

    def loss(arrs):
        with tl.no_grad():
            out = fn(*[tl.tensor(a.copy(), device=device) for a in arrs])
        return float((to_numpy(out).astype(np.float64) * weight).sum())

    grads = []
    for k in range(len(arrays)):
        if k not in which:
            grads.append(None)
            continue
        a = arrays[k]
        g = np.zeros_like(a)
        for idx in np.ndindex(*a.shape):
            old = a[idx]
            a[idx] = old + eps
            up = loss(arrays)
            a[idx] = old - eps
            down = loss(arrays)
            a[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def autograd_grads(fn, arrays, weight, device="cpu", which=None):
    """(output as NumPy, [grad of each input]) from the engine's backward with seed ``weight``."""
    which = range(len(arrays)) if which is None else which
    ts = [tl.tensor(np.array(a, dtype=np.float64), requires_grad=k in which, device=device)
          for k, a in enumerate(arrays)]
    out = fn(*ts)
    out.backward(tl.tensor(np.asarray(weight, dtype=np.float64), device=device))
    grads = []
    for k, t in enumerate(ts):
        if k in which:
            assert t.grad is not None, f"input {k} got no gradient (.grad is None)"
            grads.append(to_numpy(t.grad))
        else:
            grads.append(None)
    return to_numpy(out), grads


def check_grads(fn, *arrays, rng=None, device="cpu", which=None, atol=1e-6, rtol=1e-5, name=""):
    """Assert that the engine's gradients of ``fn`` equal central differences (float64)."""
    rng = np.random.default_rng(0) if rng is None else rng
    which = list(range(len(arrays))) if which is None else list(which)
    with tl.no_grad():
        out_shape = fn(*[tl.tensor(np.array(a, dtype=np.float64), device=device)
                         for a in arrays]).shape
    weight = rng.standard_normal(out_shape)
    _, got = autograd_grads(fn, arrays, weight, device=device, which=which)
    want = fd_grads(fn, arrays, weight, device=device, which=which)
    for k in which:
        assert got[k].shape == np.shape(arrays[k]), (
            f"{name}: gradient of input {k} has shape {got[k].shape}, the input has shape "
            f"{np.shape(arrays[k])}")
        assert got[k].dtype == np.float64, f"{name}: gradient of input {k} is {got[k].dtype}"
        if not np.allclose(got[k], want[k], atol=atol, rtol=rtol):
            bad = np.unravel_index(np.argmax(np.abs(got[k] - want[k])), got[k].shape)
            raise AssertionError(
                f"{name}: gradient of input {k} (shape {np.shape(arrays[k])}) disagrees with "
                f"finite differences; worst at index {bad}: autograd {got[k][bad]!r}, "
                f"finite differences {want[k][bad]!r}\nautograd:\n{got[k]}\nexpected:\n{want[k]}")
    return got


def random_shape(rng, min_ndim=0, max_ndim=3, max_side=4):
    ndim = int(rng.integers(min_ndim, max_ndim + 1))
    return tuple(int(n) for n in rng.integers(1, max_side + 1, size=ndim))


def broadcast_partner(rng, shape):
    """A random shape that broadcasts up to ``shape``: leading axes dropped, some sides set to 1."""
    drop = int(rng.integers(0, len(shape) + 1))
    tail = list(shape[drop:])
    for i in range(len(tail)):
        if rng.random() < 0.4:
            tail[i] = 1
    return tuple(tail)


def assert_close(got, want, what, atol=1e-6, rtol=1e-5):
    got, want = to_numpy(got), to_numpy(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.allclose(got, want, atol=atol, rtol=rtol), (
        f"{what}: values differ (max abs diff {np.max(np.abs(got - want)):.3g})\n"
        f"got:\n{got}\nexpected:\n{want}")


def check_param_grads(model, loss_fn, rng, entries=3, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Backpropagate ``loss_fn()`` (a scalar Tensor of a float64 model) and compare ``entries``
    random entries of every parameter's gradient with central differences. Returns the count."""
    model.zero_grad()
    loss_fn().backward()
    checked = 0
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.dtype == np.float64, f"{name}: check gradients of a float64 model"
        flat, gflat = p.data.reshape(-1), p.grad.reshape(-1)
        for i in rng.choice(flat.size, size=min(entries, flat.size), replace=False):
            old = flat[i]
            with tl.no_grad():
                flat[i] = old + eps
                up = float(loss_fn().item())
                flat[i] = old - eps
                down = float(loss_fn().item())
            flat[i] = old
            num = (up - down) / (2 * eps)
            assert abs(gflat[i] - num) <= atol + rtol * abs(num), (
                f"{name}[{np.unravel_index(i, p.shape)}]: autograd {gflat[i]!r}, "
                f"finite differences {num!r}")
            checked += 1
    return checked


def copy_checkpoint(src, tmp_path, edit_weights=None, edit_config=None):
    """A copy of the Hugging Face folder ``src`` (config.json, model.safetensors) in
    ``tmp_path / "ckpt"``, its weights and config edited by the callables given (in place)."""
    import json
    import shutil

    d = tmp_path / "ckpt"
    d.mkdir()
    shutil.copy(src / "config.json", d)
    shutil.copy(src / "model.safetensors", d)
    if edit_weights:
        w = tl.load(d / "model.safetensors")
        edit_weights(w)
        tl.save(w, d / "model.safetensors")
    if edit_config:
        cfg = json.loads((d / "config.json").read_text())
        edit_config(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def require_tiny_shakespeare():
    """Skip the calling test unless Tiny Shakespeare is in ``TINYLLM_DATA_DIR`` (never downloaded
    by a test)."""
    from tinyllm.data import load_corpus

    try:
        load_corpus("tinyshakespeare", download_missing=False)
    except Exception:  # noqa: BLE001
        pytest.skip("Tiny Shakespeare is not available (set TINYLLM_DATA_DIR)")
