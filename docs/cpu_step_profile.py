"""Where the baby training step's time goes on the CPU (issue #22): the figures behind the
analysis in docs/benchmarks.md, "The baby step against PyTorch on the CPU".

    python docs/cpu_step_profile.py gemm       # the step's matmuls: in the step, replayed, hot
    python docs/cpu_step_profile.py bandwidth  # one elementwise pass by array size
    python docs/cpu_step_profile.py parts      # threads=2: each part's wall and CPU time
    python docs/cpu_step_profile.py ops        # tinyllm's Functions, time per step (one part)
    python docs/cpu_step_profile.py torch      # PyTorch's own profile of its step
    python docs/cpu_step_profile.py floor      # the step with GELU, LayerNorm, softmax ~free

Timings, not tests: run them on a quiet machine and compare figures from one run only. Every
mode builds the bench's baby GPT (``tinyllm.bench.suites.make_gpt``, exact GELU).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import time

import numpy as np

from tinyllm import blas
from tinyllm.backend import tune_malloc
from tinyllm.bench import suites
from tinyllm.bench.harness import interleave

_HERE = os.path.dirname(os.path.abspath(__file__))


def _median_ms(fn, n=30, warmup=3) -> float:
    """The bench harness's timing of ``fn`` alone: the median of ``n`` calls, in ms."""
    return interleave({"fn": fn}, n, warmup)["fn"].median * 1e3


def gemm(args) -> None:
    """The matmuls of one part (batch 6, one BLAS thread, as each thread of threads=2 runs them):
    timed inside the step, replayed alone on copies of the same operands (cold, fresh outputs
    kept alive as the step keeps them), and each repeated on hot operands."""
    import tinyllm.functional as F  # noqa: PLC0415

    _, _, _, _, step = suites.make_gpt(dict(suites.BABY, batch=6), activation="gelu")
    fwd, bwd = F.Linear.forward, F.Linear.backward
    spent, log, record = collections.Counter(), [], [False]

    def forward(self, x, w, b=None):
        t = time.perf_counter()
        y = fwd(self, x, w, b)
        spent["forward"] += time.perf_counter() - t
        if record[0]:
            log.append(("f", x.copy(), w.copy(), None if b is None else b.copy()))
        return y

    def backward(self, gy):
        t = time.perf_counter()
        grads = bwd(self, gy)
        spent["backward"] += time.perf_counter() - t
        if record[0]:
            log.append(("b", gy.copy(), self.x.copy(), self.w.copy()))
        return grads

    F.Linear.forward, F.Linear.backward = forward, backward
    for _ in range(3):
        step()
    spent.clear()
    for _ in range(args.steps):
        step()
    record[0] = True
    step()
    F.Linear.forward, F.Linear.backward = fwd, bwd

    def replay(hot: bool):
        """cold: each once, its outputs kept (fresh memory, as in the step); hot: the third of
        three runs on the same operands, outputs dropped (their memory reused, in cache)."""
        out, kept = collections.Counter(), []
        for kind, a, b, c in log:
            for _ in range(3 if hot else 1):
                t = time.perf_counter()
                if kind == "f":
                    y = a.reshape(-1, a.shape[-1]) @ b.T
                    if c is not None:
                        y += c
                    results = [y]
                else:
                    g2 = a.reshape(-1, c.shape[0])
                    results = [g2 @ c, g2.T @ b.reshape(-1, b.shape[-1]), g2.sum(axis=0)]
                dt = time.perf_counter() - t
                if not hot:
                    kept += results
                del results
            out["forward" if kind == "f" else "backward"] += dt
        return out

    flops = sum(2 * a.size * (b.shape[0] if k == "f" else c.shape[1]) * (1 if k == "f" else 2)
                for k, a, b, c in log)
    print(f"the matmuls of one part, batch 6, one BLAS thread ({flops / 1e9:.2f} GFLOP):")
    runs = {"in the step": {k: v / args.steps for k, v in spent.items()},
            "replayed alone, cold": replay(False), "each on hot operands": replay(True)}
    for name, r in runs.items():
        total = r["forward"] + r["backward"]
        print(f"  {name:22s} forward {r['forward'] * 1e3:6.2f} ms, backward "
              f"{r['backward'] * 1e3:6.2f} ms: {flops / total / 1e9:5.1f} GFLOP/s")


