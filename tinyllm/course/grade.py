"""Grading: run the exercise tests, score each exercise, report as a table or Gradescope JSON.

An exercise scores its points when at least one of its tests passed and none failed (skipped
tests count neither way). Tests run in a separate pytest process in the tree being graded, with
pytest-timeout's per-test ``--timeout`` so that an endless loop costs one test, not the run.
A file of the package that does not compile or import is reported with its path and line
(``Run.broken``), and every exercise whose tests it stops says so.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinyllm.course.registry import PACKAGE, REPO_ROOT, Exercise, Registry, load_registry
from tinyllm.course.runner import has_pytest_timeout, run_pytest

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
class Broken:
    """A file of the graded package that does not compile or import."""

    path: str | None
    line: int | None
    message: str
    source: str = ""
    offset: int | None = None

    def describe(self) -> str:
        where = f"{self.path}:{self.line}" if self.path and self.line else (self.path or "")
        out = f"{where}: {self.message}" if where else self.message
        if self.source.strip():
            src = self.source.rstrip()
            out += f"\n    {src.strip()}"
            if self.offset and self.offset > 0:
                lead = len(src) - len(src.lstrip())
                out += "\n    " + " " * max(self.offset - 1 - lead, 0) + "^"
        return out


@dataclass
class Run:
    tests: dict = field(default_factory=dict)  # nodeid -> TestResult
    collect_errors: list = field(default_factory=list)  # (nodeid, message)
    broken: list = field(default_factory=list)  # Broken
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
        mine = self.broken_here()
        if mine:
            return f"your code does not run: {first_line(mine[0].describe(), 140)}"
        if bad:
            m = _STUB_RE.search(bad[0].message or "")
            if m and m.group(1) == self.exercise.id:
                return "not implemented yet"
            if m:
                return f"needs exercise {m.group(1)} first (not implemented yet)"
            return f"{bad[0].name}: {first_line(bad[0].message)}"
        if self.tests:
            return f"all tests skipped: {first_line(self.tests[0].message)}"
        if self.run.broken:
            return f"your code does not run: {first_line(self.run.broken[0].describe(), 140)}"
        if self.run.collect_errors:
            node, msg = self.run.collect_errors[0]
            return f"no tests ran: {node} failed to import: {first_line(msg)}"
        return "no tests found for this exercise"

    def broken_here(self) -> list:
        """Broken files among this exercise's targets (or all, when no test could pass)."""
        files = {t.split(":")[0] for t in self.exercise.targets}
        mine = [b for b in self.run.broken if b.path in files]
        if mine or not self.run.broken:
            return mine
        bad = [t for t in self.tests if t.outcome in ("failed", "error")]
        return self.run.broken if (bad or not self.tests) and not any(
            t.outcome == "passed" for t in self.tests) else []


def first_line(text: str, width: int = 100) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def registry_for(root: str | Path) -> Registry:
    """The registry of the tree at ``root`` (falling back to this package's)."""
    path = Path(root) / PACKAGE / "course" / "exercises.json"
    return load_registry(path if path.is_file() else None)


def marker_pattern(exercise_ids) -> re.Pattern:
    """Matches the marker of any of ``exercise_ids`` in a test file's text: the decorator
    ``@pytest.mark.exercise("02.3")`` or an alias of it such as ``@ex("02.3")``."""
    ids = "|".join(re.escape(str(e)) for e in exercise_ids)
    return re.compile(r"\b(?:exercise|ex)\(\s*[\"'](?:" + ids + r")[\"']")


def test_files_for(root, exercise_ids) -> list[str]:
    """The test files (relative to ``root``) that mention an exercise marker of these ids, so
    that a run for one exercise collects only those files, not the whole suite."""
    root = Path(root)
    marker = marker_pattern(exercise_ids)
    return sorted(f.relative_to(root).as_posix() for f in (root / "tests").glob("test_*.py")
                  if marker.search(f.read_text(encoding="utf-8")))


