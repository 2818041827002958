"""Activation (gradient) checkpointing: ``tl.checkpoint(fn, *inputs)`` (Chen et al. 2016).

Backpropagation keeps every intermediate array a Function saved until the backward pass reaches
it, so a network's activation memory grows with its depth. Checkpointing a segment ``fn`` (a
Transformer block, say) trades memory for compute:

* forward: run ``fn`` under ``no_grad`` (nothing inside is saved) and keep only its inputs;
* backward: run ``fn`` again on those inputs with the graph on, and backpropagate the incoming
  gradient through that fresh graph, which is freed as soon as it has been walked.

Only one segment's activations are alive at a time, plus each segment's input: checkpointing
each of L blocks makes the activation memory O(L * input + one block) instead of
O(L * block), for the price of one more forward pass. The gradients are the plain run's, as
long as the recomputed forward is the first one: dropout draws from the random generator, so
its state is saved before the first run and replayed for the second.

Parameters that ``fn`` uses (a Module's, or a bound method's module's) are also inputs of the
Function, so the output joins the graph even when no input needs a gradient; their gradients
are accumulated by the recomputation's own backward, straight into ``.grad``.
"""

from __future__ import annotations

import contextlib

from tinyllm import backend
from tinyllm.autograd import (
    Function,
    enable_grad,
    is_grad_enabled,
    no_grad,
    own_gradient,
    release_gradient,
    run_backward,
)
from tinyllm.tensor import Tensor, as_tensor

__all__ = ["checkpoint", "Checkpoint"]


def _owned_parameters(fn) -> list:
    """The trainable parameters of ``fn`` when it is a Module or a bound method of one."""
    owner = getattr(fn, "__self__", fn)
    params = getattr(owner, "parameters", None)
    return [p for p in params() if p.requires_grad] if callable(params) else []


class Checkpoint(Function):
    """The checkpointed segment as one Function (see the module docstring).

    ``args`` are ``fn``'s arguments as given: the tensors among them arrive as this Function's
    first inputs (their arrays in ``forward``), the others (None, masks as arrays, numbers) are
    passed as they are. The parameters found on ``fn`` are the remaining inputs.
    """

    def __init__(self, fn, args):
        self.fn, self.args = fn, args
        self.n_tensors = sum(isinstance(a, Tensor) for a in args)
        self.owned = []

    def _call(self, arrays, requires_grad=()):
        """fn on the saved arrays: each tensor argument becomes a fresh tensor (a leaf)."""
        leaves, it = [], iter(arrays)
        args = []
        for a in self.args:
            if isinstance(a, Tensor):
                t = as_tensor(next(it))
                if requires_grad and requires_grad[len(leaves)]:
                    t.requires_grad = True
                    # its gradient is read back from .grad, also on a thread whose leaves'
                    # gradients go to a sink (tinyllm.train.threads): it is this call's alone
                    own_gradient(t)
                    self.owned.append(t)
                leaves.append(t)
                a = t
            args.append(a)
        out = self.fn(*args)
        if not isinstance(out, Tensor):
            raise TypeError(f"tl.checkpoint: the function must return one tensor, got "
                            f"{type(out).__name__}")
        return out, leaves

    def forward(self, *arrays):
        inputs = arrays[:self.n_tensors]
        self.rng = _RandomState(inputs[0] if inputs else arrays[0])
        with no_grad():
            out, _ = self._call(inputs)
        self.saved = inputs  # all that the backward pass needs: fn is run again
        return out.data

    def backward(self, gy):
        needs = self.needs_grad[:self.n_tensors]
        # BEGIN SOLUTION
        with self.rng.replay(), enable_grad():
            out, leaves = self._call(self.saved, needs)
        if out.requires_grad:
            run_backward(out, gy)  # parameters' gradients go straight into their .grad
        grads = [t.grad if need else None for t, need in zip(leaves, needs)]
        # END SOLUTION
        for t in self.owned:
            release_gradient(t)
        self.saved, self.owned = None, []
        return tuple(grads) + (None,) * (len(self.needs_grad) - self.n_tensors)


def checkpoint(fn, *inputs):
    """``fn(*inputs)``, keeping only ``inputs`` for the backward pass, which runs ``fn`` again.

    ``fn`` returns one tensor; ``inputs`` may mix tensors and other values (None, a mask).
    Without gradients (``no_grad``, or nothing needs one) it is just ``fn(*inputs)``.
    """
    if not is_grad_enabled():
        return fn(*inputs)
    tensors = [a for a in inputs if isinstance(a, Tensor)]
    params = _owned_parameters(fn)
    if not any(t.requires_grad for t in tensors + params):
        return fn(*inputs)
    return Checkpoint(fn, inputs)(*tensors, *params)


class _RandomState:
    """The random stream as it was before the first run, to replay for the second.

    On the CPU dropout draws from tinyllm's NumPy generator, whose exact state is saved and put
    back afterwards: a checkpointed run draws the same masks as a plain one. CuPy's generator
    has no state to read, so on the GPU it is re-seeded with a seed drawn here (the same seed
    again for the recomputation, and a fresh one after it).
    """

    def __init__(self, like):
        self.host = backend.rng().bit_generator.state
        self.device_seeds = None
        if backend.get_device(like) == "cuda":
            self.device_seeds = [int(s) for s in backend.rng().integers(0, 2 ** 31, size=2)]
            backend.cupy_or_error().random.seed(self.device_seeds[0])

    @contextlib.contextmanager
    def replay(self):
        gen = backend.rng().bit_generator
        now = gen.state
        gen.state = self.host
        if self.device_seeds is not None:
            backend.cupy_or_error().random.seed(self.device_seeds[0])
        try:
            yield
        finally:
            gen.state = now
            if self.device_seeds is not None:
                backend.cupy_or_error().random.seed(self.device_seeds[1])
