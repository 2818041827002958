"""Reverse-mode automatic differentiation: ``Function``, the graph, and ``backward``.

Every differentiable operation is a small ``Function`` subclass with two methods side by side:

* ``forward(*arrays) -> array``: compute the output from the input arrays, saving on ``self``
  whatever the backward pass needs;
* ``backward(grad_out) -> tuple``: given dL/d(output), return dL/d(input) for each input
  (``None`` for an input that needs no gradient; ``self.needs_grad[i]`` says which do).

Calling a Function on tensors runs ``forward`` and, when gradients are wanted, records the
Function as the output's ``grad_fn`` (its creator) together with its input tensors
(``fn.inputs``): that chain of creators is the computational graph. ``backward`` walks it from
the output in reverse topological order, applying the chain rule one Function at a time.

This module never imports the ``Tensor`` class (``tinyllm.tensor`` imports this one, and the
Functions of ``ops`` below it). It needs only this small protocol of a graph node, which
``Tensor`` implements by subclassing ``Node``:

* ``node.data``: the backend array (``node.shape``, ``node.device`` describe it);
  ``node.requires_grad``: whether gradients flow to it;
* ``node.grad_fn``: the Function that made it (``None`` for a leaf); ``node.grad``: where a
  leaf (or a node with ``_retain_grad``) accumulates its gradient;
* ``node._new(array)``: a new node holding ``array`` (no copy, no graph), for outputs;
* ``node._new_constant(value)``: a number or array as a constant node beside this one.

Fast paths: a Function may also define ``fast_forward`` (and ``fast_backward``), a tuned form of
the same computation. The plain ``forward``/``backward`` are what the lessons derive and what
the exercise tests grade; the fast ones run only while ``backend.fast_paths_enabled()``
(``tl.fast_paths(False)`` switches them off) and are gradient-checked against the plain ones.
"""

from __future__ import annotations

import contextlib
import threading
import weakref

from tinyllm import backend, workers


class _GradMode(threading.local):
    """Whether operations record the graph: one flag per thread, as PyTorch's grad mode, so that
    a thread evaluating under ``no_grad`` (a teacher's forward, a sampler) does not switch the
    recording off for another thread that is training. Every thread starts with it on."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """Whether operations on this thread record the graph."""
    return _grad_mode.enabled


@contextlib.contextmanager
def no_grad():
    """Inside ``with tl.no_grad():`` operations record no graph (evaluation, sampling, updates),
    on this thread only."""
    # BEGIN SOLUTION
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous
    # END SOLUTION


@contextlib.contextmanager
def enable_grad():
    """Record the graph inside the block, even within ``no_grad`` (on this thread)."""
    previous, _grad_mode.enabled = _grad_mode.enabled, True
    try:
        yield
    finally:
        _grad_mode.enabled = previous


class Node:
    """A node of the graph: what autograd needs of a tensor (see the module docstring)."""

    __slots__ = ()


class Function:
    """Base class of every differentiable operation (see the module docstring)."""

    inputs: tuple = ()
    needs_grad: tuple = ()
    fast_forward = None  # optional tuned forms, used while backend.fast_paths_enabled()
    fast_backward = None
    ran_fast = False  # whether __call__ chose fast_forward (backward then uses fast_backward)

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def __call__(self, *inputs):
        tensors = inputs
        for t in inputs:
            if not isinstance(t, Node):  # a constant (0.5, an array): wrap it beside a tensor
                tensors = _wrap_constants(self, inputs)
                break
        if backend.cupy_loaded():
            _check_same_device(self, tensors)
        forward = self.forward
        if self.fast_forward is not None and backend.fast_paths_enabled():
            forward, self.ran_fast = self.fast_forward, True
        y = forward(*[t.data for t in tensors])
        if isinstance(y, backend.np.generic):  # NumPy reductions return scalars: keep arrays
            y = backend.np.asarray(y)
        out = tensors[0]._new(y)
        if _grad_mode.enabled:
            needs = tuple([t.requires_grad for t in tensors])
            if True in needs:
                out.requires_grad = True
                out.grad_fn = self
                self.inputs = tensors
                self.needs_grad = needs
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _wrap_constants(fn, inputs) -> list:
    like = next((t for t in inputs if isinstance(t, Node)), None)
    if like is None:
        kinds = ", ".join(type(t).__name__ for t in inputs)
        raise TypeError(f"{type(fn).__name__} needs at least one tensor among its inputs, got "
                        f"({kinds}); make one with tl.tensor(...)")
    return [t if isinstance(t, Node) else like._new_constant(t) for t in inputs]


def _check_same_device(fn, tensors) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        shapes = ", ".join(f"{t.device}:{t.shape}" for t in tensors)
        raise RuntimeError(
            f"{type(fn).__name__} got tensors on different devices ({shapes}); "
            "move them to one device first with .to('cpu') or .to('cuda')"
        )


def operand_data(x, device: str, what: str):
    """The backend array of a data operand ``x`` (ids, targets, a mask, an index, the other side
    of a comparison) of an operation that runs on ``device``.

    tinyllm's one rule for mixing devices, the same as every Function call's: raw data (Python
    numbers and lists, NumPy or CuPy arrays) is moved to ``device`` (NumPy in at the edges); a
    tensor must be there already, and one on another device is refused, as in PyTorch.
    """
    if isinstance(x, Node):
        if x.device != device:
            raise RuntimeError(
                f"{what} is a tensor on {x.device} (shape {x.shape}) but the operation runs on "
                f"{device}; move it first with .to({device!r}) (NumPy arrays are moved for you)")
        return x.data
    return backend.as_array(x, device=device)


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
    walk and a second ``backward`` through the same graph is an error. A gradient takes the
    dtype of the tensor it flows to (a float32 leaf used in a float64 expression gets a float32
    gradient, as in PyTorch).
    """
    order = topological_order(root)
    grads, owned = {id(root): seed}, set()
    for node in reversed(order):
        g = grads.pop(id(node), None)
        fn = node.grad_fn
        if fn is None:  # a leaf: keep its gradient
            if g is not None:
                _accumulate_leaf(node, g)
            continue
        if node._retain_grad and g is not None:
            _accumulate_leaf(node, g)
        if fn is _FREED:
            raise RuntimeError(
                "backward() reached a part of the graph that an earlier backward() already "
                "freed; run the forward pass again before calling backward() a second time"
            )
        if g is None:
            continue
        if fn.ran_fast and fn.fast_backward is not None:
            input_grads = fn.fast_backward(g)
        else:
            input_grads = fn.backward(g)
        for parent, gp in zip(fn.inputs, input_grads):
            if gp is not None and parent.requires_grad:
                if gp.dtype != parent.data.dtype:  # the graph promoted (float32 * float64)
                    gp = gp.astype(parent.data.dtype)
                accumulate(grads, owned, id(parent), gp)
                if isinstance(grads[id(parent)], backend.np.generic):  # 0-d math gives NumPy
                    # scalars, on which a later `+=` would rebind instead of adding in place
                    grads[id(parent)] = backend.np.asarray(grads[id(parent)])
        fn.inputs = None  # free the graph as we go
        node.grad_fn = _FREED


