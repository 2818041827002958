"""Gradient clipping by global norm."""

from __future__ import annotations

from tinyllm import workers
from tinyllm.backend import get_array_module


def clip_grad_norm_(params, max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    norm = sqrt(sum over every gradient g of sum(g^2)); when norm > max_norm each gradient is
    multiplied by max_norm / (norm + 1e-6). Returns the norm before clipping (useful to log:
    spikes warn of instability).

    The norm is one reduction where the gradients live: each gradient's sum of squares stays
    on the device, they are added there, and only the total crosses to the host (on a GPU one
    synchronisation per call, not one per parameter).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = get_array_module(grads[0])
    sizes = [g.size for g in grads]  # inside workers.use(n) the gradients spread over n threads
    squares = xp.stack(workers.map_ordered(lambda g: xp.vdot(g.reshape(-1), g.reshape(-1)),
                                           grads, sizes))
    total = float(xp.sqrt(squares.astype("float64").sum()))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)

        def shrink(g):
            g *= scale

        workers.for_each(shrink, grads, sizes)
    return total
