"""Grading: run the exercise tests, score each exercise, report as a table or Gradescope JSON.

An exercise scores its points when at least one of its tests passed and none failed (skipped
tests count neither way). Tests run in a separate pytest process in the tree being graded, with
pytest-timeout's per-test ``--timeout`` so that an endless loop costs one test, not the run.

``verify_stubs`` is the honesty check: with each exercise alone replaced by its stub, every test
of that exercise must fail.
"""

from __future__ import annotations

import queue
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tinyllm.course.plugin import has_pytest_timeout, run_pytest
from tinyllm.course.registry import (
    PACKAGE,
    REPO_ROOT,
    Exercise,
    Registry,
    assign,
    load_registry,
    package_regions,
)

_STUB_RE = re.compile(r"NotImplementedError: Exercise (\d\d\.\d+)")
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


@dataclass
class TestResult:
    nodeid: str
    exercises: list
    outcome: str = "failed"  # passed, failed, error (setup or teardown) or skipped
    message: str = "did not finish (the test process crashed or was stopped)"
    crash_path: str | None = None
    crash_line: int | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        return self.nodeid.split("::", 1)[-1]


@dataclass
class Run:
    tests: dict = field(default_factory=dict)  # nodeid -> TestResult
    collect_errors: list = field(default_factory=list)  # (nodeid, message)
    returncode: int = 0
    output: str = ""
    seconds: float = 0.0

    def for_exercise(self, exercise_id: str) -> list[TestResult]:
        return [t for t in self.tests.values() if exercise_id in t.exercises]


@dataclass
class ExerciseResult:
    exercise: Exercise
    tests: list
    run: Run

    @property
    def passed(self) -> bool:
        outcomes = {t.outcome for t in self.tests}
        return "passed" in outcomes and not outcomes & {"failed", "error"}

    @property
    def score(self) -> float:
        return self.exercise.points if self.passed else 0

    @property
    def summary(self) -> str:
        """One line: why the exercise failed (empty when it passed)."""
        if self.passed:
            return ""
        bad = [t for t in self.tests if t.outcome in ("failed", "error")]
        if bad:
            m = _STUB_RE.search(bad[0].message or "")
            if m and m.group(1) == self.exercise.id:
                return "not implemented yet"
            if m:
                return f"needs exercise {m.group(1)} first (not implemented yet)"
            return f"{bad[0].name}: {first_line(bad[0].message)}"
        if self.tests:
            return f"all tests skipped: {first_line(self.tests[0].message)}"
        if self.run.collect_errors:
            node, msg = self.run.collect_errors[0]
            return f"no tests ran: {node} failed to import: {first_line(msg)}"
        return "no tests found for this exercise"


def first_line(text: str, width: int = 100) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def registry_for(root: str | Path) -> Registry:
    """The registry of the tree at ``root`` (falling back to this package's)."""
    path = Path(root) / PACKAGE / "course" / "exercises.json"
    return load_registry(path if path.is_file() else None)


def run_exercise_tests(root=REPO_ROOT, exercise_ids=(), lessons=(), timeout: float = 60,
                       env: dict | None = None, extra_args=()) -> Run:
    """Run the exercise tests of ``root`` (all, or those of some exercises or lessons)."""
    args = ["-q", "-m", "exercise", "-o", "console_output_style=classic", *extra_args]
    for e in exercise_ids:
        args += ["--exercise", e]
    for lesson in lessons:
        args += ["--lesson", lesson]
    if timeout and has_pytest_timeout():
        args += ["--timeout", str(timeout)]
    start = time.perf_counter()
    records, code, output = run_pytest(root, args, env=env)
    run = Run(returncode=code, output=output)
    run.seconds = time.perf_counter() - start
    for r in records:
        if r["event"] == "collected":
            run.tests[r["nodeid"]] = TestResult(r["nodeid"], r["exercises"])
        elif r["event"] == "collect_error":
            run.collect_errors.append((r["nodeid"], r["message"]))
        elif r["event"] == "test":
            t = run.tests.setdefault(r["nodeid"], TestResult(r["nodeid"], r["exercises"]))
            outcome = r["outcome"]
            if outcome == "failed" and r["when"] != "call":
                outcome = "error"
            fresh = t.message.startswith("did not finish")
            if fresh or _RANK[outcome] > _RANK[t.outcome]:
                t.outcome, t.message, t.seed = outcome, r["message"], r["seed"]
                t.crash_path, t.crash_line = r["crash_path"], r["crash_line"]
    return run


def grade(root=REPO_ROOT, lessons=(), timeout: float = 60,
          registry: Registry | None = None) -> list[ExerciseResult]:
    """Run the exercise tests of ``root`` and score every registered exercise (of ``lessons``)."""
    registry = registry if registry is not None else registry_for(root)
    run = run_exercise_tests(root, lessons=lessons, timeout=timeout)
    chosen = sorted((ex for ex in registry if not lessons or ex.lesson_number in lessons),
                    key=lambda ex: tuple(int(x) for x in ex.id.split(".")))
    return [ExerciseResult(ex, run.for_exercise(ex.id), run) for ex in chosen]


