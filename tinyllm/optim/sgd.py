"""Stochastic gradient descent with optional momentum and (L2) weight decay."""

from __future__ import annotations

from tinyllm.optim.optimizer import Optimizer


class SGD(Optimizer):
    """p <- p - lr * v, with v = momentum * v + (grad + weight_decay * p) (PyTorch's form)."""

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD needs non-negative lr, momentum and weight_decay, got "
                             f"{lr}, {momentum}, {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def step(self) -> None:
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p, state in self._params_with_grad(group):
                g = p.grad
                # BEGIN SOLUTION
                if wd:
                    g = g + wd * p.data
                if mom:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.copy()
                    else:
                        buf *= mom
                        buf += g
                    g = g + mom * buf if group["nesterov"] else buf
                p.data -= lr * g
                # END SOLUTION
