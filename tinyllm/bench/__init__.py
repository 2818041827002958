"""``tinyllm bench`` / ``python -m tinyllm.bench``: the performance benchmark suite.

    python -m tinyllm.bench                         # every CPU suite, writes docs/benchmarks.md
    python -m tinyllm.bench --suite gpt,mlp --rounds 50 --threads 2 --no-write
    python -m tinyllm.bench --quick --out /tmp/bench.md   # tiny sizes, a few seconds

Each suite times its implementations interleaved (one call of each per round, warm-up rounds
discarded) and reports medians, min and max, and ratios to the baseline of the same run
(PyTorch when installed, else the hand-written NumPy reference). Speed lives here, never in
the tests.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from tinyllm import atomic

__all__ = ["main"]

DEFAULT_SUITES = "gpt,gpt-solo,mlp,generate,bpe,memory,matmul,malloc"


def _parser() -> argparse.ArgumentParser:
    from tinyllm.cli import ArgumentParser, non_negative_int, positive_int  # one-line errors

    p = ArgumentParser(prog="tinyllm bench", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=DEFAULT_SUITES,
                   help=f"comma-separated suites (default: {DEFAULT_SUITES})")
    p.add_argument("--rounds", type=positive_int, default=None,
                   help="timed rounds per suite (default 30; --quick 3)")
    p.add_argument("--warmup", type=non_negative_int, default=None,
                   help="discarded rounds (default 3)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="BLAS and PyTorch threads (default: the usable cores)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: tinyllm on CuPy against PyTorch CUDA")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few rounds (tests)")
    p.add_argument("--out", default=None, help="markdown file (default docs/benchmarks.md)")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def _default_out() -> Path:
    return Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def _machine_md(info: dict, threads: int, command: str) -> str:
    blas = "; ".join(
        ", ".join(f"{k}={v}" for k, v in b.items() if v is not None) for b in info["blas"])
    lines = [
        f"- command: `{command}`",
        f"- CPU: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{threads} thread(s) for BLAS and PyTorch",
        f"- BLAS (threadpoolctl): {blas}",
        f"- Python {info['python']}, NumPy {info['numpy']}, PyTorch {info['torch'] or 'absent'}",
        f"- tinyllm commit: {info['commit'] or 'unknown'}; glibc mallopt tuning: {info['mallopt']}",
        f"- OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} (PyTorch's OpenMP "
        "threads must not spin while NumPy's OpenBLAS threads run on the same cores)",
    ]
    if info.get("loadavg"):
        lines.append("- load average at the start (1, 5, 15 min): "
                     + ", ".join(f"{x:.2f}" for x in info["loadavg"])
                     + (f"; at the end: {info['loadavg_end']:.2f}" if "loadavg_end" in info else "")
                     + " (other processes share the cores: compare ratios, not absolute times)")
    return "\n".join(lines) + "\n"


QUALITY_MARKER = "<!-- quality runs: kept when the tables above are regenerated -->"


def main(argv=None) -> int:
    from tinyllm.bench import suites as S  # noqa: PLC0415
    from tinyllm.bench.harness import machine_info, thread_limit  # noqa: PLC0415
    from tinyllm.bench.isolated import registry  # noqa: PLC0415

    args = _parser().parse_args(argv)
    # PyTorch's OpenMP threads spin-wait by default; interleaved with OpenBLAS's pthreads on the
    # same cores, a PyTorch step right after a NumPy GEMM then waited ~100x longer (measured:
    # 0.5 ms -> 108 ms for a tiny MLP step on 2 cores). Passive waiting removes the
    # interference; libgomp reads this when PyTorch is first imported (below, lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    names = [s.strip() for s in args.suite.split(",") if s.strip()]
    SUITES, CPU_ONLY = registry()
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        print(f"tinyllm bench: unknown suite(s) {unknown}; choose from {sorted(SUITES)}",
              file=sys.stderr)
        return 2
    if args.device == "cuda":
        from tinyllm.backend import cupy_or_error  # noqa: PLC0415

        try:
            cupy_or_error()
        except RuntimeError as e:
            print(f"tinyllm bench --device cuda: skipped, no usable GPU: {e}")
            return 0
        skipped = [s for s in names if s in CPU_ONLY]
        names = [s for s in names if s not in CPU_ONLY]
        if skipped:
            print(f"tinyllm bench: suites {skipped} are CPU-only; skipped with --device cuda")
    try:
        threads = args.threads or len(os.sched_getaffinity(0))
    except AttributeError:
        threads = args.threads or os.cpu_count() or 1
    opts = S.Options(rounds=args.rounds or (3 if args.quick else 30),
                     warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
                     threads=threads, quick=args.quick, device=args.device)
    command = "python -m tinyllm.bench" + ("" if argv is None and len(sys.argv) <= 1 else
                                           " " + shlex.join(sys.argv[1:] if argv is None
                                                            else list(argv)))
    tables, t0 = [], time.perf_counter()
    with thread_limit(threads):
        info = machine_info()
        print(_machine_md(info, threads, command))
        for name in names:
            for table in SUITES[name](opts):
                print(table.text(), flush=True)
                tables.append(table)
    elapsed = time.perf_counter() - t0
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = os.getloadavg()[0]
    if not args.no_write:
        out = Path(args.out) if args.out else _default_out()
        text = ("# Benchmarks\n\nGenerated by `tinyllm bench` (tinyllm/bench); do not edit by "
                "hand. Timings are medians of interleaved rounds (one call of each "
                "implementation per round, warm-up discarded); ratios compare medians of the "
                f"same run. Took {elapsed:.0f} s.\n\n## Machine\n\n"
                + _machine_md(info, threads, command) + "\n## Results\n\n"
                + "\n".join(t.markdown() for t in tables))
        if out.exists():  # keep the hand-written part (training quality runs) below the marker
            old = out.read_text(encoding="utf-8")
            if QUALITY_MARKER in old:
                text += "\n" + old[old.index(QUALITY_MARKER):]
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out, text)
        print(f"wrote {out}")
    return 0
