"""The data-parallel suite: the baby GPT's training step on 1 and 2 MPI processes of this machine.

Each configuration runs in fresh processes (``mpiexec -n N``, or one plain process), through
the trainer's own ``DataParallel`` step on random tokens: the median step time, the time spent
in collectives, the optimizer state each rank keeps (plain AdamW and ZeRO-1), and the bytes of
one all-reduce of the gradients: the formula 2 (N - 1) / N x gradient bytes of a ring, against
what tinyllm's ring all-reduce (``tinyllm.distributed.ring``) really sends on MPI, and the time of
MPI's ``Allreduce`` beside the ring's on the same buffer.

Every rank gets ``threads // N`` BLAS threads, so the processes never ask for more cores than
the run was given: with 2 cores, 2 processes of one thread each against one of two threads.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np

from tinyllm.bench.harness import Table
from tinyllm.bench.suites import BABY, QUICK, Options

__all__ = ["suite_data_parallel", "dp_child"]


class _RandomLM:
    """The trainer's LM task interface on a stream of random tokens (no corpus needed)."""

    kind = "lm"

    def __init__(self, cfg, c: dict):
        import tinyllm as tl  # noqa: PLC0415
        from tinyllm.models.gpt import GPT, GPTConfig  # noqa: PLC0415

        tl.manual_seed(0)
        self.cfg = cfg
        self.model = GPT(GPTConfig(**{k: v for k, v in c.items() if k != "batch"},
                                   activation="gelu_tanh"))
        self.data = np.random.default_rng(0).integers(0, c["vocab_size"], 100_000)

    def batch(self, split, rng):
        from tinyllm.data import get_batch  # noqa: PLC0415

        x, y = get_batch(self.data, self.cfg.batch_size, self.cfg.block_size, rng)
        return {"idx": x, "targets": y}, x.size

    def loss(self, inputs):
        return self.model(inputs["idx"], inputs["targets"])[1]


class _Counting:
    """An MPI communicator that counts the bytes its ``Sendrecv`` calls send."""

    def __init__(self, comm):
        self.comm, self.sent = comm, 0

    def Get_rank(self):  # noqa: N802
        return self.comm.Get_rank()

    def Get_size(self):  # noqa: N802
        return self.comm.Get_size()

    def Sendrecv(self, sendbuf, dest, recvbuf=None, source=0, **kw):  # noqa: N802
        self.sent += sendbuf.nbytes
        self.comm.Sendrecv(sendbuf, dest=dest, recvbuf=recvbuf, source=source)


