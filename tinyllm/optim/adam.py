"""Adam and AdamW: per-parameter step sizes from running moments of the gradient.

    m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

Adam adds weight decay to the gradient (L2); AdamW decays the weights directly,
p <- p (1 - lr wd), so that the decay is not rescaled by the adaptive step (Loshchilov & Hutter).
"""

from __future__ import annotations

import math

from tinyllm import backend, workers
from tinyllm.backend import get_array_module
from tinyllm.optim.optimizer import Optimizer


class Adam(Optimizer):
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: invalid hyper-parameters lr={lr}, "
                             f"betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self) -> None:
        update = self._fast_update if backend.fast_paths_enabled() else self._update
        work = [(p, state, group) for group in self.param_groups
                for p, state in self._params_with_grad(group)]

        def one(item):
            p, state, g = item
            update(p, p.grad, state, g["lr"], *g["betas"], g["eps"], g["weight_decay"])

        # each parameter's update is its own: inside workers.use(n) they spread over n threads
        workers.for_each(one, work, sizes=[p.data.size for p, _, _ in work])

    def _update(self, p, g, state, lr, b1, b2, eps, wd):
        xp = get_array_module(g)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        # BEGIN SOLUTION
        if wd and self.decoupled:
            p.data *= 1 - lr * wd
        elif wd:
            g = g + wd * p.data
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        step_size = lr / (1 - b1 ** t)
        denom = xp.sqrt(v)
        denom *= 1 / math.sqrt(1 - b2 ** t)
        denom += eps
        p.data -= step_size * (m / denom)
        # END SOLUTION

    def _fast_update(self, p, g, state, lr, b1, b2, eps, wd):
        """The same update with one scratch array instead of five temporaries (the optimizer
        is a dozen passes over every parameter: fewer allocations are most of what can be
        saved); a float32 parameter's scalars stay float32."""
        xp = get_array_module(g)
        if not state or (wd and not self.decoupled):
            return self._update(p, g, state, lr, b1, b2, eps, wd)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if wd:
            p.data *= 1 - lr * wd
        tmp = xp.multiply(g, g)
        tmp *= 1 - b2
        v *= b2
        v += tmp
        xp.multiply(g, 1 - b1, out=tmp)
        m *= b1
        m += tmp
        xp.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(1 - b2 ** t)
        tmp += eps
        xp.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** t)
        p.data -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as in PyTorch)."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
