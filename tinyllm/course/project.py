"""Which tree is graded: the project the student works in, and the ``tinyllm`` they import.

A *project tree* is a folder holding ``tinyllm/__init__.py`` and ``tinyllm/course/exercises.json``
(the reference repository, or a student edition). ``check()`` and ``tinyllm course grade`` grade
the project that contains the working directory (a notebook kernel's working directory is
``<project>/lessons``), and refuse when the ``tinyllm`` imported by this Python process comes from
another tree: the notebook's demo cells would run that other tree's code, and the grade would not
be the student's. ``environment()`` is lesson 00's check of the same rule.

Nothing here needs pytest.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "tinyllm"
REGISTRY = Path(PACKAGE) / "course" / "exercises.json"


class CourseError(RuntimeError):
    """The course tools cannot run as asked; the message says why and what to do."""


def is_project(path: Path) -> bool:
    return (path / PACKAGE / "__init__.py").is_file() and (path / REGISTRY).is_file()


def find_project(start: str | Path | None = None) -> Path | None:
    """The project tree containing ``start`` (default: the working directory), or None."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    for d in (here, *here.parents):
        if is_project(d):
            return d
    return None


def imported_root() -> Path:
    """The tree that this process's ``tinyllm`` was imported from."""
    import tinyllm

    return Path(tinyllm.__file__).resolve().parents[1]


def install_hint(project: Path) -> str:
    readme = "README.md" if (project / "STUDENT.md").is_file() else "lessons/README.md"
    return (f'install it: `cd {project} && pip install -e ".[course]"` (see its {readme}), '
            f"then restart the notebook kernel (or the terminal command)")


def mismatch_message(project: Path, imported: Path) -> str:
    return (f"this Python imports tinyllm from {imported}, but you are working in the project "
            f"{project}: the notebook would run the other tree's code and the grade would not "
            f"be yours. Make {project} the tinyllm that Python imports: " + install_hint(project))


def resolve_root(root=None, *, start=None) -> Path:
    """The tree to grade: ``root`` when given (an explicit choice: no identity check), else the
    project around the working directory, which must be the tree ``tinyllm`` was imported from.
    Outside any project, the imported tree itself."""
    if root is not None:
        root = Path(root).resolve()
        if not is_project(root):
            raise CourseError(f"{root} is not a tinyllm project (it has no {REGISTRY})")
        return root
    imported = imported_root()
    project = find_project(start)
    if project is None:
        return imported
    if project != imported:
        raise CourseError(mismatch_message(project, imported))
    return project


def environment(start=None) -> dict:
    """Lesson 00's check: ``{"imported": path, "project": path or None, "ok": bool, "message"}``.

    ``ok`` is False when the working directory lies in a project that is not the imported tree.
    """
    imported, project = imported_root(), find_project(start)
    ok = project is None or project == imported
    if not ok:
        message = mismatch_message(project, imported)
    elif project is None:
        message = (f"tinyllm is imported from {imported}; the working directory is in no "
                   f"tinyllm project, so checks grade {imported}")
    else:
        edition = "student edition" if (project / "STUDENT.md").is_file() else "reference edition"
        message = f"tinyllm is imported from {imported}, the project you work in ({edition})"
    return {"imported": imported, "project": project, "ok": ok, "message": message}


def check_environment(start=None) -> Path:
    """Raise CourseError on a mismatch (lesson 00 fails loudly); return the imported tree."""
    env = environment(start)
    if not env["ok"]:
        raise CourseError(env["message"])
    return env["imported"]