_thread = threading.local()


@contextlib.contextmanager
def leaf_gradients_into(sink: dict):
    """Inside, ``backward`` on this thread adds each leaf's gradient into ``sink`` (id(leaf) ->
    [leaf, gradient]) instead of the leaf's ``.grad``: threads that backpropagate parts of one
    batch at once through the same parameters each keep their own sums, which the caller adds
    into ``.grad`` afterwards in a fixed order (``add_leaf_gradients``), so the result does not
    depend on which thread finished first."""
    previous = getattr(_thread, "sink", None)
    _thread.sink = sink
    try:
        yield sink
    finally:
        _thread.sink = previous


def own_gradient(t) -> None:
    """Let leaf ``t`` keep its gradient in ``.grad`` on this thread even inside
    ``leaf_gradients_into``: for a leaf that only this thread can see (the fresh inputs of a
    checkpoint's recomputation, whose gradients its backward reads back), on which no other
    thread can race. ``release_gradient(t)`` ends it, and so does ``t``'s end (the entry is
    a weak reference: it goes when ``t`` goes, so an id is never listed for another tensor)."""
    owned = getattr(_thread, "owned", None)
    if owned is None:
        owned = _thread.owned = weakref.WeakValueDictionary()
    owned[id(t)] = t


def release_gradient(t) -> None:
    """Undo ``own_gradient(t)``: ``t``'s gradient goes to this thread's sink again, if any."""
    getattr(_thread, "owned", {}).pop(id(t), None)


def add_leaf_gradients(*sinks: dict) -> None:
    """Add the sinks' gradients into their leaves' ``.grad`` (as ``backward`` would have),
    sink after sink: a leaf's total is g_0 + g_1 + ... in the sinks' order, one fresh array."""
    per_leaf = {}
    for sink in sinks:
        for key, (t, g) in sink.items():
            per_leaf.setdefault(key, (t, []))[1].append(g)

    def add(entry):
        t, grads = entry
        if len(grads) == 1:
            _accumulate_leaf(t, grads[0])
            return
        total = grads[0] + grads[1]  # a new array: it may become .grad without a copy
        for g in grads[2:]:
            total += g
        _accumulate_leaf(t, total, fresh=True)

    entries = list(per_leaf.values())  # one leaf's sum is independent of the others'
    workers.for_each(add, entries, sizes=[t.data.size for t, _ in entries])


def _accumulate_leaf(t, g, fresh: bool = False) -> None:
    """Add ``g`` into leaf ``t``'s ``.grad`` (or this thread's sink); ``fresh``: ``g`` is a new
    array nothing else holds, so it may become ``.grad`` without a copy."""
    if g.shape != t.shape:
        raise RuntimeError(f"internal error: gradient of shape {g.shape} for a tensor of shape {t.shape}")
    sink = getattr(_thread, "sink", None)
    if sink is not None and id(t) not in getattr(_thread, "owned", ()):
        entry = sink.get(id(t))
        if entry is None:
            sink[id(t)] = [t, g]  # may be shared with the graph: the next one makes a sum
        else:
            entry[1] = entry[1] + g
        return
    if t.grad is None:
        t.grad = g if fresh else g.copy()  # owned: optimizers and clipping change it in place
    else:
        t.grad += g


class _Freed(Function):
    """Stands where a Function was once ``backward`` has consumed it."""

    inputs = ()


_FREED = _Freed()
