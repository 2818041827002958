"""The benchmark suites that need fresh processes: peak memory, each implementation alone, and
glibc's malloc settings (all three depend on process-wide state: the heap, OpenMP, mallopt).

Each ``suite_*`` starts children that call a ``*_child`` function here and print JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from tinyllm.backend import tune_malloc
from tinyllm.bench.harness import Table, interleave, peak_rss_kib, reset_peak_rss, rss_kib
from tinyllm.bench.suites import (
    BABY,
    QUICK,
    Options,
    have_dezero,
    have_torch,
    make_dezero_gpt,
    make_gpt,
    make_numpy_gpt,
    make_torch_gpt,
)


def _gpt_step_for(impl: str, quick: bool, activation: str = "gelu_tanh", threads: int = 1):
    tune_malloc()  # a fresh child process: as the parent bench and the trainer do
    c = QUICK if quick else BABY
    cfg, _, state, batch, tl_step = make_gpt(c, activation=activation,
                                             threads=threads if impl == "tinyllm" else 1)
    if impl == "tinyllm":
        return tl_step
    return {"numpy by hand": make_numpy_gpt, "pytorch eager": make_torch_gpt,
            "dezero": make_dezero_gpt}[impl](cfg, state, batch)


# ---------------------------------------------------------------------------- memory
def memory_child(impl: str, quick: bool) -> dict:
    """In a fresh process: cold first-step RSS growth, steady-step tracemalloc peak and RSS."""
    step = _gpt_step_for(impl, quick)
    rss0 = rss_kib()
    ok = reset_peak_rss()
    step()
    cold = (peak_rss_kib() - rss0) if ok and rss0 else None
    step()
    rss1 = rss_kib()
    reset_peak_rss()
    step()
    steady = (peak_rss_kib() - rss1) if ok and rss1 else None
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"cold_kib": cold, "steady_kib": steady, "traced_peak": peak, "rss_kib": rss_kib()}


def _child(code: str, env=None, timeout=600, threads=None, unset=()) -> dict:
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    if threads:  # the parent's thread limit, for the child's BLAS and OpenMP
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"benchmark subprocess failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def suite_memory(opts: Options) -> list:
    impls = (["tinyllm", "numpy by hand"] + (["pytorch eager"] if have_torch() else [])
             + (["dezero"] if have_dezero() else []))
    t = Table("Peak memory of one GPT training step (fresh process each)",
              ["implementation", "tracemalloc peak MiB", "ratio to numpy", "cold step RSS +MiB",
               "steady step RSS +MiB", "process RSS MiB"])
    res = {}
    for impl in impls:
        code = ("import json; from tinyllm.bench.isolated import memory_child; "
                f"print(json.dumps(memory_child({impl!r}, {opts.quick!r})))")
        res[impl] = _child(code, threads=opts.threads)
    base = res["numpy by hand"]["traced_peak"]
    mib = lambda k: "n/a" if k is None else f"{k / 1024:.1f}"
    for impl, r in res.items():
        traced = r["traced_peak"] if impl != "pytorch eager" else None
        t.rows.append([impl, mib(traced and traced / 1024),
                       f"{traced / base:.2f}x" if traced else "n/a",
                       mib(r["cold_kib"]), mib(r["steady_kib"]), mib(r["rss_kib"])])
    t.notes += ["tracemalloc peak: NumPy reports its array allocations to tracemalloc, so this "
                "is the most the step allocated beyond what existed before it (steady state, "
                "after two steps); PyTorch's allocator is invisible to tracemalloc",
                "RSS from /proc/self/status (VmHWM after resetting it via /proc/self/clear_refs)"
                "; cold = the first step (includes the optimizer state), steady = the third; "
                "glibc keeps freed memory, so steady RSS growth is near zero when the heap is "
                "reused"]
    return [t]


def solo_child(impl: str, rounds: int, quick: bool, activation: str = "gelu_tanh",
               threads: int = 1) -> dict:
    """In a fresh process with only ``impl`` loaded: the median of ``rounds`` steps."""
    step = _gpt_step_for(impl, quick, activation, threads)
    for _ in range(3):
        step()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"median": float(np.median(times)), "min": min(times), "max": max(times)}


# GPT's two GELU forms: GPTConfig's default and the presets' (exact, erf), and GPT-2's tanh
# form, the only one the hand-written NumPy step implements
SOLO_GELUS = {"gelu_tanh": "tanh", "gelu": "exact (erf)"}


def suite_gpt_solo(opts: Options) -> list:
    """The baby step with each implementation alone in its own process, in its own best
    threading (PyTorch's OpenMP threads may spin, as they do by default): the in-process
    interleaved table must make PyTorch wait passively so that NumPy's threads can run.
    Both GELU forms; the ratios are to PyTorch with the same form. tinyllm runs twice: with
    the batch in as many parts as there are threads (``--set threads=N`` in the trainer), and
    as one part (each matmul on every BLAS thread, everything else on one core)."""
    from tinyllm.train.threads import usable_cores  # noqa: PLC0415

    n = opts.threads or usable_cores()
    ours = [f"tinyllm, threads={n}", "tinyllm, threads=1"] if n > 1 else ["tinyllm, threads=1"]
    impls = (ours + ["numpy by hand"] + (["pytorch eager"] if have_torch() else [])
             + (["dezero"] if have_dezero() else []))
    cases = [(i, a) for a in SOLO_GELUS for i in impls
             if a == "gelu_tanh" or i.startswith("tinyllm") or i == "pytorch eager"]
    reps = 1 if opts.quick else 3
    rounds = 3 if opts.quick else max(10, opts.rounds)
    runs = {c: [] for c in cases}
    for _ in range(reps):  # alternate the processes so that drift hits all alike
        for impl, act in cases:
            name, threads = (("tinyllm", int(impl.split("=")[1])) if impl.startswith("tinyllm")
                             else (impl, 1))
            code = ("import json; from tinyllm.bench.isolated import solo_child; "
                    f"print(json.dumps(solo_child({name!r}, {rounds}, {opts.quick!r}, {act!r}, "
                    f"{threads})))")
            runs[impl, act].append(_child(code, threads=opts.threads, unset=("OMP_WAIT_POLICY",)))
    med = {c: float(np.median([r["median"] for r in rs])) for c, rs in runs.items()}
    base_impl = "pytorch eager" if have_torch() else "numpy by hand"
    t = Table("GPT training step, each implementation alone in its own process (cpu)",
              ["implementation", "GELU", "median ms", "min ms", "max ms",
               f"ratio to {base_impl}"])
    for (impl, act), rs in runs.items():
        base = med.get((base_impl, act))
        t.rows.append([impl, SOLO_GELUS[act], f"{med[impl, act] * 1e3:.1f}",
                       f"{min(r['min'] for r in rs) * 1e3:.1f}",
                       f"{max(r['max'] for r in rs) * 1e3:.1f}",
                       f"{med[impl, act] / base:.2f}x" if base else "n/a"])
    t.notes.append(f"{reps} processes per implementation and GELU, alternating, {rounds} timed "
                   "steps each after 3 warm-up steps; median of the processes' medians; "
                   "OMP_WAIT_POLICY left at the default in every child; clipping at 1.0")
    t.notes.append(f"tinyllm, threads={n}: the batch's {n} parts forward and backward at once "
                   "on threads, each matmul on one BLAS thread (tinyllm.train.threads)")
    if ("dezero", "gelu_tanh") in med:
        t.notes.append("DeZero's median / tinyllm's (threads=1): "
                       f"{med['dezero', 'gelu_tanh'] / med['tinyllm, threads=1', 'gelu_tanh']:.2f}x")
    return [t]


# ---------------------------------------------------------------------------- malloc
def malloc_child(rounds: int, quick: bool) -> dict:
    import resource  # noqa: PLC0415

    tune_malloc()
    c = QUICK if quick else BABY
    cfg, _, state, batch, tl_step = make_gpt(c)
    fns = {"tinyllm": tl_step, "numpy by hand": make_numpy_gpt(cfg, state, batch)}
    faults = {}
    for name, f in fns.items():
        f()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f()
        faults[name] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    stats = interleave(fns, rounds, warmup=2)
    return {n: {"median": s.median, "faults": faults[n]} for n, s in stats.items()}


def suite_malloc(opts: Options) -> list:
    reps = 1 if opts.quick else 3
    rounds = 3 if opts.quick else max(5, opts.rounds // 3)
    runs = {"1": [], "0": []}
    for _ in range(reps):  # alternate the settings so that drift hits both
        for flag in ("1", "0"):
            code = ("import json; from tinyllm.bench.isolated import malloc_child; "
                    f"print(json.dumps(malloc_child({rounds}, {opts.quick!r})))")
            runs[flag].append(_child(code, env={"TINYLLM_MALLOPT": flag}, threads=opts.threads))
    t = Table("glibc malloc tuning (backend.tune_malloc(), called by the trainer, the CLI and the "
              "bench; TINYLLM_MALLOPT=0 turns it off)",
              ["implementation", "mallopt on ms", "mallopt off ms", "off / on",
               "page faults/step on", "off"])
    for impl in runs["1"][0]:
        on = float(np.median([r[impl]["median"] for r in runs["1"]]))
        off = float(np.median([r[impl]["median"] for r in runs["0"]]))
        t.rows.append([impl, f"{on * 1e3:.1f}", f"{off * 1e3:.1f}", f"{off / on:.2f}x",
                       runs["1"][0][impl]["faults"], runs["0"][0][impl]["faults"]])
    t.notes.append(f"{reps} subprocess(es) per setting, alternating, {rounds} interleaved rounds "
                   "each; the setting applies to the whole process, so the NumPy reference "
                   "benefits as well")
    return [t]


def registry() -> tuple[dict, set]:
    """Every suite by name, and the names that only run on the CPU."""
    from tinyllm.bench import suites as S  # noqa: PLC0415
    from tinyllm.bench.data_parallel import suite_data_parallel  # noqa: PLC0415
    from tinyllm.bench.fast_paths import suite_fast_paths  # noqa: PLC0415
    from tinyllm.bench.throughput import suite_bpe, suite_matmul  # noqa: PLC0415

    suites = {"gpt": S.suite_gpt, "gpt-solo": suite_gpt_solo, "mlp": S.suite_mlp,
              "generate": S.suite_generate, "bpe": suite_bpe, "memory": suite_memory,
              "matmul": suite_matmul, "malloc": suite_malloc, "fast-paths": suite_fast_paths,
              "data-parallel": suite_data_parallel}
    return suites, {"bpe", "memory", "malloc", "gpt-solo", "fast-paths", "data-parallel"}
