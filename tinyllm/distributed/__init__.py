"""Several processes training one model: the world they form, and collectives on backend arrays.

    import tinyllm.distributed as dist
    dist.init()                        # MPI under mpiexec (through mpi4py), else a world of one
    dist.rank(), dist.world_size()     # 0 <= rank < world_size
    dist.all_reduce(grads, op="sum")   # IN PLACE: every rank ends with the sum (also returned)
    dist.broadcast(weights, src=0)     # IN PLACE: every rank ends with rank 0's values
    dist.all_gather(shard)             # a NEW array (world_size, *shard.shape), rank r's at [r]
    dist.reduce_scatter(flat)          # a NEW array: this rank's block of the reduced first axis
    dist.barrier()

Launched as ``mpiexec -n 2 python script.py`` (or ``mpiexec -n 2 tinyllm train ...``), every
process runs the same program; the launcher's environment (``PMI_SIZE`` from MPICH and Intel
MPI, ``OMPI_COMM_WORLD_SIZE`` from Open MPI, ``MV2_COMM_WORLD_SIZE``, ``PMIX_RANK``) tells
``init()`` to start MPI. Without a launcher, or with one process, the world is one process and
mpi4py is never imported: every collective then returns its input (``all_gather`` adds the
axis), so the same code runs alone.

NumPy arrays travel through MPI's buffer interface (no pickling; they must be C-contiguous).
CuPy arrays travel through NCCL (``cupy.cuda.nccl``, GPU to GPU) when every rank has it, and
otherwise through a copy to the host, MPI, and a copy back, which a warning says once.
In a world of several processes an uncaught exception prints its traceback and then stops
every process (``MPI_Abort``): a rank that dies alone would leave the others waiting forever
in their next collective.
"""

from __future__ import annotations

import os
import sys
import warnings

from tinyllm import backend
from tinyllm.backend import get_array_module, np

__all__ = ["init", "rank", "world_size", "local_rank", "is_distributed", "all_reduce",
           "broadcast", "all_gather", "reduce_scatter", "barrier", "broadcast_object", "abort",
           "launcher_world_size", "DistributedError", "OPS"]

OPS = ("sum", "mean", "max", "min")
# the environment each launcher gives its processes: the number of processes it started
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")

_comm = None            # mpi4py's COMM_WORLD when the world has more than one process
_MPI = None             # the mpi4py.MPI module then
_rank, _size, _local = 0, 1, 0
_started = False
_nccl_comm = None       # None: not decided yet; False: host copies; else the NCCL communicator


class DistributedError(RuntimeError):
    """MPI was asked for (a launcher started this process) but cannot be used."""


# ----------------------------------------------------------------------------------- the world
def launcher_world_size() -> int | None:
    """The number of processes an MPI launcher says it started (None: no launcher; 0: a
    launcher that does not say, PMIx under Slurm without SLURM_NTASKS)."""
    for var in _SIZE_VARS:
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                return 0
    if "PMIX_RANK" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "0") or 0)
    return None


def init() -> tuple[int, int]:
    """Join the world (once; later calls return at once): ``(rank, world_size)``.

    Under an MPI launcher with more than one process this imports mpi4py (``pip install
    tinyllm[dist]``) and installs the abort-on-uncaught-exception hook; otherwise the world is
    this process alone. Raises ``DistributedError`` if a launcher is present but mpi4py is not.
    """
    global _comm, _MPI, _rank, _size, _local, _started
    if _started:
        return _rank, _size
    n = launcher_world_size()
    if n is not None and n != 1:
        try:
            from mpi4py import MPI  # noqa: PLC0415  (only under a launcher)
        except ImportError as e:
            raise DistributedError(
                f"this process was started by an MPI launcher for {n or 'several'} processes, "
                "but mpi4py is not installed: pip install 'tinyllm[dist]' (mpi4py and MPICH), "
                "or run without mpiexec") from e
        comm = MPI.COMM_WORLD
        if comm.Get_size() > 1:
            _comm, _MPI = comm, MPI
            _rank, _size = comm.Get_rank(), comm.Get_size()
            node = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the processes on this machine
            _local = node.Get_rank()
            node.Free()
            _install_abort_hook()
    _started = True
    return _rank, _size


def rank() -> int:
    """This process's number, 0 .. world_size() - 1 (rank 0 writes files and prints)."""
    return init()[0]


def world_size() -> int:
    return init()[1]


def local_rank() -> int:
    """This process's number among those on the same machine (which GPU it should use)."""
    init()
    return _local


def is_distributed() -> bool:
    """True when more than one process takes part."""
    return world_size() > 1


