"""NCCL on CuPy arrays (``cupy.cuda.nccl``): GPU-to-GPU collectives for ``tinyllm.distributed``.

One communicator per process, on the process's current GPU, made once: rank 0 draws NCCL's
unique id, MPI broadcasts it, every rank joins with it. Calls are queued on CuPy's current
stream, so the CuPy work after them on that stream sees their result; they work in place when
the send and receive buffers are the same memory.

Not run in tinyllm's CI (no GPU there): kept small on purpose, every call one NCCL function.
"""

from __future__ import annotations

_OPS = {"sum": "NCCL_SUM", "mean": "NCCL_SUM", "max": "NCCL_MAX", "min": "NCCL_MIN"}
_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
           "int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32",
           "int64": "NCCL_INT64"}


def communicator(mpi_comm, rank: int, size: int):
    """``(NcclCommunicator, None)``, or ``(None, why)`` when some rank cannot use NCCL. Every
    rank must call it at the same time (it agrees through MPI, twice)."""
    why = None
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        nccl, why = None, f"cupy.cuda.nccl cannot be imported: {e}"
    if not _everyone(mpi_comm, nccl is not None):
        return None, why or "another rank has no NCCL"
    uid = nccl.get_unique_id() if rank == 0 else None
    uid = mpi_comm.bcast(uid, root=0)
    comm = None
    try:
        comm = nccl.NcclCommunicator(size, uid, rank)
    except Exception as e:  # noqa: BLE001  (e.g. two ranks on one GPU: "duplicate GPU")
        why = f"NcclCommunicator failed: {e}"
    if not _everyone(mpi_comm, comm is not None):
        if comm is not None:
            comm.destroy()
        return None, why or "another rank could not create its NCCL communicator"
    return comm, None


def _everyone(mpi_comm, ok: bool) -> bool:
    from mpi4py import MPI

    return bool(mpi_comm.allreduce(int(ok), op=MPI.MIN))


def _args(array):
    import cupy
    from cupy.cuda import nccl

    name = array.dtype.name
    if name not in _DTYPES:
        raise TypeError(f"NCCL cannot reduce {name} arrays; use one of {sorted(_DTYPES)}")
    return getattr(nccl, _DTYPES[name]), cupy.cuda.get_current_stream().ptr


def _op(op: str):
    from cupy.cuda import nccl

    return getattr(nccl, _OPS[op])


def all_reduce(comm, array, op: str) -> None:
    dtype, stream = _args(array)
    comm.allReduce(array.data.ptr, array.data.ptr, array.size, dtype, _op(op), stream)


def broadcast(comm, array, root: int) -> None:
    dtype, stream = _args(array)
    comm.bcast(array.data.ptr, array.size, dtype, root, stream)


def all_gather(comm, array, out) -> None:
    dtype, stream = _args(array)
    comm.allGather(array.data.ptr, out.data.ptr, array.size, dtype, stream)


def reduce_scatter(comm, array, out, op: str) -> None:
    dtype, stream = _args(array)
    comm.reduceScatter(array.data.ptr, out.data.ptr, out.size, dtype, _op(op), stream)
