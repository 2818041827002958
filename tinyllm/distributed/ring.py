"""The ring all-reduce, built from point-to-point messages: a reduce-scatter, then an all-gather.

The N ranks stand in a ring; each sends only to its right neighbour (rank + 1) and receives
only from its left (rank - 1), all at the same time (``Sendrecv``). Each rank cuts its array
into N chunks, ``chunks[0..N-1]``.

* **Reduce-scatter** (exercise 18.2), N - 1 steps. At step s rank r sends chunk (r - s) mod N
  and adds the chunk it receives into chunk (r - s - 1) mod N. A chunk travels once round the
  ring collecting one rank's contribution per step, so after N - 1 steps rank r holds the
  complete sum of chunk (r + 1) mod N (and partial sums elsewhere).
* **All-gather** (exercise 18.3), N - 1 steps. Rank r starts with the final chunk ``owned``
  (rank r + 1 with ``owned + 1``); at step s it sends chunk (owned - s) mod N and stores the one
  it receives as chunk (owned - s - 1) mod N. Each final chunk goes round the ring once.

Every rank sends 2 (N - 1) chunks of n / N elements: 2 (N - 1) / N x n in all, nearly 2n
whatever N, and every link carries the same load (Patarasuk & Yuan, 2009; Baidu's ring
all-reduce for deep learning, 2017). ``comm`` is any object with mpi4py's ``Get_rank()``,
``Get_size()`` and ``Sendrecv(sendbuf, dest, recvbuf=..., source=...)``: MPI's ``COMM_WORLD``
or the threads of ``tinyllm.distributed.simulated``.
"""

from __future__ import annotations

from tinyllm.backend import get_array_module

__all__ = ["ring_chunks", "ring_reduce_scatter", "ring_all_gather", "ring_all_reduce",
           "ring_bytes_per_rank"]


def ring_chunks(array, n: int) -> list:
    """``array`` (C-contiguous) viewed flat and cut into ``n`` consecutive chunks whose sizes
    differ by at most one (the first ``size % n`` are one longer). The chunks are views: writing
    into them writes into ``array``."""
    if not array.flags.c_contiguous:
        raise ValueError(f"ring_chunks needs a C-contiguous array, got shape {array.shape}")
    xp = get_array_module(array)
    return xp.array_split(array.reshape(-1), n)


def ring_reduce_scatter(comm, chunks: list) -> int:
    """Sum ``chunks`` over the ranks, in place, in N - 1 steps of the ring. Afterwards chunk
    (rank + 1) mod N holds the sum over every rank; returns that index."""
    r, n = comm.Get_rank(), comm.Get_size()
    if len(chunks) != n:
        raise ValueError(f"ring_reduce_scatter needs one chunk per rank ({n}), got {len(chunks)}")
    # BEGIN SOLUTION
    xp = get_array_module(*chunks)
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        send, recv = (r - s) % n, (r - s - 1) % n
        incoming = xp.empty_like(chunks[recv])
        comm.Sendrecv(chunks[send], dest=right, recvbuf=incoming, source=left)
        chunks[recv] += incoming
    # END SOLUTION
    return (r + 1) % n


def ring_all_gather(comm, chunks: list, owned: int) -> None:
    """Give every rank every final chunk, in place, in N - 1 steps of the ring. On entry rank r
    holds the final ``chunks[owned]``, and rank r + 1 the final ``chunks[owned + 1]`` (mod N), as
    ``ring_reduce_scatter`` leaves them; on return every chunk is final on every rank."""
    n = comm.Get_size()
    if len(chunks) != n:
        raise ValueError(f"ring_all_gather needs one chunk per rank ({n}), got {len(chunks)}")
    # BEGIN SOLUTION
    r = comm.Get_rank()
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        send, recv = (owned - s) % n, (owned - s - 1) % n
        comm.Sendrecv(chunks[send], dest=right, recvbuf=chunks[recv], source=left)
    # END SOLUTION


def ring_all_reduce(comm, array):
    """Sum ``array`` over every rank, in place: reduce-scatter, then all-gather. Returns it."""
    chunks = ring_chunks(array, comm.Get_size())
    owned = ring_reduce_scatter(comm, chunks)
    ring_all_gather(comm, chunks, owned)
    return array


def ring_bytes_per_rank(nbytes: int, n: int) -> float:
    """What each rank sends in a ring all-reduce of ``nbytes``: 2 (n - 1) / n x nbytes."""
    return 2 * (n - 1) / n * nbytes
