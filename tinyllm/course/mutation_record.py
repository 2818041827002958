"""The committed record of a full mutation run (``verify --mutants --record docs/mutation.md``)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

from tinyllm.atomic import write_text


def write_record(path, report, misses) -> None:
    seeds = ", ".join(str(s) for s in report.seeds)
    lines = [
        "# Mutation check of the course exercises",
        "",
        "Written by `tinyllm course verify --mutants --seeds " + ",".join(map(str, report.seeds))
        + f" --record {path}` on {time.strftime('%Y-%m-%d')} ({platform.python_version()}, "
        f"{platform.machine()}); {len(report.outcomes)} mutant runs in {report.seconds:.0f} s.",
        "",
        "Each mutant is one mechanical change inside one solution region (see "
        "`tinyllm/course/mutate.py`) or one of the hand-written mistakes of issue 14 "
        "(`named` in `tinyllm/course/mutants.json`), run against its exercise's tests once per "
        f"test seed ({seeds}). *Killed* counts failing tests and time-outs; the rate leaves out "
        "the reviewed equivalent mutants (allowlisted in `mutants.json` with a reason each).",
        "",
        "| exercise | mutants | equivalent | " + " | ".join(f"killed, seed {s}"
                                                        for s in report.seeds) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in report.seeds) + " |",
    ]
    totals = {s: [0, 0] for s in report.seeds}
    for ex, outs in report.by_exercise().items():
        rates = report.rates(outs)
        keys = {o.mutant.key for o in outs}
        n_eq = sum(k in report.equivalent for k in keys)
        cells = []
        for s, (k, n) in rates.items():
            totals[s][0] += k
            totals[s][1] += n
            cells.append(f"{k}/{n} ({100 * k / max(n, 1):.0f}%)")
        lines.append(f"| {ex} | {len(keys)} | {n_eq} | " + " | ".join(cells) + " |")
    lines.append("| **all** | | | " + " | ".join(
        f"**{k}/{n} ({100 * k / max(n, 1):.1f}%)**" for k, n in totals.values()) + " |")
    lines += ["", "## Survivors", ""]
    surv = report.survivors()
    lines += [f"- seed {o.seed}: `{o.mutant.key}` ({o.mutant.where})" for o in surv] or ["None."]
    lines += ["", "## Targets", ""]
    lines += [f"- missed: {m}" for m in misses] or [
        "All met: at least 95% of the behaviour-changing mutants killed on every seed, every "
        "exercise at least 80%, every named mutant killed."]
    lines += ["", "## Equivalent mutants (reviewed)", ""]
    seen = {o.mutant.key for o in report.outcomes}
    lines += [f"- `{k}`: {why}" for k, why in sorted(report.equivalent.items()) if k in seen] \
        or ["None."]
    write_text(Path(path), "\n".join(lines) + "\n")
