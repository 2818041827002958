"""Progress output: a tqdm bar on a terminal, plain lines elsewhere (CI, files), or nothing.

``Progress(total, start, mode)`` with mode ``"bar"``, ``"lines"``, ``"quiet"`` or ``"silent"``;
``choose_mode(quiet)`` picks ``"bar"`` only when stdout is a terminal. Every mode prints
``message()`` lines except ``"quiet"``, which keeps only ``always()`` (the final summary), and
``"silent"``, which prints nothing (a library call such as ``train_synthetic(verbose=False)``).
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress", "choose_mode", "format_seconds", "terminal_size"]


def choose_mode(quiet: bool = False, stream=None) -> str:
    if quiet:
        return "quiet"
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


def terminal_size(stream) -> tuple[int, int]:
    """(columns, lines) of the terminal behind ``stream``, (0, 0) when it reports none."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 0, 0
    return size.columns, size.lines


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class Progress:
    def __init__(self, total: int, start: int = 0, mode: str = "lines", log_interval: int = 10,
                 stream=None):
        self.total, self.step, self.mode = total, start, mode
        self.log_interval = max(1, log_interval)
        self.stream = stream or sys.stdout
        self.t0, self.s0 = time.perf_counter(), start
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            cols, rows = terminal_size(self.stream)
            sized = cols > 0 and rows > 0  # a terminal can report 0 x 0 (some CI and pty
            # setups): tqdm then draws nothing at all, so give it a fixed size instead
            self.bar = tqdm(total=total, initial=start, unit="it", file=self.stream, leave=True,
                            dynamic_ncols=sized, ncols=None if sized else 110,
                            nrows=None if sized else 20)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        """Called after update ``step`` (1-based count of updates done)."""
        self.step = step
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if step % self.log_interval == 0 or step == self.total:
                self.bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.2e} {tokens_per_s:,.0f} tok/s",
                                         refresh=False)
        elif self.mode == "lines" and (step % self.log_interval == 0 or step == self.total):
            done = step - self.s0
            rate = done / max(time.perf_counter() - self.t0, 1e-9)
            left = (self.total - step) / rate if rate > 0 else 0.0
            self._print(f"step {step:>6}/{self.total} | loss {loss:.4f} | lr {lr:.2e} | "
                        f"{tokens_per_s:,.0f} tok/s | {format_seconds(left)} left")

    def message(self, text: str) -> None:
        if self.mode not in ("quiet", "silent"):
            self._print(text)

    def always(self, text: str) -> None:
        if self.mode != "silent":
            self._print(text)

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
