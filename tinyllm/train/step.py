"""One optimisation step: the heart of every training loop."""

from __future__ import annotations

from tinyllm.optim import clip_grad_norm_


def train_step(loss, optimizer, params, lr: float, grad_clip: float = 0.0) -> float:
    """Update ``params`` from ``loss`` (a scalar Tensor computed from them).

    In order: set every parameter group's learning rate to ``lr``; clear the gradients left by
    the previous step (they would otherwise accumulate); backpropagate; when ``grad_clip > 0``,
    scale the gradients so that their global norm is at most ``grad_clip``; take the optimizer's
    step. Returns the gradient norm before clipping (0.0 when clipping is off).
    """
    norm = 0.0
    # BEGIN SOLUTION
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss.backward()
    if grad_clip > 0:
        norm = clip_grad_norm_(params, grad_clip)
    optimizer.step()
    # END SOLUTION
    return norm