def abort(code: int = 1) -> None:
    """Stop every process of the world now (``MPI_Abort``); in a world of one, exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _comm is not None:
        _comm.Abort(code)
    raise SystemExit(code)


def _install_abort_hook() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        print(f"tinyllm.distributed: rank {_rank} of {_size} failed; stopping every process",
              file=sys.stderr)
        abort(1)

    sys.excepthook = hook


# ----------------------------------------------------------------------------------- checks
def _check(array, what: str):
    if not hasattr(array, "dtype") or not hasattr(array, "shape"):
        raise TypeError(f"{what} takes a NumPy or CuPy array, got {type(array).__name__}: "
                        "wrap numbers as np.array([...])")
    if not array.flags.c_contiguous:
        raise ValueError(f"{what}: the array of shape {tuple(array.shape)} is not C-contiguous "
                         "(a transposed or sliced view); pass np.ascontiguousarray(a)")
    return get_array_module(array)


def _check_op(what: str, op: str, array) -> None:
    if op not in OPS:
        raise ValueError(f"{what}: op must be one of {list(OPS)}, got {op!r}")
    if op == "mean" and array.dtype.kind != "f":
        raise TypeError(f"{what}(op='mean') needs a float array, got {array.dtype}")


def _mpi_op(op: str):
    return {"sum": _MPI.SUM, "mean": _MPI.SUM, "max": _MPI.MAX, "min": _MPI.MIN}[op]


def _nccl(array):
    """``(the nccl module, its communicator)`` when NCCL carries ``array`` (a CuPy array), else
    None: go through the host. Decided once, by all ranks together, at the first collective on
    a CuPy array: NCCL only if every rank can use it."""
    global _nccl_comm
    if get_array_module(array) is np:
        return None
    from tinyllm.distributed import nccl  # noqa: PLC0415

    if _nccl_comm is None:
        comm, why = nccl.communicator(_comm, _rank, _size)
        _nccl_comm = comm if comm is not None else False
        if comm is None:
            warnings.warn(f"tinyllm.distributed: NCCL is not usable ({why}); collectives on "
                          "CuPy arrays copy them to the host and use MPI", stacklevel=3)
    return (nccl, _nccl_comm) if _nccl_comm else None


def _in_place_via_host(array, mpi_call):
    """``mpi_call(host_array)`` (in place); a device array goes through a host copy and back."""
    if get_array_module(array) is np:
        mpi_call(array)
        return array
    host = np.ascontiguousarray(backend.to_device(array, "cpu"))
    mpi_call(host)
    array[...] = backend.to_device(host, "cuda")
    return array


def _new_via_host(array, shape, mpi_call):
    """``mpi_call(host send, host receive)`` into a new array of ``shape`` on ``array``'s device."""
    out = np.empty(shape, dtype=array.dtype)
    mpi_call(np.ascontiguousarray(backend.to_device(array, "cpu")), out)
    return out if get_array_module(array) is np else backend.to_device(out, "cuda")


# ----------------------------------------------------------------------------------- collectives
def all_reduce(array, op: str = "sum"):
    """Reduce ``array`` element-wise over every rank, **in place**: afterwards each rank's
    ``array`` holds the sum (``"mean"``: the sum / world_size, floats only; ``"max"``,
    ``"min"``). Returns ``array``. Every rank must call it with the same shape and dtype."""
    xp = _check(array, "all_reduce")
    _check_op("all_reduce", op, array)
    if world_size() == 1:
        return array
    if (device := _nccl(array)) is not None:
        device[0].all_reduce(device[1], array, op)
    else:
        _in_place_via_host(array, lambda a: _comm.Allreduce(_MPI.IN_PLACE, a, op=_mpi_op(op)))
    if op == "mean":
        array /= xp.asarray(_size, dtype=array.dtype)
    return array


def broadcast(array, src: int = 0):
    """Copy rank ``src``'s ``array`` into every rank's ``array``, **in place**; returns it."""
    _check(array, "broadcast")
    if not 0 <= src < world_size():
        raise ValueError(f"broadcast: src must be a rank in 0..{world_size() - 1}, got {src}")
    if world_size() == 1:
        return array
    if (device := _nccl(array)) is not None:
        device[0].broadcast(device[1], array, src)
        return array
    return _in_place_via_host(array, lambda a: _comm.Bcast(a, root=src))


def all_gather(array):
    """Every rank's ``array`` stacked: a **new** array of shape (world_size, *array.shape) whose
    row ``r`` is rank r's. Every rank passes the same shape and dtype."""
    xp = _check(array, "all_gather")
    shape = (world_size(),) + tuple(array.shape)
    if world_size() == 1:
        return array.copy().reshape(shape)
    if (device := _nccl(array)) is not None:
        out = xp.empty(shape, dtype=array.dtype)
        device[0].all_gather(device[1], array, out)
        return out
    return _new_via_host(array, shape, _comm.Allgather)


def reduce_scatter(array, op: str = "sum"):
    """Reduce ``array`` over every rank and keep only this rank's block: the first axis (length
    world_size * k) is cut into world_size blocks of k; returns a **new** array of shape
    (k, *rest), block ``rank()`` of the reduction. Half an all-reduce: the ring's first phase."""
    xp = _check(array, "reduce_scatter")
    _check_op("reduce_scatter", op, array)
    n = world_size()
    if array.ndim == 0 or array.shape[0] % n:
        raise ValueError(f"reduce_scatter: the first axis of shape {tuple(array.shape)} must "
                         f"divide into {n} equal blocks (pad it)")
    if n == 1:
        return array.copy()
    shape = (array.shape[0] // n,) + tuple(array.shape[1:])
    if (device := _nccl(array)) is not None:
        out = xp.empty(shape, dtype=array.dtype)
        device[0].reduce_scatter(device[1], array, out, op)
    else:
        out = _new_via_host(array, shape, lambda a, b: _comm.Reduce_scatter_block(
            a, b, op=_mpi_op(op)))
    if op == "mean":
        out /= xp.asarray(n, dtype=out.dtype)
    return out


def barrier() -> None:
    """Wait until every rank has arrived here."""
    if world_size() > 1:
        _comm.Barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s Python object (pickled), on every rank: small things only (a path)."""
    if world_size() == 1:
        return obj
    return _comm.bcast(obj, root=src)
