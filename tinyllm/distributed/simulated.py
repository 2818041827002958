"""A world of N ranks inside one process: threads that pass messages through queues.

    from tinyllm.distributed.simulated import run_world
    sums = run_world(4, lambda comm, x: ring_all_reduce(comm, x), [a0, a1, a2, a3])

``run_world(n, fn, per_rank_args)`` runs ``fn(comm, *args)`` on n threads and returns the
results in rank order. ``comm`` has the few methods of an mpi4py communicator that
point-to-point code needs (``Get_rank``, ``Get_size``, ``Send``, ``Recv``, ``Sendrecv``,
``Barrier``), so code written against it runs unchanged on ``MPI.COMM_WORLD``. Messages are
copied when sent (the sender may reuse its buffer at once, as with MPI) and delivered in order
between each pair of ranks; ``bytes_sent`` counts what a rank sent. A receive that waits longer
than ``timeout`` seconds (a deadlock: every rank waiting for another) raises instead of hanging,
and an exception in one rank stops the others and is re-raised by ``run_world``.
"""

from __future__ import annotations

import queue
import threading
import time

from tinyllm.backend import get_array_module

__all__ = ["run_world", "ThreadComm", "DeadlockError"]


class DeadlockError(RuntimeError):
    """A rank waited too long for a message that no rank was going to send."""


class _World:
    def __init__(self, n: int, timeout: float):
        self.n, self.timeout = n, timeout
        self.queues = {(s, d): queue.Queue() for s in range(n) for d in range(n)}
        self.barrier = threading.Barrier(n)
        self.failed = threading.Event()


class ThreadComm:
    """Rank ``rank`` of a simulated world (see the module doc)."""

    def __init__(self, world: _World, rank: int):
        self.world, self.rank, self.bytes_sent, self.messages = world, rank, 0, 0

    def Get_rank(self) -> int:  # noqa: N802  (mpi4py's names)
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return self.world.n

    def _peer(self, other: int, what: str) -> int:
        if not 0 <= other < self.world.n or other == self.rank:
            raise ValueError(f"rank {self.rank}: {what} must be another rank in "
                             f"0..{self.world.n - 1}, got {other}")
        return other

    def Send(self, buf, dest: int, tag: int = 0) -> None:  # noqa: N802
        dest = self._peer(dest, "dest")
        self.world.queues[(self.rank, dest)].put(buf.copy())
        self.bytes_sent += buf.nbytes
        self.messages += 1

    def Recv(self, buf, source: int, tag: int = 0) -> None:  # noqa: N802
        source = self._peer(source, "source")
        deadline = time.monotonic() + self.world.timeout
        q = self.world.queues[(source, self.rank)]
        while True:
            try:
                msg = q.get(timeout=0.02)
                break
            except queue.Empty:
                if self.world.failed.is_set():
                    raise RuntimeError(f"rank {self.rank}: another rank failed") from None
                if time.monotonic() > deadline:
                    raise DeadlockError(
                        f"rank {self.rank} waited {self.world.timeout:g} s for a message from "
                        f"rank {source} that never came (is every rank sending before it "
                        "receives, the same number of times?)") from None
        if msg.size != buf.size:
            raise ValueError(f"rank {self.rank}: received {msg.size} elements from rank "
                             f"{source} into a buffer of {buf.size}")
        xp = get_array_module(buf)
        buf[...] = xp.asarray(msg).reshape(buf.shape)

    def Sendrecv(self, sendbuf, dest: int, sendtag: int = 0, recvbuf=None,  # noqa: N802
                 source: int = 0, recvtag: int = 0, status=None) -> None:
        """Send ``sendbuf`` to ``dest`` and receive into ``recvbuf`` from ``source`` at once:
        the ring's step (sends never block here, so the order inside cannot deadlock)."""
        self.Send(sendbuf, dest, sendtag)
        self.Recv(recvbuf, source, recvtag)

    def Barrier(self) -> None:  # noqa: N802
        self.world.barrier.wait(timeout=self.world.timeout)


def run_world(n: int, fn, per_rank_args=None, timeout: float = 10.0) -> list:
    """``[fn(comm_0, *args_0), ..., fn(comm_{n-1}, *args_{n-1})]`` run on n threads at once.

    ``per_rank_args``: a list of n tuples (or of n single values) of arguments, or None.
    ``fn`` returns whatever the caller needs to see, e.g. ``comm.bytes_sent``."""
    if n < 1:
        raise ValueError(f"a world needs at least one rank, got {n}")
    args = [()] * n if per_rank_args is None else [
        a if isinstance(a, tuple) else (a,) for a in per_rank_args]
    if len(args) != n:
        raise ValueError(f"run_world({n}, ...) needs {n} argument tuples, got {len(args)}")
    world = _World(n, timeout)
    results, errors = [None] * n, [None] * n

    def target(r):
        try:
            results[r] = fn(ThreadComm(world, r), *args[r])
        except BaseException as e:  # noqa: BLE001  (re-raised below, in the caller's thread)
            errors[r] = e
            world.failed.set()
            world.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,), daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = next((e for e in errors if e is not None and not _secondary(e)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


def _secondary(e: BaseException) -> bool:
    """An error that only reports another rank's failure."""
    return isinstance(e, threading.BrokenBarrierError) or "another rank failed" in str(e)