def bandwidth(args) -> None:
    """One float32 multiply pass (read and write) by array size: how fast the caches are."""
    for mb in (0.5, 2, 8, 32):
        a = np.ones(int(mb * 2**20 / 4), np.float32)
        b = np.empty_like(a)
        ms = _median_ms(lambda a=a, b=b: np.multiply(a, 1.5, out=b), n=max(10, int(100 / mb)))
        print(f"  {mb:5.1f} MB: {2 * a.nbytes / ms / 1e6:5.1f} GB/s")


def parts(args) -> None:
    """threads=2: each part's wall time and the CPU time of its thread (the difference is the
    time it waited for the GIL), and the step's."""
    import tinyllm.train.threads as threads  # noqa: PLC0415

    seen, run = [], threads._run_part

    def timed(*a):
        wall, cpu = time.perf_counter(), time.thread_time()
        value = run(*a)
        seen.append((time.perf_counter() - wall, time.thread_time() - cpu))
        return value

    threads._run_part = timed
    _, _, _, _, step = suites.make_gpt(suites.BABY, activation="gelu", threads=2)
    ms = _median_ms(step, n=args.steps)
    wall, cpu = np.median(np.array(seen[-2 * args.steps:]), axis=0) * 1e3
    print(f"  step {ms:.1f} ms; a part: wall {wall:.1f} ms, its thread's CPU {cpu:.1f} ms")


