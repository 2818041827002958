"""The ``fast-paths`` suite: what each Function's tuned fast path buys in the baby training step.

A Function keeps the lesson's plain ``forward``/``backward`` and may add ``fast_forward``/
``fast_backward`` (``tinyllm.autograd``); a fast path stays on by default only where this suite
shows that it pays. It interleaves the same step with every fast path on, every one off
(``tl.fast_paths(False)``), and each one off alone, with the hand-written NumPy step as the
baseline of every ratio.
"""

from __future__ import annotations

from tinyllm.bench.harness import Table, interleave
from tinyllm.bench.suites import BABY, QUICK, Options, make_gpt, make_numpy_gpt


def functions_with_fast_paths() -> list:
    """Every engine Function class that defines a fast path."""
    import tinyllm as tl  # noqa: PLC0415

    found, stack = [], list(tl.Function.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("fast_forward") is not None:
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def _without(cls, step):
    """The step with ``cls``'s fast path switched off (the others on)."""
    def run():
        saved = cls.__dict__["fast_forward"]
        cls.fast_forward = None
        try:
            step()
        finally:
            cls.fast_forward = saved
    return run


def _adam_plain(step):
    """The step with Adam's plain update (``Adam._update``) instead of its fast one."""
    from tinyllm.optim import Adam  # noqa: PLC0415

    def run():
        saved = Adam.__dict__["_fast_update"]
        Adam._fast_update = Adam._update
        try:
            step()
        finally:
            Adam._fast_update = saved
    return run


def suite_fast_paths(opts: Options) -> list:
    """One table per GELU form (tanh, with the hand-written NumPy step as the baseline; exact,
    which the NumPy step does not implement)."""
    import tinyllm as tl  # noqa: PLC0415

    c = QUICK if opts.quick else BABY
    tables = []
    for activation in ("gelu_tanh", "gelu"):
        cfg, _, state, batch, step = make_gpt(c, activation=activation)

        def plain(step=step):
            with tl.fast_paths(False):
                step()

        fns = {"all fast paths on": step, "all off (plain forms)": plain}
        for cls in functions_with_fast_paths():
            fns[f"{cls.__name__} off"] = _without(cls, step)
        fns["Adam's update plain"] = _adam_plain(step)
        if activation == "gelu_tanh":
            fns["numpy by hand"] = make_numpy_gpt(cfg, state, batch)
        stats = interleave(fns, opts.rounds, opts.warmup)
        on = stats["all fast paths on"].median
        base = stats["numpy by hand"].median if "numpy by hand" in stats else None
        form = "tanh" if activation == "gelu_tanh" else "exact (erf)"
        t = Table(f"Fast paths in the GPT training step, GELU {form} (cpu)",
                  ["tinyllm step", "median ms", "ratio to numpy by hand", "ratio to all on"])
        for name, st in stats.items():
            t.rows.append([name, f"{st.median * 1e3:.1f}",
                           f"{st.median / base:.3f}x" if base else "n/a",
                           f"{st.median / on:.3f}x"])
        t.notes.append(f"the gpt suite's baby step with GELU {form}, {opts.rounds} interleaved "
                       f"rounds after {opts.warmup} warm-up; 'X off' runs every fast path but "
                       "X's")
        tables.append(t)
        n = opts.threads or 1
        if n > 1 and opts.device == "cpu":
            tables.append(_threaded_table(c, activation, form, n, opts))
    return tables


def _threaded_table(c, activation, form, n, opts):
    """The step on ``n`` threads with its per-parameter loops (the parts' gradient sum, the
    clipping, AdamW) on the threads and on one, interleaved on their own: a step whose
    matmuls ran on every BLAS thread leaves OpenBLAS's workers spinning into the next one, so
    the one-thread steps of the table above cannot sit in the same rounds."""
    fns = {f"{n} parts on {n} threads": make_gpt(c, activation=activation, threads=n)[-1],
           "the same, the sum, clipping and AdamW on one thread": make_gpt(
               c, activation=activation, threads=n, loops_on_threads=False)[-1]}
    stats = interleave(fns, opts.rounds, opts.warmup)
    on = stats[f"{n} parts on {n} threads"].median
    t = Table(f"The threaded step, GELU {form} (cpu)", ["tinyllm step", "median ms", "ratio"])
    for name, st in stats.items():
        t.rows.append([name, f"{st.median * 1e3:.1f}", f"{st.median / on:.3f}x"])
    t.notes.append(f"tinyllm.train.threads with {n} threads, {opts.rounds} interleaved rounds "
                   f"after {opts.warmup} warm-up")
    return t
