"""``tinyllm course ...`` (also ``python -m tinyllm.course ...``).

Sub-commands:

* ``student OUT [--force]``: write the student edition of this repository into OUT;
* ``grade [--lesson 02] [--json results.json] [--timeout 60] [--root DIR]``: run the exercise
  tests, print a table per lesson, optionally write Gradescope's results.json;
  exit status 0 when every graded exercise passes, 1 otherwise;
* ``check ID``: the in-notebook check from a terminal;
* ``verify [--exercise ID ...] [--workers 2]``: the honesty check (each exercise alone stubbed
  must fail its tests);
* ``regions``: list the solution regions and their exercises, and registry problems.

``main(argv)`` takes the arguments after ``course`` and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinyllm.course.registry import REPO_ROOT, RegionError, RegistryError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyllm course", description="course exercises: student "
                                "edition, grading and checks")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write the student edition into OUT")
    s.add_argument("out")
    s.add_argument("--root", default=str(REPO_ROOT), help="repository to copy (default: this)")
    s.add_argument("--force", action="store_true", help="replace an earlier student edition")
    g = sub.add_parser("grade", help="run the exercise tests and score them")
    g.add_argument("--lesson", action="append", default=[], help="only this lesson (e.g. 02)")
    g.add_argument("--json", metavar="PATH", help="write Gradescope's results.json here")
    g.add_argument("--timeout", type=float, default=60, help="seconds per test (default 60)")
    g.add_argument("--root", default=None, help="tree to grade (default: the current folder "
                   "when it holds tinyllm/, else this repository)")
    c = sub.add_parser("check", help="run one exercise's tests and explain the result")
    c.add_argument("id")
    c.add_argument("--timeout", type=float, default=60)
    v = sub.add_parser("verify", help="check that each exercise's tests fail on its stub")
    v.add_argument("--exercise", action="append", default=None)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--timeout", type=float, default=60)
    sub.add_parser("regions", help="list solution regions and registry problems")
    return p


def _grade_root(arg) -> Path:
    if arg:
        return Path(arg).resolve()
    cwd = Path.cwd()
    return cwd if (cwd / "tinyllm" / "__init__.py").is_file() else REPO_ROOT


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (RegistryError, RegionError, FileExistsError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2


def _student(args) -> int:
    from tinyllm.course.student import build_student_edition

    files = build_student_edition(args.out, root=args.root, force=args.force)
    print(f"wrote the student edition ({len(files)} files) to {args.out}")
    return 0


def _grade(args) -> int:
    from tinyllm.course.grade import format_table, grade, gradescope

    lessons = [x.zfill(2) for x in args.lesson]
    results = grade(_grade_root(args.root), lessons=lessons, timeout=args.timeout)
    if not results:
        print(f"no registered exercises in lesson(s) {', '.join(lessons)}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(gradescope(results), indent=2) + "\n", "utf-8")
    return 0 if results and all(r.passed for r in results) else 1


def _check(args) -> int:
    from tinyllm.course.check import check

    return 0 if check(args.id, timeout=args.timeout) else 1


def _verify(args) -> int:
    from tinyllm.course.grade import verify_stubs

    problems, seconds = verify_stubs(REPO_ROOT, exercise_ids=args.exercise,
                                     workers=args.workers, timeout=args.timeout)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s), {seconds:.1f} s")
    return 1 if problems else 0


def _regions(args) -> int:
    from tinyllm.course.registry import assign, check_consistency, load_registry, package_regions

    registry = load_registry()
    owned, orphans = assign(package_regions(REPO_ROOT), registry)
    for ex_id, regions in owned.items():
        for r in regions:
            print(f"{ex_id:<6} {r.path}:{r.begin}-{r.end} {r.qualname}")
    for r in orphans:
        print(f"{'?':<6} {r.path}:{r.begin}-{r.end} {r.qualname}")
    problems = check_consistency(REPO_ROOT, registry)
    for p in problems:
        print("problem:", p)
    return 1 if problems else 0


_COMMANDS = {"student": _student, "grade": _grade, "check": _check, "verify": _verify,
             "regions": _regions}
