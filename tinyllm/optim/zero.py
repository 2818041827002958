"""ZeRO stage 1: each data-parallel rank keeps the optimizer state of its share of the parameters.

Plain data parallelism keeps a full copy of everything on every rank. AdamW's two moments are
twice the parameters (8 bytes per float32 parameter), so ZeRO (Rajbhandari et al., 2020)
stage 1 shards them: lay the P parameters end to end, pad to N c with c = ceil(P / N), and let
rank r own the range [r c, (r + 1) c). Each step then

1. reduce-scatters the gradients: rank r receives the summed gradient of its range only;
2. runs AdamW on that range, with the moments of that range only (1/N of the state);
3. all-gathers the updated range of every rank, so every rank has every parameter again.

The reduce-scatter and the all-gather are the two halves of a ring all-reduce, so a rank moves
(N - 1)/N (G + P) bytes, as many as plain data parallelism's all-reduce of the gradients.

``partition(sizes, world_size)`` (exercise 18.4) gives each rank's range as pieces of
parameters. ``ZeroRedundancyOptimizer(optimizer)`` wraps an ``Adam`` or ``AdamW``: it keeps the
optimizer's parameter groups and hyper-parameters and calls the optimizer's own per-tensor
update (``Adam._update``) on views of the owned slices. AdamW is element-wise, so the result is,
element for element, the unsharded optimizer's. ``state_dict()`` gathers the full state in the
unsharded optimizer's format (a checkpoint does not depend on the number of ranks).
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm import distributed as dist
from tinyllm.backend import get_array_module

__all__ = ["partition", "shard_size", "ZeroRedundancyOptimizer", "optimizer_state_bytes"]


def shard_size(total: int, world_size: int) -> int:
    """c = ceil(total / world_size): the length of each rank's range of the flat parameters."""
    return -(-total // world_size)


def partition(sizes: list, world_size: int) -> list:
    """Each rank's share of the parameters laid end to end (exercise 18.4).

    ``sizes``: the number of elements of each parameter, in order; the flat vector has
    P = sum(sizes) elements and rank r owns its elements [r c, min((r + 1) c, P)), with
    c = ``shard_size(P, world_size)``. Returns a list of ``world_size`` lists of pieces
    ``(i, lo, hi)``: elements lo .. hi - 1 of parameter i (offsets inside the parameter,
    0 <= lo < hi <= sizes[i]), in flat order. Empty parameters and ranges give no pieces."""
    total = sum(sizes)
    c = shard_size(total, world_size)
    out = []
    # BEGIN SOLUTION
    starts, s = [], 0
    for size in sizes:
        starts.append(s)
        s += size
    for r in range(world_size):
        a, b = r * c, (r + 1) * c  # the last range may run past P: no parameter is there
        pieces = []
        for i, (start, size) in enumerate(zip(starts, sizes)):
            lo, hi = max(a, start), min(b, start + size)
            if lo < hi:
                pieces.append((i, lo - start, hi - start))
        out.append(pieces)
    # END SOLUTION
    return out


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of the arrays an optimizer keeps on this rank (its moments): what ZeRO divides by
    N. Works on an ``Optimizer`` and on a ``ZeroRedundancyOptimizer``."""
    state = optimizer.state.values()
    return sum(v.nbytes for s in state for v in s.values() if hasattr(v, "nbytes"))


class _Slice:
    """What ``Adam._update`` needs of a parameter: ``.data``, here a view of part of one."""

    def __init__(self, data):
        self.data = data


class ZeroRedundancyOptimizer:
    """Shard ``optimizer``'s state over the ranks of ``tinyllm.distributed`` (see the module).

    ``param_groups`` are the wrapped optimizer's (set ``lr`` there, as usual); ``state`` maps
    each owned piece's index to its Adam state; ``shard`` is c, the length of every rank's
    range. The wrapped optimizer keeps no state of its own (a loaded one is taken over)."""

    def __init__(self, optimizer):
        if not hasattr(optimizer, "_update"):
            raise TypeError(f"ZeroRedundancyOptimizer shards Adam and AdamW, got "
                            f"{type(optimizer).__name__}")
        self.optimizer, self.param_groups = optimizer, optimizer.param_groups
        self.rank, self.world = dist.rank(), dist.world_size()
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.group_of = [g for g in self.param_groups for _ in g["params"]]
        for p in self.params:
            if not p.data.flags.c_contiguous:
                raise ValueError(f"ZeRO needs C-contiguous parameters, got one of shape "
                                 f"{p.shape} that is not")
        self.sizes = [p.size for p in self.params]
        self.total, self.shard = sum(self.sizes), shard_size(sum(self.sizes), self.world)
        self.pieces = partition(self.sizes, self.world)[self.rank]
        self.state: dict = {}
        self._take_state()

    # ---------------------------------------------------------------------------- the step
    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def _flat(self, name: str):
        """This rank's range of a flat array (c elements): the parameters or the moments."""
        xp = get_array_module(self.params[0].data)
        out = xp.zeros(self.shard, dtype=self.params[0].dtype)
        at = 0
        for j, (i, lo, hi) in enumerate(self.pieces):
            if name == "param":
                out[at:at + hi - lo] = self.params[i].data.reshape(-1)[lo:hi]
            elif j in self.state:
                out[at:at + hi - lo] = self.state[j][name]
            at += hi - lo
        return out

    def step(self, grad_shard=None, has_grad=None) -> None:
        """AdamW on this rank's range, then the all-gather of every rank's updated range.

        ``grad_shard``: this rank's block (c elements) of the flat gradient summed over the
        ranks, as ``DataParallel`` passes it; None makes it here from the parameters' ``.grad``
        by a reduce-scatter of their mean over the ranks. ``has_grad``: which parameters got a
        gradient on some rank (default: those whose ``.grad`` is set here); others are skipped,
        as the unsharded optimizer skips them."""
        if has_grad is None:
            has_grad = [p.grad is not None for p in self.params]
        if grad_shard is None:
            grad_shard = self._reduce_scatter_grads()
        at = 0
        for j, (i, lo, hi) in enumerate(self.pieces):
            if has_grad[i]:
                g = self.group_of[i]
                view = _Slice(self.params[i].data.reshape(-1)[lo:hi])
                self.optimizer._update(view, grad_shard[at:at + hi - lo],
                                       self.state.setdefault(j, {}), g["lr"], *g["betas"],
                                       g["eps"], g["weight_decay"])
            at += hi - lo
        self._scatter_flat(dist.all_gather(self._flat("param")).reshape(-1), "param")

    def _reduce_scatter_grads(self):
        xp = get_array_module(self.params[0].data)
        flat = xp.zeros(self.shard * self.world, dtype=self.params[0].dtype)
        at = 0
        for p in self.params:
            if p.grad is not None:
                flat[at:at + p.size] = p.grad.reshape(-1)
            at += p.size
        return dist.reduce_scatter(flat, op="mean")

    def _scatter_flat(self, flat, name: str, out: dict | None = None) -> None:
        """Copy a full flat array (every rank's range) into the parameters (or into ``out``:
        per-parameter arrays by index)."""
        at = 0
        for i, p in enumerate(self.params):
            part = flat[at:at + p.size].reshape(p.shape)
            if out is None:
                p.data[...] = part
            else:
                out[i] = part.copy()
            at += p.size

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The unsharded optimizer's ``state_dict()`` (every rank must call it: it gathers)."""
        xp = get_array_module(self.params[0].data)
        steps = xp.zeros(len(self.params), dtype="int64")
        for j, (i, _, _) in enumerate(self.pieces):
            if j in self.state:
                steps[i] = self.state[j]["step"]
        steps = backend.to_device(dist.all_gather(steps).max(axis=0), "cpu")
        moments = {}
        for name in ("exp_avg", "exp_avg_sq"):
            moments[name] = {}
            self._scatter_flat(dist.all_gather(self._flat(name)).reshape(-1), name,
                               moments[name])
        sd = self.optimizer.state_dict()
        sd["state"] = {i: {"step": int(steps[i]),
                           "exp_avg": backend.to_device(moments["exp_avg"][i], "cpu"),
                           "exp_avg_sq": backend.to_device(moments["exp_avg_sq"][i], "cpu")}
                       for i in range(len(self.params)) if steps[i] > 0}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load an unsharded ``state_dict()`` (checked by the wrapped optimizer) and keep this
        rank's share."""
        self.optimizer.load_state_dict(state_dict)
        self._take_state()

    def _take_state(self) -> None:
        full, self.state = self.optimizer.state, {}
        for j, (i, lo, hi) in enumerate(self.pieces):
            s = full.get(id(self.params[i]))
            if s:
                self.state[j] = {"step": s["step"],
                                 "exp_avg": s["exp_avg"].reshape(-1)[lo:hi].copy(),
                                 "exp_avg_sq": s["exp_avg_sq"].reshape(-1)[lo:hi].copy()}
        self.optimizer.state = {}
