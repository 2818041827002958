"""Every core in one process: the parts of a batch forward and backward at once, on threads.

NumPy runs each elementwise expression on one core and only its matmuls on all of them, so a
small model's step leaves the other cores idle most of the time. Cutting the batch into
``threads`` parts and running each part's forward and backward on its own thread keeps every
core busy with all of the work: NumPy's loops and OpenBLAS's matmuls release Python's GIL, so
the threads compute at the same time, and each matmul runs on one BLAS thread
(``tinyllm.blas.limit(1)``) instead of queueing for all of them.

    losses = backward_on_threads([part_loss_0, part_loss_1], threads=2)

Each ``part_loss_i()`` builds its part's (already weighted) scalar loss; its gradients go to a
sink of its own (``autograd.leaf_gradients_into``), and the sinks are added into the
parameters' ``.grad`` in the parts' order once all have finished: the same sum whichever
thread ends first, equal to the one-thread step's gradient to float32 rounding. Each part
draws its dropout masks from a generator of its own, seeded from tinyllm's generator, so a run
stays reproducible and resumable. Inside ``workers.use(threads)`` (the trainer's and the
bench's step) that sum, and then the clipping and the optimizer's update, spread over the same
threads parameter by parameter (``tinyllm.workers``), bit for bit the one-thread loops.

Any loss that builds a graph may run this way, also one that switches the graph off inside
(a teacher's or a reference model's forward under ``tl.no_grad``, activation checkpointing):
the autograd switch is one flag per thread, as in PyTorch, and each part starts with the
caller's. On a GPU the device already runs every part in parallel: ``threads`` is for the CPU.
"""

from __future__ import annotations

import os

from tinyllm import autograd, backend, blas, workers

__all__ = ["backward_on_threads", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _run_part(part_loss, generator, sink, grad_enabled=True, errors=None):
    # the caller's autograd switch and NumPy error handling (both per thread: a pool thread
    # keeps none of its own), e.g. a float16 step that ignores an overflow it checks later
    mode = autograd.enable_grad() if grad_enabled else autograd.no_grad()
    with mode, backend.np.errstate(**(errors or {})), backend.thread_rng(generator), \
            autograd.leaf_gradients_into(sink):
        loss = part_loss()
        loss.backward()
        return loss.item()


def backward_on_threads(part_losses: list, threads: int) -> list[float]:
    """Run each ``part_loss()`` and its ``backward``, spread over ``threads`` threads (this one
    included); add their gradients into ``.grad`` in order; return the parts' loss values
    (floats).

    With ``threads`` == 1 (or one part) this is the plain loop, on this thread, with tinyllm's
    generator: exactly what a step without threads does."""
    if threads <= 1 or len(part_losses) <= 1:
        values = []
        for part_loss in part_losses:
            loss = part_loss()
            loss.backward()
            values.append(loss.item())
        return values
    seeds = backend.rng().integers(0, 2**63, size=len(part_losses))
    grad_enabled, errors = autograd.is_grad_enabled(), backend.np.geterr()
    sinks = [{} for _ in part_losses]

    def run(i):
        return _run_part(part_losses[i], backend.np.random.default_rng(int(seeds[i])), sinks[i],
                         grad_enabled, errors)

    # every part is enough work for a thread of its own; an error is raised once all stopped
    with blas.limit(1), workers.use(threads):
        values = workers.map_ordered(run, range(len(part_losses)))
    autograd.add_leaf_gradients(*sinks)  # inside workers.use(n), the leaves spread over n threads
    return values
