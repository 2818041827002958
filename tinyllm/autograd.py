"""Reverse-mode automatic differentiation: ``Function``, the graph, and ``backward``.

Every differentiable operation is a small ``Function`` subclass with two methods side by side:

* ``forward(*arrays) -> array``: compute the output from the input arrays, saving on ``self``
  whatever the backward pass needs;
* ``backward(grad_out) -> tuple``: given dL/d(output), return dL/d(input) for each input
  (``None`` for an input that needs no gradient; ``self.needs_grad[i]`` says which do).

Calling a Function on tensors runs ``forward`` and, when gradients are wanted, records the
Function as the output's ``grad_fn`` (its creator) together with its input tensors: that chain of
creators is the computational graph. ``backward`` walks it from the output in reverse
topological order, applying the chain rule one Function at a time.
"""

from __future__ import annotations

import contextlib

from tinyllm import backend

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Inside ``with tl.no_grad():`` operations record no graph (evaluation, sampling, updates)."""
    global _grad_enabled
    # BEGIN SOLUTION
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous
    # END SOLUTION


@contextlib.contextmanager
def enable_grad():
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, True
    try:
        yield
    finally:
        _grad_enabled = previous


class Function:
    """Base class of every differentiable operation (see the module docstring)."""

    inputs: tuple = ()
    needs_grad: tuple = ()

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def __call__(self, *inputs):
        Tensor = _Tensor or _load_tensor()
        tensors = inputs
        for t in inputs:
            if not isinstance(t, Tensor):  # a constant (0.5, an array): wrap them all
                tensors = _wrap_constants(inputs, Tensor)
                break
        if backend._cupy is not None:
            _check_same_device(self, tensors)
        y = self.forward(*[t.data for t in tensors])
        if isinstance(y, backend.np.generic):  # NumPy reductions return scalars: keep arrays
            y = backend.np.asarray(y)
        out = _as_tensor(y)
        if _grad_enabled:
            needs = tuple([t.requires_grad for t in tensors])
            if True in needs:
                out.requires_grad = True
                out.grad_fn = self
                self.inputs = tensors
                self.needs_grad = needs
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


_Tensor = None  # tinyllm.tensor.Tensor, bound on first use: tensor.py imports this module
_as_tensor = None


def _load_tensor():
    global _Tensor, _as_tensor
    from tinyllm.tensor import Tensor, as_tensor

    _Tensor, _as_tensor = Tensor, as_tensor
    return Tensor


def _wrap_constants(inputs, Tensor) -> list:
    from tinyllm.tensor import as_tensor_like

    first = next((t for t in inputs if isinstance(t, Tensor)), None)
    return [t if isinstance(t, Tensor) else as_tensor_like(t, first) for t in inputs]


def _check_same_device(fn, tensors) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        shapes = ", ".join(f"{t.device}:{t.shape}" for t in tensors)
        raise RuntimeError(
            f"{type(fn).__name__} got tensors on different devices ({shapes}); "
            "move them to one device first with .to('cpu') or .to('cuda')"
        )


def topological_order(root) -> list:
    """Tensors of the graph below ``root``, every tensor after all the tensors it depends on.

    Iterative depth-first search (a recursive one would hit Python's recursion limit on a
    chain of a few thousand operations): a node is appended once all its inputs are.
    """
    order, visited = [], set()
    # BEGIN SOLUTION
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node.grad_fn is not None:
            for parent in node.grad_fn.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    # END SOLUTION
    return order


def accumulate(grads: dict, owned: set, key, g) -> None:
    """Add gradient ``g`` into ``grads[key]``: a tensor used twice gets the sum of both paths.

    The first gradient is stored as is (it may be shared with another node, so it must not be
    changed in place); the second makes a fresh sum, which later ones add into in place.
    """
    # BEGIN SOLUTION
    acc = grads.get(key)
    if acc is None:
        grads[key] = g
    elif key in owned:
        acc += g
    else:
        grads[key] = acc + g
        owned.add(key)
    # END SOLUTION


def run_backward(root, seed) -> None:
    """Propagate ``seed`` = dL/d(root) through the graph to every leaf's ``.grad``.

    Leaves (tensors made by the user, such as parameters) accumulate into ``.grad`` across calls;
    intermediate gradients live only while needed. Each Function's references to its inputs and
    saved arrays are dropped as soon as it has run, so the graph's memory is freed during the
    walk and a second ``backward`` through the same graph is an error.
    """
    order = topological_order(root)
    grads, owned = {id(root): seed}, set()
    for node in reversed(order):
        g = grads.pop(id(node), None)
        ctx = node.grad_fn
        if ctx is None:  # a leaf: keep its gradient
            if g is not None:
                _accumulate_leaf(node, g)
            continue
        if node._retain_grad and g is not None:
            _accumulate_leaf(node, g)
        if ctx is _FREED:
            raise RuntimeError(
                "backward() reached a part of the graph that an earlier backward() already "
                "freed; run the forward pass again before calling backward() a second time"
            )
        if g is None:
            continue
        input_grads = ctx.backward(g)
        for parent, gp in zip(ctx.inputs, input_grads):
            if gp is not None and parent.requires_grad:
                accumulate(grads, owned, id(parent), gp)
                if isinstance(grads[id(parent)], backend.np.generic):  # 0-d math gives NumPy
                    # scalars, on which a later `+=` would rebind instead of adding in place
                    grads[id(parent)] = backend.np.asarray(grads[id(parent)])
        ctx.inputs = None  # free the graph as we go
        node.grad_fn = _FREED


def _accumulate_leaf(t, g) -> None:
    if g.shape != t.shape:
        raise RuntimeError(f"internal error: gradient of shape {g.shape} for a tensor of shape {t.shape}")
    if t.grad is None:
        t.grad = g.copy()  # owned: optimizers and clipping may change it in place
    else:
        t.grad += g


class _Freed(Function):
    """Stands where a Function was once ``backward`` has consumed it."""

    inputs = ()


_FREED = _Freed()
