"""``tl.gradcheck``: compare autograd's gradients with central finite differences.

For each input x and each element i, the numerical derivative of L = sum(fn(*inputs) * w)
(w a fixed random weight, so every output element matters) is

    dL/dx_i ~ (L(x_i + eps) - L(x_i - eps)) / (2 eps),

with an error of order eps^2. Run it in float64: in float32 the rounding error of L swamps
the difference for any useful eps.

``gradcheck`` differentiates and perturbs its own copies of the inputs, so a function that
closes over the array an input was made from (or a tensor sharing memory with it, as
``tl.from_numpy`` makes) sees the values it expects, and the caller's tensors are never written.
"""

from __future__ import annotations

import contextlib

from tinyllm.backend import get_array_module, np
from tinyllm.tensor import Tensor, as_tensor, tensor


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree; the message names the input and element."""


@contextlib.contextmanager
def _recording_nothing(inputs):
    """The inputs detached (same arrays, no graph recorded), so that numerical_grad needs no
    ``no_grad`` (exercise 03.6 comes a lesson after numerical_grad, exercise 02.5)."""
    yield [t.detach() if isinstance(t, Tensor) else t for t in inputs]


def numerical_grad(fn, inputs, index, weight, eps):
    """Central-difference gradient of sum(fn(*inputs) * weight) w.r.t. ``inputs[index]``."""
    x = inputs[index].data
    if not x.flags.c_contiguous:  # reshape(-1) below must be a view that writes through
        x = inputs[index].data = x.copy()
    grad = get_array_module(x).zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    with _recording_nothing(inputs) as inputs:
        for i in range(flat.size):
            # BEGIN SOLUTION
            old = flat[i].item()
            flat[i] = old + eps
            up = float((fn(*inputs).data * weight).sum())
            flat[i] = old - eps
            down = float((fn(*inputs).data * weight).sum())
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
            # END SOLUTION
    return grad


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, raise_exception=True):
    """Check the gradients of ``fn(*inputs)`` w.r.t. every input that requires grad.

    ``inputs`` are tensors (float64 recommended) or arrays; returns True when all agree, else
    raises ``GradcheckError`` naming the input, the element index, the analytic and the numeric
    value (or returns False with ``raise_exception=False``).
    """
    tensors = [_own_copy(x) for x in inputs]
    for i, t in enumerate(tensors):
        if t.requires_grad and t.dtype != np.float64:
            raise TypeError(f"gradcheck input {i} is {t.dtype}: use float64 tensors "
                            "(float32 rounding makes finite differences meaningless)")
    out = fn(*tensors)
    xp = get_array_module(out.data)
    weight = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    out.backward(as_tensor(weight.astype(out.dtype)))
    for i, t in enumerate(tensors):
        if not t.requires_grad:
            continue
        analytic = t.grad if t.grad is not None else xp.zeros_like(t.data)
        numeric = numerical_grad(fn, tensors, i, weight, eps)
        bad = xp.abs(analytic - numeric) > atol + rtol * xp.abs(numeric)
        if bool(bad.any()):
            idx = tuple(int(j) for j in np.argwhere(np.asarray(bad.get() if hasattr(bad, "get") else bad))[0])
            msg = (f"gradient of input {i} (shape {t.shape}) is wrong at index {idx}: "
                   f"autograd gives {float(analytic[idx]):.8g}, finite differences give "
                   f"{float(numeric[idx]):.8g} ({int(bad.sum())} of {bad.size} elements disagree)")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True


def _own_copy(x) -> Tensor:
    """A fresh leaf holding a copy of ``x``; a plain array becomes an input that requires grad."""
    return tensor(x, requires_grad=x.requires_grad if isinstance(x, Tensor) else True)