def run_exercise_tests(root=REPO_ROOT, exercise_ids=(), lessons=(), timeout: float = 60,
                       env: dict | None = None, extra_args=()) -> Run:
    """Run the exercise tests of ``root`` (all, or those of some exercises or lessons)."""
    # hypothesis's plugin imports hypothesis at the end of every session (seconds): not needed
    args = ["-q", "-m", "exercise", "-o", "console_output_style=classic",
            "-p", "no:hypothesispytest", *extra_args]
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
        elif r["event"] == "broken":
            run.broken.append(Broken(r["path"], r["line"], r["message"], r.get("source") or "",
                                     r.get("offset")))
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


def grade(root=REPO_ROOT, lessons=(), timeout: float = 60, registry: Registry | None = None,
          exercise_ids=()) -> list[ExerciseResult]:
    """Run the exercise tests of ``root`` and score every registered exercise (of ``lessons``,
    or only ``exercise_ids``)."""
    registry = registry if registry is not None else registry_for(root)
    ids = [registry[str(e)].id for e in exercise_ids]
    extra = test_files_for(root, ids) if ids else ()
    run = run_exercise_tests(root, exercise_ids=ids, lessons=lessons, timeout=timeout,
                             extra_args=extra)
    chosen = sorted((ex for ex in registry if (not lessons or ex.lesson_number in lessons)
                     and (not ids or ex.id in ids)), key=lambda ex: id_key(ex.id))
    return [ExerciseResult(ex, run.for_exercise(ex.id), run) for ex in chosen]


def id_key(exercise_id: str) -> tuple:
    return tuple(int(x) for x in exercise_id.split("."))


def format_table(results: list[ExerciseResult], registry: Registry | None = None) -> str:
    """A plain-text table per lesson and the total (``registry``: to name stray test ids)."""
    lines, lesson = [], None
    run = results[0].run if results else Run()
    if run.broken:
        lines.append("Your code does not run:")
        lines += ["  " + b.describe().replace("\n", "\n  ") for b in run.broken]
        lines.append("")
    for r in results:
        ex = r.exercise
        if ex.lesson != lesson:
            lesson = ex.lesson
            lines += [""] if lines and lines[-1] else []
            lines.append(f"Lesson {ex.lesson_number} ({ex.lesson})")
        status = "PASS" if r.passed else "FAIL"
        lines.append(f"  {ex.id:<6} {ex.title[:42]:<42} {_num(r.score):>3}/{_num(ex.points):<3} "
                     f"{status}  {r.summary}".rstrip())
    total = sum(r.score for r in results)
    top = sum(r.exercise.points for r in results)
    done = sum(r.passed for r in results)
    lines += ["", f"Total: {_num(total)}/{_num(top)} points, {done}/{len(results)} exercises"]
    known = {ex.id for ex in registry} if registry is not None else {r.exercise.id
                                                                      for r in results}
    strays = sorted({e for t in run.tests.values() for e in t.exercises} - known)
    if strays:
        lines.append(f"Tests carry unregistered exercise ids: {', '.join(strays)}")
    if run.collect_errors:
        lines.append("Test modules that failed to import:")
        lines += [f"  {n}: {first_line(m)}" for n, m in run.collect_errors]
    return "\n".join(lines)


def _num(x) -> str:
    return f"{x:g}"


def gradescope(results: list[ExerciseResult]) -> dict:
    """Gradescope's autograder ``results.json``: one Gradescope test per exercise."""
    tests = []
    for r in results:
        ex = r.exercise
        out = [b.describe() for b in r.broken_here()]
        out += [f"{'PASS' if t.outcome == 'passed' else t.outcome.upper()}  {t.name}"
                + ("" if t.outcome == "passed" else "\n    " + _trim(t.message, 12))
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
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    more = [f"... ({len(lines) - n} more lines)"] if len(lines) > n else []
    return "\n    ".join(lines[:n] + more)


def collect_exercise_tests(root=REPO_ROOT, extra_args=()) -> tuple[dict, list]:
    """``({exercise id: [test node ids]}, collection errors)`` of the tests under ``root``."""
    records, _, _ = run_pytest(root, ["--collect-only", "-q", "-m", "exercise", *extra_args])
    found: dict[str, list] = {}
    for r in records:
        if r["event"] == "collected":
            for e in r["exercises"]:
                found.setdefault(e, []).append(r["nodeid"])
    errors = [(r["nodeid"], r["message"]) for r in records if r["event"] == "collect_error"]
    return found, errors
