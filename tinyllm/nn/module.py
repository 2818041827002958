"""``Module`` and ``Parameter``: how layers hold their weights and find each other.

A Module registers sub-modules and Parameters simply by attribute assignment
(``self.fc = Linear(4, 8)``), so ``named_parameters()`` can walk the tree and give every weight
a dotted name (``blocks.0.attn.c_attn.weight``): the names of ``state_dict()`` and of the
weight files.
"""

from __future__ import annotations

from collections import OrderedDict

from tinyllm import backend
from tinyllm.tensor import Tensor, as_tensor


class Parameter(Tensor):
    """A tensor that is a learned weight of a Module (float, requires grad)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(backend.as_array(data))
        if not backend.is_float(self.data.dtype):
            raise TypeError(f"a Parameter must be floating point, got {self.data.dtype}")
        self.requires_grad = requires_grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of every layer and model. Subclasses define ``forward``; call the module."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before assigning attributes (while setting {name!r})")
        target = (self._parameters if isinstance(value, Parameter) else
                  self._modules if isinstance(value, Module) else None)
        for store in (self._parameters, self._modules, self._buffers):
            if store is not target:
                store.pop(name, None)
        if target is not None:
            target[name] = value  # a re-assigned name keeps its place in the order (as PyTorch)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value) -> None:
        """A tensor that belongs to the module's state but is not learned (saved in state_dict)."""
        object.__setattr__(self, name, value)
        self._buffers[name] = value

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ walking the tree
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def children(self):
        yield from self._modules.values()

    def named_children(self):
        yield from self._modules.items()

    def named_parameters(self, prefix: str = ""):
        """Yield (dotted name, Parameter) for every parameter, each once, in a stable order.

        A module's own parameters come first, then its sub-modules' in assignment order. A
        parameter shared by two modules (tied weights) is yielded once, under its first name.
        """
        seen = set()
        # BEGIN SOLUTION
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p
        # END SOLUTION

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self):
        for mod_name, mod in self.named_modules():
            for name, b in mod._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag: bool = True):
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def to(self, device=None, dtype=None):
        """Move every parameter and buffer to ``device`` ('cpu' or 'cuda') and/or cast the
        floating-point ones to ``dtype`` (e.g. "float64" for gradient checks), in place."""
        def convert(a):
            if device is not None:
                a = backend.to_device(a, device)
            if dtype is not None and backend.is_float(a.dtype):
                a = a.astype(dtype)
            return a

        for p in self.parameters():
            p.data = convert(p.data)
            if p.grad is not None:
                p.grad = convert(p.grad)
        for m in self.modules():
            for name, b in list(m._buffers.items()):
                if b is not None:
                    m.register_buffer(name, as_tensor(convert(b.data)))
        return self

    def double(self):
        """Cast parameters and buffers to float64 (for finite-difference gradient checks)."""
        return self.to(dtype="float64")

    def float(self):
        return self.to(dtype="float32")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict:
        """Name -> NumPy array (a host copy) of every parameter and buffer."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = p.numpy().copy()
        for name, b in self.named_buffers():
            out[name] = b.numpy().copy()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays (or tensors) from ``state_dict`` into the parameters and buffers.

        The values may be NumPy or CuPy arrays, tensors on either device, or nested lists; each
        is copied to its parameter's device and dtype.

        Everything is checked before anything is copied, so a failed load leaves the module
        unchanged. ``strict`` refuses missing and unexpected keys; a wrong shape is always an
        error. Returns (missing_keys, unexpected_keys).
        """
        own = OrderedDict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        wrong = []
        arrays = {}
        for k, target in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            v = v.data if isinstance(v, Tensor) else v  # NumPy or CuPy arrays stay as they are
            if not hasattr(v, "shape"):  # nested lists or numbers
                v = backend.as_array(v)
            if tuple(v.shape) != tuple(target.shape):
                wrong.append(f"{k}: expected {tuple(target.shape)}, got {tuple(v.shape)}")
            arrays[k] = v
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if wrong:
            problems.append(f"wrong shapes: {'; '.join(wrong)}")
        if problems:
            raise KeyError(f"load_state_dict into {type(self).__name__} failed (nothing was "
                           f"loaded): " + " | ".join(problems))
        for k, v in arrays.items():
            t = own[k]
            # to the parameter's device and dtype (a host or device array, from either side)
            t.data = backend.as_array(v, dtype=t.dtype, device=t.device).copy()
        return missing, unexpected

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, p in self._parameters.items():
            lines.append(f"  ({name}): Parameter{tuple(p.shape)}")
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered as children named 0, 1, 2, ..."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after the other: Sequential(a, b)(x) == b(a(x))."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
