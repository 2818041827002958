"""The hand-written NumPy reference's parameters and optimizer: every parameter and gradient a
view into one flat float32 buffer, so that AdamW and global-norm clipping are a handful of
vector operations over all the numbers at once (``tinyllm.bench.numpy_gpt`` uses both)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FlatParams", "NumpyAdamW"]

F32 = np.float32


class FlatParams:
    """Parameters and gradients as views into two flat float32 buffers.

    Matrices (the decayed parameters, nanoGPT's grouping) come first, so that weight decay is one
    slice ``flat[:n_decay]``.
    """

    def __init__(self, shapes: dict, decay_all: bool = False):
        names = sorted(shapes, key=lambda n: 0 if (decay_all or len(shapes[n]) >= 2) else 1)
        total = sum(math.prod(shapes[n]) for n in names)
        self.flat = np.zeros(total, dtype=F32)
        self.grad_flat = np.zeros(total, dtype=F32)
        self.params, self.grads, off = {}, {}, 0
        self.n_decay = 0
        for n in names:
            size = math.prod(shapes[n])
            self.params[n] = self.flat[off:off + size].reshape(shapes[n])
            self.grads[n] = self.grad_flat[off:off + size].reshape(shapes[n])
            off += size
            if decay_all or len(shapes[n]) >= 2:
                self.n_decay = off

    def load(self, state: dict) -> None:
        """Copy values from ``{name: array}`` (e.g. a tinyllm ``state_dict`` as NumPy arrays)."""
        missing = sorted(set(self.params) - set(state))
        if missing:
            raise KeyError(f"the reference needs parameters {missing}")
        for n, p in self.params.items():
            a = np.asarray(state[n], dtype=F32)
            if a.shape != p.shape:
                raise ValueError(f"parameter {n}: shape {a.shape}, the reference expects {p.shape}")
            p[...] = a


class NumpyAdamW:
    """AdamW over the flat buffers, the formula of ``tinyllm.optim.AdamW`` (and PyTorch's),
    with global-norm gradient clipping, all in place with one scratch buffer."""

    def __init__(self, flat: FlatParams, lr=1e-3, betas=(0.9, 0.99), eps=1e-8,
                 weight_decay=0.1, grad_clip=1.0):
        self.f = flat
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.grad_clip = grad_clip
        self.m = np.zeros_like(flat.flat)
        self.v = np.zeros_like(flat.flat)
        self.tmp = np.empty_like(flat.flat)
        self.t = 0

    def clip(self) -> float:
        g = self.f.grad_flat
        norm = math.sqrt(float(np.dot(g, g)))
        if self.grad_clip and norm > self.grad_clip:
            g *= self.grad_clip / (norm + 1e-6)
        return norm

    def step(self) -> None:
        self.t += 1
        p, g, m, v, tmp = self.f.flat, self.f.grad_flat, self.m, self.v, self.tmp
        lr, b1, b2 = self.lr, self.b1, self.b2
        if self.wd:
            p[:self.f.n_decay] *= 1 - lr * self.wd
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(1 - b2 ** self.t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** self.t)
        p -= tmp
