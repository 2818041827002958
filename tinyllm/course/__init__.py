"""The course tooling: exercise registry, student edition, grading and in-notebook checks.

    import tinyllm.course
    tinyllm.course.check("02.3")          # run exercise 02.3's tests, explain the result
    tinyllm.course.check_environment()    # lesson 00: is the imported tinyllm your project?

From a terminal: ``tinyllm course student OUT``, ``... grade [--lesson 02] [--exercise 02.3]
[--json results.json]``, ``... verify [--mutants]``, ``... regions`` (see
``tinyllm.course.cli``). Nothing else in tinyllm imports this package, and importing it needs
no pytest (the tests need it when they run).
"""

from tinyllm.course.check import check
from tinyllm.course.project import CourseError, check_environment, environment
from tinyllm.course.registry import Exercise, load_registry
from tinyllm.course.student import build_student_edition, stub_regions

__all__ = ["check", "check_environment", "environment", "CourseError", "load_registry",
           "Exercise", "stub_regions", "build_student_edition"]
