"""The exercise registry and the solution regions it points at.

``exercises.json`` lists the exercises: ``{id, title, lesson, targets, points, hint}``, where each
target is ``"tinyllm/ops.py:Mul.backward"`` (a file relative to the repository root, then the
qualified name of a function, method or class). A *solution region* is the block of lines between
a ``# BEGIN SOLUTION`` line and an ``# END SOLUTION`` line; it belongs to the innermost function
(or class) whose source spans it (found with ``ast``), and through that to the exercise whose
targets name it. Module-level regions have the qualified name ``<module>``.

Marker lines are recognised by their stripped text starting with the marker, so a marker inside
a multi-line string would count too: don't write one there.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
PACKAGE = "tinyllm"
ID_RE = re.compile(r"^\d\d\.\d+$")
LESSON_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")
REPO_ROOT = Path(__file__).resolve().parents[2]


class RegistryError(ValueError):
    """exercises.json is malformed, or disagrees with the solution regions in the code."""


class RegionError(SyntaxError):
    """A marker line is stray, nested or unclosed; the message names the file and line."""

    def __init__(self, path: str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line = path, line


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    lesson: str
    targets: tuple[str, ...]
    points: float = 1
    hint: str = ""

    @property
    def lesson_number(self) -> str:
        return self.id.split(".")[0]

    def stub_message(self) -> str:
        return f"Exercise {self.id}: {self.title}. See lessons/{self.lesson}"


@dataclass(frozen=True)
class Region:
    path: str  # relative to the repository root, with forward slashes
    begin: int  # 1-based line of the BEGIN marker
    end: int  # 1-based line of the END marker
    indent: str  # the BEGIN line's indentation
    qualname: str = "<module>"

    @property
    def target(self) -> str:
        return f"{self.path}:{self.qualname}"


@dataclass
class Registry:
    exercises: dict[str, Exercise] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.exercises.values())

    def __len__(self):
        return len(self.exercises)

    def __getitem__(self, exercise_id: str) -> Exercise:
        try:
            return self.exercises[exercise_id]
        except KeyError:
            known = ", ".join(self.exercises) or "none"
            raise KeyError(f"no exercise {exercise_id!r} in the registry (known: {known})") \
                from None

    def __contains__(self, exercise_id) -> bool:
        return exercise_id in self.exercises

    def by_target(self) -> dict[str, str]:
        """``{target: exercise id}``."""
        return {t: ex.id for ex in self for t in ex.targets}


def load_registry(path: str | Path | None = None) -> Registry:
    """Read and validate ``exercises.json`` (default: the one beside this module)."""
    path = Path(path) if path else Path(__file__).with_name("exercises.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RegistryError(f"cannot read the exercise registry {path}: {e}") from None
    if not isinstance(raw, list):
        raise RegistryError(f"{path}: the registry must be a JSON list of exercises")
    problems, reg, seen_targets = [], Registry(), {}
    for i, entry in enumerate(raw):
        where = f"{path} entry {i} ({entry.get('id', '?') if isinstance(entry, dict) else '?'})"
        try:
            ex = _exercise(entry)
        except (TypeError, ValueError, KeyError) as e:
            problems.append(f"{where}: {e}")
            continue
        if ex.id in reg.exercises:
            problems.append(f"{where}: duplicate id {ex.id}")
        for t in ex.targets:
            if t in seen_targets:
                problems.append(f"{where}: target {t} is already in exercise {seen_targets[t]}")
            seen_targets[t] = ex.id
        reg.exercises[ex.id] = ex
    if problems:
        raise RegistryError("invalid exercise registry:\n  " + "\n  ".join(problems))
    return reg


def _exercise(e) -> Exercise:
    if not isinstance(e, dict):
        raise TypeError("an exercise must be a JSON object")
    unknown = set(e) - {"id", "title", "lesson", "targets", "points", "hint"}
    if unknown:
        raise KeyError(f"unknown keys {sorted(unknown)}")
    ex_id, lesson, targets = e["id"], e["lesson"], e["targets"]
    if not isinstance(ex_id, str) or not ID_RE.match(ex_id):
        raise ValueError(f"id must look like '02.3', got {ex_id!r}")
    m = LESSON_RE.match(lesson) if isinstance(lesson, str) else None
    if not m or m.group(1) != ex_id[:2]:
        raise ValueError(f"lesson must be a notebook name starting with {ex_id[:2]}_, "
                         f"got {lesson!r}")
    if not isinstance(targets, list) or not targets:
        raise ValueError("targets must be a non-empty list of 'path.py:qualname'")
    for t in targets:
        if not isinstance(t, str) or not re.match(r"^[\w/.-]+\.py:[\w.<>]+$", t):
            raise ValueError(f"target {t!r} is not 'path/to/file.py:Qual.name'")
    points = e.get("points", 1)
    if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
        raise ValueError(f"points must be a positive number, got {points!r}")
    if not isinstance(e["title"], str) or not e["title"].strip():
        raise ValueError("title must be a non-empty string")
    return Exercise(ex_id, e["title"], lesson, tuple(targets), points, str(e.get("hint", "")))


def find_regions(source: str, path: str = "<string>") -> list[Region]:
    """The solution regions of a Python ``source``, each with its enclosing qualified name.

    Raises RegionError for an END without BEGIN, a BEGIN inside a region, a region left open,
    or an END indented differently from its BEGIN.
    """
    spans, open_at = [], None
    for n, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if text.startswith(BEGIN):
            if open_at is not None:
                raise RegionError(path, n, f"BEGIN SOLUTION inside the region opened at line "
                                           f"{open_at[0]} (regions cannot nest)")
            open_at = (n, indent)
        elif text.startswith(END):
            if open_at is None:
                raise RegionError(path, n, "END SOLUTION without a BEGIN SOLUTION before it")
            if indent != open_at[1]:
                raise RegionError(path, n, f"END SOLUTION is not indented like the BEGIN "
                                           f"SOLUTION at line {open_at[0]}")
            spans.append((open_at[0], n, open_at[1]))
            open_at = None
    if open_at is not None:
        raise RegionError(path, open_at[0], "BEGIN SOLUTION is never closed by END SOLUTION")
    if not spans:
        return []
    scopes, lines = _scopes(source, path), source.splitlines()
    regions = []
    for begin, end, indent in spans:
        # the END comment may lie after the function's last statement: use the last code line
        code = [n for n in range(begin + 1, end) if lines[n - 1].strip()
                and not lines[n - 1].strip().startswith("#")]
        last = code[-1] if code else begin
        inside = [(q, a, b) for q, a, b in scopes if a <= begin and last <= b]
        qualname = max(inside, key=lambda s: s[1])[0] if inside else "<module>"
        regions.append(Region(path, begin, end, indent, qualname))
    return regions


_PARSE_LOCK = threading.Lock()  # CPython 3.11's ast.parse is not safe in parallel threads


def _scopes(source: str, path: str) -> list[tuple[str, int, int]]:
    """(qualname, first line, last line) of every function and class in ``source``."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise RegionError(path, e.lineno or 0, f"cannot parse: {e.msg}") from None
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                q = f"{prefix}{child.name}"
                out.append((q, child.lineno, child.end_lineno))
                visit(child, q + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def qualnames(source: str, path: str = "<string>") -> set[str]:
    return {q for q, _, _ in _scopes(source, path)} | {"<module>"}


def package_files(root: Path) -> list[Path]:
    """The package's Python files under ``root``, sorted."""
    pkg = Path(root) / PACKAGE
    return sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)


