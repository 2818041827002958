"""Timing harness: interleaved rounds, robust statistics, thread limits and machine information.

Interleaving: each round runs one call of every implementation (in a rotated order), so that
drift in the machine's load (other processes, frequency scaling) hits all of them alike; the
first ``warmup`` rounds are discarded. Statistics are the median, min and max of the rest, and
ratios are taken between medians of the same run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Stats", "interleave", "machine_info", "thread_limit", "rss_kib", "peak_rss_kib",
           "reset_peak_rss", "Table"]


@dataclass
class Stats:
    samples: list  # seconds

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


def interleave(fns: dict, rounds: int, warmup: int = 2, sync=None) -> dict:
    """Round-robin timing: ``{name: callable}`` -> ``{name: Stats}`` (seconds per call).

    Every round calls each function once, the starting function rotating from round to round.
    ``sync`` (optional) is called after each call before the clock stops (a GPU synchronise).
    """
    names = list(fns)
    samples = {n: [] for n in names}
    clock = time.perf_counter
    for r in range(warmup + rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0 = clock()
            fns[n]()
            if sync is not None:
                sync()
            dt = clock() - t0
            if r >= warmup:
                samples[n].append(dt)
    return {n: Stats(s) for n, s in samples.items()}


@contextlib.contextmanager
def thread_limit(n: int | None):
    """Limit BLAS/OpenMP threads (threadpoolctl) and PyTorch's intra-op threads to ``n``."""
    if not n:
        yield
        return
    ctx = contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        ctx = threadpool_limits(limits=n)
    except ImportError:
        pass
    torch_prev = None
    try:
        import torch  # noqa: PLC0415

        torch_prev = torch.get_num_threads()
        torch.set_num_threads(n)
    except ImportError:
        torch = None
    with ctx:
        try:
            yield
        finally:
            if torch is not None and torch_prev is not None:
                torch.set_num_threads(torch_prev)


# ---------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib() -> int | None:
    """Resident set size of this process (KiB), from /proc/self/status; None off Linux."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int | None:
    """Peak resident set size (VmHWM, KiB) since start or the last ``reset_peak_rss``."""
    return _status_kib("VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, timeout=5)
        if out.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True, timeout=5).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """Cores, CPU model, BLAS (threadpoolctl), library versions, tinyllm commit, malloc setting."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "commit": _git_commit(),
        "mallopt": "off (TINYLLM_MALLOPT=0)" if os.environ.get("TINYLLM_MALLOPT") == "0" else "on",
        "blas": [],
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415

        for p in threadpool_info():
            info["blas"].append({k: p.get(k) for k in
                                 ("user_api", "internal_api", "version", "architecture",
                                  "num_threads", "threading_layer")})
    except ImportError:
        info["blas"].append({"internal_api": "unknown (threadpoolctl not installed)"})
    try:
        import torch  # noqa: PLC0415

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


# ---------------------------------------------------------------------------- tables
@dataclass
class Table:
    """One result table: a title, column names, rows of strings, and notes under it."""

    title: str
    columns: list
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"### {self.title}", "",
               "| " + " | ".join(self.columns) + " |",
               "|" + "|".join("---" for _ in self.columns) + "|"]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        cells = [self.columns] + [[str(c) for c in r] for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [self.title, "-" * len(self.title)]
        for j, r in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"  * {n}" for n in self.notes]
        return "\n".join(lines) + "\n"
