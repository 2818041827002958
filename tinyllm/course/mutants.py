"""The mutation check: every plausible mistake in a solution region must fail its exercise's tests.

``tinyllm course verify --mutants`` makes the mutants of every region (``tinyllm.course.mutate``,
plus the hand-written ``named`` mutants of ``mutants.json``: the mistakes reported in issue 14)
and runs each against its exercise's tests, once per test seed. A mutant is *killed* when a test
fails (or it runs past the time limit), *survives* when every test passes. The figure that
counts is the kill rate among the mutants that change behaviour: the ``equivalent`` list of
``mutants.json`` names, by key and with a reason each, the reviewed mutants that cannot change
what the function computes (an allowlisted mutant that gets killed is reported as stale).

Speed: a worker process per core imports pytest, the tests and the package once; each mutant
then runs in a ``fork`` of it, with the mutated function's code object swapped in
(``__code__``, so that every reference to the function sees it) and ``pytest.main`` on the
exercise's test files (the workers: ``tinyllm.course.mutant_worker``). A region outside a
function, or a platform without ``fork``, is not supported (the mutant is reported as an error).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tinyllm.course.grade import id_key, registry_for, test_files_for
from tinyllm.course.mutant_worker import Pool
from tinyllm.course.mutate import Mutant, apply_named, module_name, region_mutants
from tinyllm.course.registry import REPO_ROOT, Registry, assign, package_regions

CONFIG = Path(__file__).with_name("mutants.json")
MUTANT_TIMEOUT = 30.0  # seconds for one mutant's tests: a mutant that loops forever is killed


# ---------------------------------------------------------------------------- which mutants
def load_config(path: Path = CONFIG) -> dict:
    if not path.is_file():
        return {"named": [], "equivalent": []}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"named": data.get("named", []), "equivalent": data.get("equivalent", [])}


def all_mutants(root=REPO_ROOT, registry: Registry | None = None, exercise_ids=None,
                config: dict | None = None) -> tuple[list[Mutant], list[str]]:
    """``(mutants, problems)``: mechanical and named mutants of the chosen exercises."""
    root = Path(root)
    registry = registry if registry is not None else registry_for(root)
    config = config if config is not None else load_config()
    owned, _ = assign(package_regions(root), registry)
    wanted = set(exercise_ids) if exercise_ids else {ex.id for ex in registry}
    out, problems, texts = [], [], {}
    for ex_id in sorted(owned, key=id_key):
        if ex_id not in wanted:
            continue
        for r in owned[ex_id]:
            text = texts.setdefault(r.path, (root / r.path).read_text(encoding="utf-8"))
            out += region_mutants(text, r, ex_id)
    for spec in config["named"]:
        if spec["exercise"] not in wanted:
            continue
        file, qual = spec["target"].split(":")
        regions = [r for r in owned.get(spec["exercise"], []) if r.target == spec["target"]]
        if not regions:
            problems.append(f"named mutant {spec['why']!r}: no region {spec['target']}")
            continue
        text = texts.setdefault(file, (root / file).read_text(encoding="utf-8"))
        try:
            out.append(apply_named(text, regions[0], spec["exercise"], spec["find"],
                                   spec["replace"], spec["why"]))
        except ValueError as e:
            problems.append(str(e))
    return out, problems


# ---------------------------------------------------------------------------- running
@dataclass
class Outcome:
    mutant: Mutant
    seed: int
    status: str  # killed, survived, timeout, error
    seconds: float = 0.0


@dataclass
class Report:
    seeds: list
    outcomes: list = field(default_factory=list)
    baseline_failures: list = field(default_factory=list)  # (exercise, seed)
    problems: list = field(default_factory=list)
    equivalent: dict = field(default_factory=dict)  # key -> reason
    seconds: float = 0.0

    def by_exercise(self) -> dict:
        out = defaultdict(list)
        for o in self.outcomes:
            out[o.mutant.exercise].append(o)
        return dict(sorted(out.items(), key=lambda kv: id_key(kv[0])))

    def rates(self, outcomes) -> dict:
        """``{seed: (killed, counted)}`` where counted excludes allowlisted equivalents."""
        out = {}
        for s in self.seeds:
            mine = [o for o in outcomes if o.seed == s and o.mutant.key not in self.equivalent]
            out[s] = (sum(o.status in ("killed", "timeout") for o in mine), len(mine))
        return out

    def survivors(self) -> list:
        return [o for o in self.outcomes if o.status == "survived"
                and o.mutant.key not in self.equivalent]

    def stale_equivalents(self) -> list:
        return sorted({o.mutant.key for o in self.outcomes if o.mutant.key in self.equivalent
                       and o.status in ("killed", "timeout")})


def run_mutants(root=REPO_ROOT, mutants=(), seeds=(0,), workers: int = 2,
                timeout: float = MUTANT_TIMEOUT, registry: Registry | None = None,
                config: dict | None = None, progress=None) -> Report:
    root = Path(root).resolve()
    registry = registry if registry is not None else registry_for(root)
    config = config if config is not None else load_config()
    report = Report(list(seeds), equivalent={e["key"]: e["reason"] for e in config["equivalent"]})
    start = time.perf_counter()
    exercises = sorted({m.exercise for m in mutants}, key=id_key)
    files = {e: test_files_for(root, [e]) for e in exercises}
    pool = Pool(root, workers)
    try:
        def base(args):
            ex, seed = args
            req = {"source": None, "module": module_name(registry[ex].targets[0].split(":")[0]),
                   "qualname": "", "path": "", "files": files[ex], "exercise": ex,
                   "seed": seed, "timeout": timeout * 3}
            return ex, seed, pool.run(req)

        with ThreadPoolExecutor(max_workers=len(pool.procs)) as ex_pool:
            broken = {(e, s) for e, s, r in ex_pool.map(base, [(e, s) for e in exercises
                                                              for s in seeds]) if r["rc"] != 0}
        report.baseline_failures = sorted(broken)

        def one(args):
            m, seed = args
            if (m.exercise, seed) in broken:
                return Outcome(m, seed, "error")
            req = {"source": m.source, "module": module_name(m.path), "qualname": m.qualname,
                   "path": str(root / m.path), "files": files[m.exercise],
                   "exercise": m.exercise, "seed": seed, "timeout": timeout}
            r = pool.run(req)
            status = ("timeout" if r["timed_out"] else "survived" if r["rc"] == 0
                      else "killed" if r["rc"] == 1 else "error")
            if progress:
                progress(m, seed, status)
            return Outcome(m, seed, status, r["seconds"])

        jobs = [(m, s) for s in seeds for m in mutants]
        with ThreadPoolExecutor(max_workers=len(pool.procs)) as ex_pool:
            report.outcomes = list(ex_pool.map(one, jobs))
    finally:
        pool.close()
    report.seconds = time.perf_counter() - start
    return report


def sample(mutants, per_exercise: int, seed: int) -> list:
    """``per_exercise`` mutants of each exercise (all its named ones, then random others)."""
    rnd = random.Random(seed)
    groups = defaultdict(list)
    for m in mutants:
        groups[m.exercise].append(m)
    out = []
    for ex in sorted(groups, key=id_key):
        named = [m for m in groups[ex] if m.kind == "named"]
        rest = [m for m in groups[ex] if m.kind != "named"]
        out += named + rnd.sample(rest, min(per_exercise, len(rest)))
    return out


# ---------------------------------------------------------------------------- reporting
def format_report(report: Report, width: int = 100) -> str:
    lines = [f"{'exercise':<9}{'mutants':>8}{'equiv.':>7}  killed per seed"]
    total = defaultdict(lambda: [0, 0])
    for ex, outs in report.by_exercise().items():
        rates = report.rates(outs)
        per_seed = "  ".join(f"{k}/{n} ({100 * k / max(n, 1):.0f}%)" for k, n in rates.values())
        n_mut = len({o.mutant.key for o in outs})
        n_eq = len({o.mutant.key for o in outs if o.mutant.key in report.equivalent})
        lines.append(f"{ex:<9}{n_mut:>8}{n_eq:>7}  {per_seed}")
        for s, (k, n) in rates.items():
            total[s][0] += k
            total[s][1] += n
    lines.append("all      " + "  ".join(f"seed {s}: {k}/{n} ({100 * k / max(n, 1):.1f}%)"
                                          for s, (k, n) in total.items()))
    for o in report.survivors():
        lines.append(f"survived (seed {o.seed}): {o.mutant.key}  [{o.mutant.where}]")
    for key in report.stale_equivalents():
        lines.append(f"allowlisted as equivalent but killed: {key}")
    for e, s in report.baseline_failures:
        lines.append(f"exercise {e}: its tests fail without any mutant (seed {s})")
    errors = [o for o in report.outcomes if o.status == "error"]
    for o in errors[:20]:
        lines.append(f"error (seed {o.seed}): {o.mutant.key}")
    lines += [f"problem: {p}" for p in report.problems]
    lines.append(f"{len(report.outcomes)} runs in {report.seconds:.0f} s")
    return "\n".join(lines)


def targets_met(report: Report, overall: float = 0.95, each: float = 0.80) -> list[str]:
    """The targets that the report misses (empty when all are met)."""
    misses = []
    for ex, outs in report.by_exercise().items():
        for s, (k, n) in report.rates(outs).items():
            if n and k / n < each:
                misses.append(f"exercise {ex}, seed {s}: {k}/{n} killed (< {each:.0%})")
    for s, (k, n) in report.rates(report.outcomes).items():
        if n and k / n < overall:
            misses.append(f"seed {s}: {k}/{n} killed overall (< {overall:.0%})")
    named = [o for o in report.outcomes if o.mutant.kind == "named"
             and o.status not in ("killed", "timeout")]
    misses += [f"named mutant not killed (seed {o.seed}): {o.mutant.key}" for o in named]
    return misses


def main(args) -> int:
    """``tinyllm course verify --mutants`` (arguments parsed by ``tinyllm.course.cli``)."""
    root = REPO_ROOT
    mutants, problems = all_mutants(root, exercise_ids=args.exercise)
    if args.sample:
        pick = int(os.environ.get("TINYLLM_MUTANT_SEED", secrets.randbelow(10**6)))
        print(f"sample of {args.sample} per exercise, seed {pick} "
              f"(replay with TINYLLM_MUTANT_SEED={pick})")
        mutants = sample(mutants, args.sample, pick)
    if args.list:
        for m in mutants:
            print(f"{m.key}  [{m.where} {m.kind}]")
        print(f"{len(mutants)} mutants")
        return 0
    seeds = ([secrets.randbelow(2**31)] if args.seeds == "random"
             else [int(s) for s in args.seeds.split(",")])
    done = [0]
    total = len(mutants) * len(seeds)

    def progress(m, seed, status):
        done[0] += 1
        if done[0] % 50 == 0 or done[0] == total:
            print(f"  {done[0]}/{total} mutant runs", file=sys.stderr, flush=True)

    report = run_mutants(root, mutants, seeds, workers=args.workers, progress=progress)
    report.problems += problems
    text = format_report(report)
    print(text)
    misses = targets_met(report)
    for m in misses:
        print("target missed:", m)
    if args.record:
        from tinyllm.course.mutation_record import write_record

        write_record(args.record, report, misses)
    return 1 if misses or report.problems or report.baseline_failures else 0
