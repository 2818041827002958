"""``tinyllm course ...`` (also ``python -m tinyllm.course ...``).

Sub-commands:

* ``student OUT [--force]``: write the student edition of this repository into OUT;
* ``grade [--lesson 02] [--exercise 02.3] [--json results.json] [--timeout 60] [--root DIR]``:
  run the exercise tests of the project you are in (the one around the working directory, which
  must be the tinyllm that Python imports; ``--root`` grades another tree), print a table per
  lesson, optionally write Gradescope's results.json; exit status 0 when every graded exercise
  passes, 1 otherwise;
* ``check ID``: the in-notebook check from a terminal;
* ``verify [--exercise ID ...] [--workers 2]``: lesson order and stub honesty (each exercise's
  tests pass with every later exercise stubbed, and fail with it stubbed too); ``--alone``
  stubs each exercise alone instead; ``--mutants`` runs the mutation check
  (``tinyllm.course.mutants``: ``--seeds``, ``--sample``, ``--record FILE``);
* ``regions``: list the solution regions and their exercises, and registry problems.

``main(argv)`` takes the arguments after ``course`` and returns the exit status (2 for a usage
error, with a one-line message). Importing this module needs no pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinyllm.course.project import CourseError
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
    g.add_argument("--exercise", action="append", default=[], metavar="ID",
                   help="only this exercise (e.g. 02.3; repeatable)")
    g.add_argument("--json", metavar="PATH", help="write Gradescope's results.json here")
    g.add_argument("--timeout", type=float, default=60, help="seconds per test (default 60)")
    g.add_argument("--root", default=None, help="tree to grade (default: the project around "
                   "the current folder)")
    c = sub.add_parser("check", help="run one exercise's tests and explain the result")
    c.add_argument("id")
    c.add_argument("--timeout", type=float, default=60)
    c.add_argument("--root", default=None)
    v = sub.add_parser("verify", help="lesson order, stub honesty, and (--mutants) mutants")
    v.add_argument("--exercise", action="append", default=None, metavar="ID")
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--timeout", type=float, default=60)
    v.add_argument("--alone", action="store_true", help="stub each exercise alone")
    v.add_argument("--mutants", action="store_true", help="run the mutation check")
    v.add_argument("--seeds", default="random", help="with --mutants: comma-separated test "
                   "seeds, or 'random' (one fresh seed)")
    v.add_argument("--sample", type=int, default=None, metavar="N",
                   help="with --mutants: N mutants per exercise, drawn at random")
    v.add_argument("--record", metavar="FILE", help="with --mutants: write the figures to FILE "
                   "(Markdown)")
    v.add_argument("--list", action="store_true", help="with --mutants: only list them")
    sub.add_parser("regions", help="list solution regions and registry problems")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (RegistryError, RegionError, FileExistsError, KeyError, CourseError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2


def _student(args) -> int:
    from tinyllm.course.student import build_student_edition

    files = build_student_edition(args.out, root=args.root, force=args.force)
    print(f"wrote the student edition ({len(files)} files) to {args.out}")
    print(f"next: cd {args.out} and follow its README.md")
    return 0


def _grade(args) -> int:
    from tinyllm.course.grade import format_table, grade, gradescope, registry_for
    from tinyllm.course.project import resolve_root

    root = resolve_root(args.root)
    lessons = [x.zfill(2) for x in args.lesson]
    registry = registry_for(root)
    results = grade(root, lessons=lessons, timeout=args.timeout, registry=registry,
                    exercise_ids=args.exercise)
    if not results:
        print(f"no registered exercises in lesson(s) {', '.join(lessons)}", file=sys.stderr)
        return 2
    print(f"Grading {root}\n")
    print(format_table(results, registry))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(gradescope(results), indent=2) + "\n", "utf-8")
    return 0 if results and all(r.passed for r in results) else 1


def _check(args) -> int:
    from tinyllm.course.check import check

    return 0 if check(args.id, timeout=args.timeout, root=args.root) else 1


def _verify(args) -> int:
    if args.mutants:
        from tinyllm.course.mutants import main as mutants_main

        return mutants_main(args)
    from tinyllm.course.verify import verify_order, verify_stubs

    fn = verify_stubs if args.alone else verify_order
    problems, seconds = fn(REPO_ROOT, exercise_ids=args.exercise, workers=args.workers,
                           timeout=args.timeout)
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
