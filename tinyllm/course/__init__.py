"""The course tooling: exercise registry, student edition, grading and in-notebook checks.

    import tinyllm.course
    tinyllm.course.check("02.3")          # run exercise 02.3's tests, explain the result

From a terminal: ``python -m tinyllm.course student OUT``, ``... grade [--lesson 02] [--json
results.json]``, ``... verify``, ``... regions`` (see ``tinyllm.course.cli``). Nothing else in
tinyllm imports this package.
"""

from tinyllm.course.check import check
from tinyllm.course.registry import Exercise, load_registry
from tinyllm.course.student import build_student_edition, stub_regions

__all__ = ["check", "load_registry", "Exercise", "stub_regions", "build_student_edition"]