def package_regions(root: str | Path = REPO_ROOT) -> list[Region]:
    """Every solution region in the package under ``root``."""
    root = Path(root)
    regions = []
    for p in package_files(root):
        regions += find_regions(p.read_text(encoding="utf-8"), p.relative_to(root).as_posix())
    return regions


def assign(regions, registry: Registry) -> tuple[dict[str, list[Region]], list[Region]]:
    """``({exercise id: its regions}, [regions in no registered target])``."""
    by_target = registry.by_target()
    owned: dict[str, list[Region]] = {ex.id: [] for ex in registry}
    orphans = []
    for r in regions:
        ex_id = by_target.get(r.target)
        (owned[ex_id] if ex_id else orphans).append(r)
    return owned, orphans


def check_consistency(root: str | Path = REPO_ROOT, registry: Registry | None = None) -> list[str]:
    """Disagreements between the registry and the code under ``root`` (empty when consistent)."""
    root = Path(root)
    registry = registry if registry is not None else load_registry()
    problems = []
    try:
        regions = package_regions(root)
    except RegionError as e:
        return [str(e)]
    owned, orphans = assign(regions, registry)
    for r in orphans:
        problems.append(f"{r.path}:{r.begin}: solution region in {r.qualname} belongs to no "
                        f"registered exercise (add '{r.target}' to the targets of one in "
                        f"tinyllm/course/exercises.json)")
    with_region = {r.target for r in regions}
    for ex in registry:
        for t in ex.targets:
            file, qual = t.split(":", 1)
            f = root / file
            if not f.is_file():
                problems.append(f"exercise {ex.id}: target {t}: no file {file}")
            elif qual not in qualnames(f.read_text(encoding="utf-8"), file):
                problems.append(f"exercise {ex.id}: target {t}: no function or class {qual} "
                                f"in {file}")
            elif t not in with_region:
                problems.append(f"exercise {ex.id}: target {t} has no solution region")
    return problems