def format_table(results: list[ExerciseResult]) -> str:
    """A plain-text table per lesson and the total."""
    lines, lesson = [], None
    for r in results:
        ex = r.exercise
        if ex.lesson != lesson:
            lesson = ex.lesson
            lines += [""] if lines else []
            lines.append(f"Lesson {ex.lesson_number} ({ex.lesson})")
        status = "PASS" if r.passed else "FAIL"
        lines.append(f"  {ex.id:<6} {ex.title[:42]:<42} {_num(r.score):>3}/{_num(ex.points):<3} "
                     f"{status}  {r.summary}".rstrip())
    total = sum(r.score for r in results)
    top = sum(r.exercise.points for r in results)
    done = sum(r.passed for r in results)
    lines += ["", f"Total: {_num(total)}/{_num(top)} points, {done}/{len(results)} exercises"]
    run = results[0].run if results else Run()
    strays = sorted({e for t in run.tests.values() for e in t.exercises}
                    - {r.exercise.id for r in results})
    if strays:
        lines.append(f"Tests carry unregistered exercise ids: {', '.join(strays)}")
    if results and results[0].run.collect_errors:
        lines.append("Test modules that failed to import:")
        lines += [f"  {n}: {first_line(m)}" for n, m in results[0].run.collect_errors]
    return "\n".join(lines)


def _num(x) -> str:
    return f"{x:g}"


def gradescope(results: list[ExerciseResult]) -> dict:
    """Gradescope's autograder ``results.json``: one Gradescope test per exercise."""
    tests = []
    for r in results:
        ex = r.exercise
        out = [f"{'PASS' if t.outcome == 'passed' else t.outcome.upper()}  {t.name}"
               + ("" if t.outcome == "passed" else "\n    " + _trim(t.message, 6))
               for t in r.tests] or [r.summary]
        if not r.passed and ex.hint:
            out.append(f"Hint: {ex.hint}")
        tests.append({"name": f"{ex.id} {ex.title}", "number": ex.id, "score": float(r.score),
                      "max_score": float(ex.points),
                      "status": "passed" if r.passed else "failed",
                      "output": "\n".join(out), "visibility": "visible"})
    total, top = sum(r.score for r in results), sum(r.exercise.points for r in results)
    run = results[0].run if results else Run()
    return {"score": float(total), "execution_time": round(run.seconds, 1),
            "output": f"{_num(total)}/{_num(top)} points", "visibility": "visible",
            "stdout_visibility": "hidden", "tests": tests}


def _trim(text: str, n: int) -> str:
    lines = [ln[:160] for ln in (text or "").splitlines() if ln.strip()]
    more = ["..."] if len(lines) > n else []
    return "\n    ".join(lines[:n] + more)


def verify_stubs(root=REPO_ROOT, registry: Registry | None = None, exercise_ids=None,
                 workers: int = 2, timeout: float = 60) -> tuple[list[str], float]:
    """Stub each exercise alone in a copy of ``root`` and check that all its tests fail.

    Returns ``(problems, seconds)``; a problem names the exercise and, for a test that passed
    on the stub, the test. The tests are collected once; each exercise then runs only the test
    files holding its tests, in one of ``workers`` copies of the tree side by side.
    """
    from tinyllm.course.student import list_files, stub_regions

    root = Path(root).resolve()
    registry = registry if registry is not None else registry_for(root)
    owned, _ = assign(package_regions(root), registry)
    ids = list(exercise_ids) if exercise_ids is not None else [ex.id for ex in registry]
    start, files = time.perf_counter(), list_files(root)
    found, errors = collect_exercise_tests(root)
    problems = [f"test module {node} fails to import: {first_line(msg)}" for node, msg in errors]
    todo = []
    for ex_id in ids:
        if not owned.get(ex_id):
            problems.append(f"exercise {ex_id}: no solution region to stub")
        elif ex_id not in found:
            problems.append(f"exercise {ex_id}: no tests carry @pytest.mark.exercise({ex_id!r})")
        else:
            todo.append(ex_id)
    tmp = Path(tempfile.mkdtemp(prefix="tinyllm-stubcheck-"))
    trees: queue.Queue = queue.Queue()
    try:
        for w in range(max(1, min(workers, len(todo)))):
            tree = tmp / f"tree{w}"
            for rel in files:
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / rel, tree / rel)
            trees.put(tree)

        def put(tree, rel, text):
            (tree / rel).write_text(text, encoding="utf-8")
            for pyc in (tree / rel).parent.glob(f"__pycache__/{Path(rel).stem}.*.pyc"):
                pyc.unlink()  # never run a stale compiled copy of the other version

        def check_one(ex_id: str) -> list[str]:
            tree = trees.get()
            paths = sorted({r.path for r in owned[ex_id]})
            test_files = sorted({n.split("::")[0] for n in found[ex_id]})
            try:
                for p in paths:
                    src = (root / p).read_text(encoding="utf-8")
                    put(tree, p, stub_regions(src, [ex_id], registry, p))
                run = run_exercise_tests(tree, [ex_id], timeout=timeout, extra_args=test_files)
            finally:
                for p in paths:
                    put(tree, p, (root / p).read_text(encoding="utf-8"))
                trees.put(tree)
            tests = run.for_exercise(ex_id)
            if not tests:
                return [f"exercise {ex_id}: its tests did not run: {first_line(run.output)}"]
            return [f"exercise {ex_id}: {t.nodeid} passes with the exercise stubbed"
                    for t in tests if t.outcome == "passed"]

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            problems += [p for ps in pool.map(check_one, todo) for p in ps]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return problems, time.perf_counter() - start


def collect_exercise_tests(root=REPO_ROOT) -> tuple[dict, list]:
    """``({exercise id: [test node ids]}, collection errors)`` of the tests under ``root``."""
    records, _, _ = run_pytest(root, ["--collect-only", "-q", "-m", "exercise"])
    found: dict[str, list] = {}
    for r in records:
        if r["event"] == "collected":
            for e in r["exercises"]:
                found.setdefault(e, []).append(r["nodeid"])
    errors = [(r["nodeid"], r["message"]) for r in records if r["event"] == "collect_error"]
    return found, errors