def _collectives(buf, rounds: int) -> dict:
    """MPI's Allreduce and tinyllm's ring on ``buf``: median seconds, bytes the ring sent."""
    from mpi4py import MPI  # noqa: PLC0415

    from tinyllm.distributed.ring import ring_all_reduce  # noqa: PLC0415

    comm = MPI.COMM_WORLD
    counting = _Counting(comm)
    times = {"mpi": [], "ring": []}
    for _ in range(rounds):
        for name in times:
            x = buf.copy()
            comm.Barrier()
            t0 = time.perf_counter()
            if name == "mpi":
                comm.Allreduce(MPI.IN_PLACE, x, op=MPI.SUM)
            else:
                ring_all_reduce(counting, x)
            times[name].append(time.perf_counter() - t0)
    return {"mpi_allreduce_s": statistics.median(times["mpi"]),
            "ring_allreduce_s": statistics.median(times["ring"]),
            "ring_bytes_sent": counting.sent // rounds}


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
    except ImportError:
        return os.environ.get("OPENBLAS_NUM_THREADS", "?")
    blas = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return blas[0] if blas else "?"


def dp_child(rows: int, zero: int, rounds: int, quick: bool) -> dict | None:
    """In each process of a world: time ``rounds`` data-parallel steps of ``rows`` rows per
    rank; rank 0 returns the figures (every rank's optimizer bytes), the others None."""
    from tinyllm import distributed as dist  # noqa: PLC0415
    from tinyllm.optim.zero import optimizer_state_bytes  # noqa: PLC0415
    from tinyllm.train.config import TrainConfig  # noqa: PLC0415
    from tinyllm.train.data_parallel import DataParallel  # noqa: PLC0415

    c = QUICK if quick else BABY
    cfg = TrainConfig(batch_size=rows, block_size=c["block_size"], zero_stage=zero,
                      grad_clip=1.0, seed=0)
    task = _RandomLM(cfg, c)
    from tinyllm.optim import AdamW, decay_groups  # noqa: PLC0415

    opt = AdamW(decay_groups(task.model.parameters(), 0.1), lr=1e-3, betas=(0.9, 0.99),
                weight_decay=0.1)
    dp, rng = DataParallel(cfg, task, opt), np.random.default_rng(0)
    steps, comm = [], []
    for i in range(3 + rounds):
        dist.barrier()
        c0, t0 = dp.comm_s, time.perf_counter()
        dp.forward_backward(rng, i)
        dp.update(1e-3)
        if i >= 3:
            steps.append(time.perf_counter() - t0)
            comm.append(dp.comm_s - c0)
    per_rank = dist.all_gather(np.array([optimizer_state_bytes(dp.opt)], dtype=np.int64))
    out = {"world": dist.world_size(), "rows": rows, "zero": zero, "threads": _blas_threads(),
           "step_s": statistics.median(steps), "comm_s": statistics.median(comm),
           "tokens": rows * dist.world_size() * c["block_size"],
           "grad_bytes": dp.n_grad * dp.buffer.itemsize,
           "opt_bytes": [int(b) for b in per_rank.reshape(-1)]}
    if dist.world_size() > 1 and not zero:
        out.update(_collectives(dp.buffer[:dp.n_grad].copy(), max(rounds, 5)))
    return out if dist.rank() == 0 else None


def _run(n: int, rows: int, zero: int, opts: Options, threads: int | None = None) -> dict:
    from tinyllm.bench.isolated import _child  # noqa: PLC0415
    from tinyllm.distributed.launch import run_mpi  # noqa: PLC0415

    rounds = 3 if opts.quick else max(10, opts.rounds)
    code = ("import json; from tinyllm.bench.data_parallel import dp_child; "
            f"r = dp_child({rows}, {zero}, {rounds}, {opts.quick!r}); "
            "print(json.dumps(r)) if r else None")
    threads = threads or max(1, (opts.threads or 1) // n)
    if n == 1:
        return _child(code, threads=threads)
    env = {k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                     "MKL_NUM_THREADS")}
    proc = run_mpi(n, ["-c", code], timeout=900, env=env)
    if proc.returncode:
        raise RuntimeError(f"mpiexec -n {n} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def suite_data_parallel(opts: Options) -> list:
    from tinyllm.distributed.launch import mpi_available  # noqa: PLC0415

    ok, why = mpi_available()
    if not ok:
        t = Table("Data-parallel training step (MPI)", ["result"], [[f"skipped: {why}"]])
        return [t]
    b = (QUICK if opts.quick else BABY)["batch"]
    runs = {"1 process, batch 12": (1, b, 0), "1 process, batch 12, 1 thread": (1, b, 0, 1),
            "2 processes x 6 (same batch)": (2, b // 2, 0),
            "2 processes x 12 (twice the batch)": (2, b, 0),
            "2 processes x 6, ZeRO-1": (2, b // 2, 1)}
    res = {name: _run(*cfg[:3], opts, *cfg[3:]) for name, cfg in runs.items()}
    base = res["1 process, batch 12"]
    t = Table("Data-parallel training step of the baby GPT (MPI, this machine)",
              ["setup", "rows a step", "BLAS threads per process", "median step ms",
               "in collectives ms", "tokens/s", "tokens/s vs 1 process"])
    for name, r in res.items():
        tps = r["tokens"] / r["step_s"]
        t.rows.append([name, r["tokens"] // (QUICK if opts.quick else BABY)["block_size"],
                       r["threads"], f"{r['step_s'] * 1e3:.1f}",
                       f"{r['comm_s'] * 1e3:.2f}", f"{tps:,.0f}",
                       f"{tps / (base['tokens'] / base['step_s']):.2f}x"])
    t.notes += ["each row in fresh processes; the trainer's DataParallel step (draw the global "
                "batch, this rank's rows, backward, one all-reduce of one flat buffer, clip, "
                "AdamW) on random tokens; medians of timed steps after 3 warm-up steps",
                "'in collectives': the all-reduce (ZeRO-1: reduce-scatter, all-reduce of the "
                "scalars and the all-gather of the parameters, with its AdamW share), waiting "
                "for the slower rank included"]
    two = res["2 processes x 6 (same batch)"]
    g = two["grad_bytes"]
    m = Table("Bytes of one gradient all-reduce (2 processes)",
              ["gradient MiB", "ring formula 2(N-1)/N x G, MiB per rank",
               "tinyllm ring, sent per rank MiB", "MPI Allreduce ms", "tinyllm ring ms"])
    m.rows.append([f"{g / 2**20:.2f}", f"{2 * (2 - 1) / 2 * g / 2**20:.2f}",
                   f"{two['ring_bytes_sent'] / 2**20:.2f}",
                   f"{two['mpi_allreduce_s'] * 1e3:.2f}", f"{two['ring_allreduce_s'] * 1e3:.2f}"])
    m.notes.append("the ring's bytes are counted on its Sendrecv calls (reduce-scatter then "
                   "all-gather); MPICH's own algorithm is not visible from Python, only its time")
    z = res["2 processes x 6, ZeRO-1"]
    o = Table("Optimizer state per rank (AdamW's two moments)",
              ["setup", "MiB per rank", "fraction of one process's"])
    full = base["opt_bytes"][0]
    o.rows.append(["1 process, AdamW", f"{full / 2**20:.2f}", "1.00"])
    o.rows.append(["2 processes, plain", f"{two['opt_bytes'][0] / 2**20:.2f}",
                   f"{two['opt_bytes'][0] / full:.2f}"])
    for r, nbytes in enumerate(z["opt_bytes"]):
        o.rows.append([f"2 processes, ZeRO-1, rank {r}", f"{nbytes / 2**20:.2f}",
                       f"{nbytes / full:.2f}"])
    o.notes.append("bytes of the arrays each rank's optimizer keeps "
                   "(tinyllm.optim.zero.optimizer_state_bytes), after the timed steps")
    return [t, m, o]

