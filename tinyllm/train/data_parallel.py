"""Data-parallel training and gradient accumulation: several batches' gradients, one update.

    mpiexec -n 2 tinyllm train --preset baby-shakespeare --set batch_size=6   # = 1 x 12
    tinyllm train --preset baby-shakespeare --set grad_accum_steps=4           # 4 x 3 = 12
    mpiexec -n 2 tinyllm train ... --set zero_stage=1                          # AdamW sharded

One step with N processes (ranks), ``batch_size`` b rows per rank and k = ``grad_accum_steps``:

1. every rank draws the same global batch of N b rows from the one seeded batch generator (so
   the generator advances alike everywhere, and a checkpoint's generator is every rank's);
2. rank r keeps rows [r b, (r + 1) b) and cuts them into k micro-batches (``shard_batch``,
   exercise 18.1): data parallelism in space, gradient accumulation in time;
3. micro-batch i's loss is scaled by w_i / W, its share of the global batch's loss terms (the
   tokens or rows its mean runs over, ``loss_weight``), and backpropagated; the gradients add up;
4. one all-reduce (sum) of one flat buffer holding every gradient, the loss and two flags;
5. one clip and one optimizer step, the same on every rank (with ``zero_stage=1``: a
   reduce-scatter instead, AdamW on this rank's share, an all-gather: ``tinyllm.optim.zero``).
   With float16's loss scaler, every part's loss is multiplied by the scale in 3 and the sum
   divided by it in 5, and a sum holding an inf or a NaN skips the update everywhere.

Since sum_i (w_i / W) grad L_i is the gradient of the global batch's mean loss, the update is
the one-process update of the N b-row batch, to float32 rounding. Evaluation draws the same
global batches as one process and averages the ranks' weighted shares. With dropout each rank
draws its masks from its own generator, reseeded from (seed, rank, step) at every step, so the
run resumes exactly (one process's masks cannot be reproduced: they come from one stream).

Rank 0 alone writes the run folder and prints (``is_writer``); every rank resumes from it. A
rank that fails prints its error and stops every rank (``stop_all_on_error``: ``MPI_Abort``),
since the others would wait for it forever in the next collective. The trainer calls this
module in a few marked places; everything else about several processes is here.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
import traceback

import numpy as np

from tinyllm import backend, blas, workers
from tinyllm import distributed as dist
from tinyllm.train.config import ConfigError
from tinyllm.train.threads import backward_on_threads

__all__ = ["DataParallel", "setup", "shard_batch", "loss_weight", "is_writer", "from_writer",
           "on_writer", "stop_all_on_error", "use_local_gpu"]

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------- the batch
def shard_batch(inputs: dict, rank: int, world_size: int, micro_batches: int = 1) -> list[dict]:
    """This rank's micro-batches of a global batch (exercise 18.1).

    ``inputs``: name -> array, every one with the same B rows on axis 0, B divisible by
    world_size x micro_batches. Rank r keeps the consecutive rows [r B/N, (r + 1) B/N) and cuts
    them, in order, into ``micro_batches`` pieces of m = B / (N micro_batches) rows. Returns a
    list of ``micro_batches`` dicts with every name (views, not copies)."""
    rows = {len(v) for v in inputs.values()}
    if len(rows) != 1:
        raise ValueError(f"shard_batch: the inputs have different numbers of rows "
                         f"{ {k: len(v) for k, v in inputs.items()} }")
    (n_rows,) = rows
    if not 0 <= rank < world_size or micro_batches < 1 or n_rows % (world_size * micro_batches):
        raise ValueError(f"shard_batch: {n_rows} rows cannot go to rank {rank} of {world_size} "
                         f"in {micro_batches} equal micro-batches")
    out = []
    # BEGIN SOLUTION
    per_rank = n_rows // world_size
    m = per_rank // micro_batches
    first = rank * per_rank
    for j in range(micro_batches):
        lo = first + j * m
        out.append({k: v[lo:lo + m] for k, v in inputs.items()})
    # END SOLUTION
    return out


def loss_weight(task, inputs: dict) -> int:
    """How many terms the task's loss averages over for ``inputs`` (its mean's denominator):
    the target tokens that are not ignored (-100; padding for seq2seq), else the rows. A task
    may define its own ``loss_weight(inputs)``."""
    own = getattr(task, "loss_weight", None)
    if own is not None:
        return int(own(inputs))
    for key in ("targets", "labels"):
        if key in inputs:
            return int((np.asarray(inputs[key]) != IGNORE_INDEX).sum())
    if "tgt_out" in inputs:
        return int((np.asarray(inputs["tgt_out"]) != task.tokenizer.pad_token_id).sum())
    return len(next(iter(inputs.values())))


# ----------------------------------------------------------------------------------- the step
class DataParallel:
    """The training step of ``cfg`` on this rank (see the module doc): ``forward_backward``
    then, once the trainer has checked the loss, ``update``. ``comm_s`` and ``comm_bytes``
    count the time spent in collectives and the bytes handed to them (per rank)."""

    def __init__(self, cfg, task, optimizer):
        from tinyllm.optim.zero import ZeroRedundancyOptimizer

        self.cfg, self.task = cfg, task
        self.rank, self.world = dist.rank(), dist.world_size()
        self.k, self.threads = cfg.grad_accum_steps, cfg.threads
        inner = getattr(optimizer, "optimizer", optimizer)
        self.params = [p for g in inner.param_groups for p in g["params"]]
        if len({p.dtype for p in self.params}) != 1:
            raise ConfigError("data parallelism packs every gradient into one buffer: the "
                              "parameters must share one dtype")
        self.sizes = [p.size for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.n_grad = int(self.offsets[-1])
        if cfg.zero_stage and not isinstance(optimizer, ZeroRedundancyOptimizer):
            optimizer = ZeroRedundancyOptimizer(optimizer)
        self.opt, self.zero = optimizer, bool(cfg.zero_stage)
        xp = backend.get_array_module(self.params[0].data)
        # gradients (padded to N equal blocks for ZeRO's reduce-scatter), then the extras:
        # the loss, the stop flag, the parameters' gradient counts (and ZeRO's squared norm)
        self.n_pad = (self.opt.shard * self.world) if self.zero else self.n_grad
        self.buffer = xp.zeros(self.n_pad + 2 + len(self.params) + 1, dtype=self.params[0].dtype)
        self.stop, self.shard, self.has_grad, self.norm_sq = False, None, None, 0.0
        self.scaler = None  # float16's loss scaler, when the run has one (RunPrecision.attach)
        self.comm_s, self.comm_bytes, self.steps = 0.0, 0, 0
        self._view = _ShardView(self)

    # ---------------------------------------------------------------------------- batches
    def draw(self, split: str, rng):
        """The global batch (world x batch_size rows), as every rank draws it: the task draws
        ``cfg.batch_size`` rows, so that is raised for the one call (and put back)."""
        cfg, b = self.task.cfg, self.task.cfg.batch_size
        cfg.batch_size = b * self.world
        try:
            return self.task.batch(split, rng)
        finally:
            cfg.batch_size = b

    def _reseed(self, step: int) -> None:
        if self.world > 1:  # each rank its own dropout stream, a function of the step
            seq = np.random.SeedSequence([self.cfg.seed, 18, self.rank, step])
            backend.rng().bit_generator.state = np.random.PCG64(seq).state
            if backend.get_default_device() != "cpu":
                backend.cupy_or_error().random.seed(int(seq.generate_state(1)[0]))

    # ---------------------------------------------------------------------------- the step
    def forward_backward(self, batch_rng, step: int, stop_requested: bool = False):
        """Gradients of this step's global batch, summed over the ranks: ``(loss, tokens)``.
        ``stop_requested``: this rank saw Ctrl-C; ``self.stop`` says afterwards whether any
        rank did (the same answer on every rank, so they all stop after the same step)."""
        inputs, ntok = self.draw("train", batch_rng)
        total = loss_weight(self.task, inputs)
        self._reseed(step)
        self.opt.zero_grad()
        # float16: every part backpropagates its loss times the scale (undone in ``update``)
        scale = 1.0 if self.scaler is None else float(self.scaler.scale)
        parts = []
        for micro in shard_batch(inputs, self.rank, self.world, self.k * self.threads):
            w = loss_weight(self.task, micro)
            if w == 0:  # nothing to average here (every target ignored): no contribution
                continue
            # host rows: the model moves them (as a plain step); the part's share of the mean
            parts.append(functools.partial(_weighted_loss, self.task, micro, w / total * scale))
        with workers.use(self.threads):  # the parts' gradients added on the threads too
            local = sum(backward_on_threads(parts, self.threads)) / scale  # limits BLAS itself
        value = self._reduce(local, stop_requested)
        self.steps += 1
        return (value if total else math.nan), ntok

    def _reduce(self, local_loss: float, stop_requested: bool) -> float:
        if self.world == 1 and not self.zero:  # nothing to add up: the gradients stay put
            self.stop = stop_requested
            self.has_grad = [p.grad is not None for p in self.params]
            return local_loss
        buf, extra = self.buffer, self.n_pad
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            buf[lo:hi] = 0 if p.grad is None else p.grad.reshape(-1)
        extras = [local_loss, float(stop_requested)] + [float(p.grad is not None)
                                                        for p in self.params]
        buf[extra:-1] = backend.as_array(np.array(extras, dtype=buf.dtype),
                                         device=backend.get_device(buf))  # one copy up
        t0 = time.perf_counter()
        if self.zero:
            self.shard = dist.reduce_scatter(buf[:extra])      # this rank's block of the sum
            xp = backend.get_array_module(self.shard)
            buf[-1] = float(xp.vdot(self.shard, self.shard))   # its squared norm, for clipping
            dist.all_reduce(buf[extra:])
            self.comm_bytes += buf.nbytes
        else:
            dist.all_reduce(buf)
            self.comm_bytes += buf.nbytes
        self.comm_s += time.perf_counter() - t0
        head = backend.to_device(buf[extra:], "cpu")
        self.stop = bool(head[1] > 0)
        self.has_grad = [bool(c > 0) for c in head[2:-1]]
        self.norm_sq = float(head[-1])
        if not self.zero:  # every rank now has the full gradient: views into the buffer
            for p, lo, hi, has in zip(self.params, self.offsets[:-1], self.offsets[1:],
                                      self.has_grad):
                p.grad = buf[lo:hi].reshape(p.shape) if has else None
        return float(head[0])

    def update(self, lr: float) -> float:
        """One clip and one optimizer step at ``lr``; returns the gradient norm (0.0 when
        clipping is off), as ``train_step`` does."""
        from tinyllm.optim import clip_grad_norm_
        from tinyllm.train.mixed_precision import unscaled_step

        for group in self.opt.param_groups:
            group["lr"] = lr
        clip = self.cfg.grad_clip
        if not self.zero:
            # with threads, no BLAS worker may be left spinning into the next step's parts
            with blas.limit(1 if self.threads > 1 else None), workers.use(self.threads):
                if self.scaler is not None:  # every rank has the same sums: the same skips
                    return unscaled_step(self.scaler, self.opt, self.params, clip)
                norm = clip_grad_norm_(self.params, clip) if clip > 0 else 0.0
                self.opt.step()
            return norm
        if self.scaler is not None:
            # every rank holds the same summed squared norm: inf or NaN when any value is
            # (or, harmlessly, when squaring a huge finite one overflows: one more skip)
            found_inf = not math.isfinite(self.norm_sq)
            inv = 1.0 / self.scaler.scale
            self.scaler.update(found_inf)
            if found_inf:
                return 0.0  # the step is skipped on every rank; the scale is lowered
            self.shard *= self.shard.dtype.type(inv)
            self.norm_sq *= inv * inv
        norm = math.sqrt(self.norm_sq) if clip > 0 else 0.0
        if clip > 0 and norm > clip:
            self.shard *= clip / (norm + 1e-6)  # clip_grad_norm_'s rule, on the shard
        t0 = time.perf_counter()
        self.opt.step(self.shard, self.has_grad)
        self.comm_s += time.perf_counter() - t0  # mostly the all-gather of the parameters
        self.comm_bytes += self.opt.shard * self.world * self.shard.itemsize
        return norm

    # ---------------------------------------------------------------------------- evaluation
    def estimate_loss(self, iters: int | None = None) -> dict:
        """``trainer.estimate_loss`` on the global batches, each rank computing its rows'
        weighted share; the ranks' results are averaged: one process's figures."""
        from tinyllm.train.trainer import estimate_loss

        if self.world == 1:
            return estimate_loss(self.task, self.cfg, iters)
        out = estimate_loss(self._view, self.cfg, iters)
        keys = sorted(out)
        values = np.array([out[k] for k in keys], dtype=np.float64)
        dist.all_reduce(values, op="mean")
        return {k: float(v) for k, v in zip(keys, values)}

    def describe(self) -> str:
        b, k = self.cfg.batch_size, self.k
        rows = f"{b} rows" + (f" ({k} micro-batches of {b // k})" if k > 1 else "")
        if self.threads > 1:
            rows += f", each in {self.threads} parts at once on threads"
        zero = f"; ZeRO stage 1: AdamW's state in {self.world} shards" if self.zero else ""
        return (f"data parallel: {self.world} process(es) x {rows} = {b * self.world} rows a "
                f"step, gradients in one {self.n_grad * self.buffer.itemsize / 2**20:.1f} MiB "
                f"buffer{zero}")


def _weighted_loss(task, micro: dict, share: float):
    """A part's loss times its share of the global batch's mean (so that the parts' gradients
    add up to the mean's)."""
    return task.loss(micro) * share


class _ShardView:
    """The task as ``estimate_loss`` sees it on one rank: its rows of each global batch, and a
    loss scaled by N w / W, so that the mean over the ranks is the global batch's loss."""

    def __init__(self, dp: DataParallel):
        self.dp, self.model, self.scale = dp, dp.task.model, 1.0

    def batch(self, split: str, rng):
        dp = self.dp
        inputs, ntok = dp.draw(split, rng)
        mine = shard_batch(inputs, dp.rank, dp.world)[0]
        total = loss_weight(dp.task, inputs)
        self.scale = dp.world * loss_weight(dp.task, mine) / total if total else math.nan
        return mine, ntok

    def loss(self, inputs):
        if self.scale == 0:
            from tinyllm.tensor import tensor

            return tensor(0.0)
        return self.dp.task.loss(inputs) * self.scale


# ----------------------------------------------------------------------------------- the trainer's hooks
def _world() -> tuple[int, int]:
    try:
        return dist.init()
    except dist.DistributedError as e:
        raise ConfigError(str(e)) from None


def is_writer() -> bool:
    """Whether this process writes the run folder and prints: rank 0 (or the only process)."""
    return _world()[0] == 0


def from_writer(value):
    """Rank 0's ``value`` on every rank (a run folder that rank 0 chose)."""
    _world()
    return dist.broadcast_object(value)


def on_writer(fn, *args):
    """``fn(*args)`` on rank 0 while the others wait; everyone gets its result."""
    result = fn(*args) if is_writer() else None
    dist.barrier()
    return dist.broadcast_object(result)


def use_local_gpu(device: str) -> None:
    """Under a launcher, a CUDA run puts each rank of a machine on its own GPU (local rank
    modulo the GPUs; with fewer GPUs than ranks, NCCL refuses and MPI carries the data)."""
    if str(device).startswith("cuda") and _world()[1] > 1:
        cp = backend.cupy_or_error()
        cp.cuda.Device(dist.local_rank() % cp.cuda.runtime.getDeviceCount()).use()


def setup(run) -> DataParallel | None:
    """The ``DataParallel`` of a run (None when one process takes plain steps). Checks that a
    resumed run keeps its number of processes, makes every rank start from rank 0's weights,
    and puts the ZeRO optimizer in ``run.opt`` when ``zero_stage`` asks for it."""
    cfg = run.cfg
    _, world = _world()
    if run.resumed_from is not None:
        saved = json.loads((run.out / "state.json").read_text(encoding="utf-8"))
        was = int(saved.get("world_size", 1))
        if was != world:
            raise ConfigError(
                f"{run.out} was trained by {was} process(es) of batch_size {cfg.batch_size} "
                f"({was * cfg.batch_size} rows a step); resuming with {world} would change the "
                f"batch. Resume it with `mpiexec -n {was} tinyllm train --resume {run.out}`"
                + ("" if was > 1 else " or without mpiexec"))
    if world == 1 and cfg.grad_accum_steps == 1 and not cfg.zero_stage and cfg.threads == 1:
        return None
    dp = DataParallel(cfg, run.task, run.opt)
    run.opt = dp.opt
    if world > 1:
        _broadcast_parameters(run.task.model)
    return dp


def _broadcast_parameters(model) -> None:
    params = list(model.parameters())
    xp = backend.get_array_module(params[0].data)
    flat = xp.concatenate([p.data.reshape(-1) for p in params])
    dist.broadcast(flat)
    start = 0
    for p in params:
        p.data[...] = flat[start:start + p.size].reshape(p.shape)
        start += p.size


def stop_all_on_error(fn):
    """Decorate ``train``: under several processes, an error on one rank is printed with the
    rank's number and then stops every rank (``MPI_Abort``, exit status 2 for bad input, 1
    otherwise, 130 for Ctrl-C). Divergence and Ctrl-C reach every rank together (the loss and
    the stop flag are all-reduced), so those propagate normally on every rank."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            from tinyllm.train.trainer import TrainingDiverged, TrainingInterrupted

            try:
                r, n = dist.init()
            except dist.DistributedError:
                r, n = 0, 1
            if n == 1 or isinstance(e, (TrainingDiverged, TrainingInterrupted, SystemExit)):
                raise
            code = _exit_code(e)
            if code == 1:
                traceback.print_exc()
            print(f"tinyllm: error on rank {r} of {n}: {e}\ntinyllm: stopping all {n} "
                  "processes", file=sys.stderr, flush=True)
            dist.abort(code)
            raise  # only reached if MPI_Abort returned

    return run


def _exit_code(e: BaseException) -> int:
    from tinyllm.serialization import SafetensorsError
    from tinyllm.train.checkpoint import CheckpointError

    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, (ConfigError, CheckpointError, SafetensorsError, FileNotFoundError)):
        return 2
    return 1