def ops(args) -> None:
    """tinyllm's Functions' forward and backward, ms per step, one part alone on one core
    (batch 6, one BLAS thread): the per-thread work of threads=2."""
    from tinyllm import autograd  # noqa: PLC0415

    _, _, _, _, step = suites.make_gpt(dict(suites.BABY, batch=6), activation="gelu")
    spent = collections.Counter()

    def wrap(cls, name):
        f = cls.__dict__[name]

        def timed(self, *a):
            t = time.perf_counter()
            r = f(self, *a)
            spent[f"{cls.__name__}.{name}"] += time.perf_counter() - t
            return r
        setattr(cls, name, timed)

    stack = list(autograd.Function.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        for name in ("forward", "backward", "fast_forward", "fast_backward"):
            if cls.__dict__.get(name) is not None:
                wrap(cls, name)
    ms = _median_ms(step, n=args.steps)
    spent.clear()
    for _ in range(args.steps):
        step()
    print(f"  step {ms:.1f} ms (median)")
    for name, s in spent.most_common(14):
        print(f"  {name:42s} {s / args.steps * 1e3:6.2f} ms")


def torch_profile(args) -> None:
    """PyTorch's step (2 intra-op threads) under its own profiler: its kernels' self times."""
    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    torch.set_num_threads(2)
    cfg, _, state, batch, _ = suites.make_gpt(suites.BABY, activation="gelu")
    step = suites.make_torch_gpt(cfg, state, batch)
    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


class _OnePass:
    """GELU, LayerNorm and attention's softmax each cut down to one pass (a copy): what is left
    is what any NumPy step with OpenBLAS's matmuls has to do however its elementwise kernels
    are written. The scores skip the causal bias too, so that without the softmax they stay
    finite. Switched on and off between steps; the values are nonsense, the work is not."""

    def __init__(self):
        from tinyllm import activations, attention, functional  # noqa: PLC0415

        A = attention.ScaledDotProductAttention

        def gelu_f(fn, x):
            fn.x = x
            return x.copy()

        def ln_f(fn, x, w, b):
            fn.w = w
            return x.copy()

        def ln_b(fn, gy):
            c = gy.shape[-1]
            return gy.copy(), np.zeros(c, gy.dtype), np.zeros(c, gy.dtype)

        def attn_f(fn, q, k, v):
            s = q @ k.swapaxes(-1, -2)
            s *= q.dtype.type(fn.scale)
            return fn._weigh(np, s, q, k, v)

        def attn_b(fn, gy):
            ds = gy @ fn.v.swapaxes(-1, -2)
            return ds @ fn.k, ds.swapaxes(-1, -2) @ fn.q, fn.p.swapaxes(-1, -2) @ gy

        self.swaps = [(activations.GELU, gelu_f, lambda fn, gy: (gy.copy(),)),
                      (functional.LayerNorm, ln_f, ln_b), (A, attn_f, attn_b)]
        self.saved = [(c, c.fast_forward, c.fast_backward) for c, _, _ in self.swaps]

    def __call__(self, on: bool):
        for cls, f, b in (self.swaps if on else self.saved):
            cls.fast_forward, cls.fast_backward = f, b


def floor_child(gelu: str, rounds: int) -> dict:
    """In a fresh process: threads=2 steps, the real one and the one-pass one interleaved."""
    tune_malloc()
    suites.LR = 0.0  # every step sees the same weights, so the cut-down step stays finite
    _, _, _, _, step = suites.make_gpt(suites.BABY, activation=gelu, threads=2)
    one_pass = _OnePass()

    def cut():
        one_pass(True)
        try:
            loss = step()
        finally:
            one_pass(False)
        if not np.isfinite(loss):
            raise FloatingPointError(f"the one-pass step's loss is {loss}")

    stats = interleave({"real": step, "one pass": cut}, rounds, warmup=3)
    return {k: v.median for k, v in stats.items()}


def floor(args) -> None:
    """The threaded step (threads=2) against the same step with GELU, LayerNorm and the softmax
    at one pass each, interleaved in one process; PyTorch's step (2 threads) in a process of
    its own, alternating with it (the two cannot share a process: its OpenMP threads spin).
    If the cut-down step is not faster than PyTorch's, no rewrite of those kernels in NumPy can
    make tinyllm's faster."""
    from tinyllm.bench.isolated import _child  # noqa: PLC0415

    for gelu in ("gelu_tanh", "gelu"):
        runs = []
        for _ in range(args.reps):  # alternate the processes so that drift hits both
            code = (f"import json, sys; sys.path.insert(0, {_HERE!r}); import cpu_step_profile as p; "
                    f"print(json.dumps(p.floor_child({gelu!r}, {args.steps})))")
            ours = _child(code, threads=2)
            code = ("import json; from tinyllm.bench.isolated import solo_child; print(json."
                    f"dumps(solo_child('pytorch eager', {args.steps}, False, {gelu!r})))")
            runs.append((ours["real"], ours["one pass"],
                         _child(code, threads=2, unset=("OMP_WAIT_POLICY",))["median"]))
            print(f"  {gelu:9s} threads=2 {runs[-1][0] * 1e3:5.1f} ms, one pass "
                  f"{runs[-1][1] * 1e3:5.1f} ms, PyTorch {runs[-1][2] * 1e3:5.1f} ms", flush=True)
        real, cut, torch = np.median(np.array(runs), axis=0)
        print(f"  {gelu}: one pass / real {cut / real:.3f}x, real / PyTorch {real / torch:.2f}x, "
              f"one pass / PyTorch {cut / torch:.2f}x (medians of {args.reps} processes)")


MODES = {"gemm": gemm, "bandwidth": bandwidth, "parts": parts, "ops": ops, "torch": torch_profile,
         "floor": floor}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3, help="floor: processes per form")
    args = ap.parse_args(argv)
    tune_malloc()
    one_core = args.mode in ("gemm", "ops")  # one part's work, as a thread of threads=2 runs it
    with blas.limit(1) if one_core else contextlib.nullcontext():
        MODES[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
