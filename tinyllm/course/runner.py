"""Start pytest with the course plugin in a tree, and read its report back.

This module needs only the standard library: ``tinyllm course --help`` and the student edition's
tools import it on a plain install. pytest is needed when tests actually run; without it
``require_pytest`` raises a CourseError that says how to install it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tinyllm.course.project import CourseError

PLUGIN = Path(__file__).with_name("plugin.py")
_RUNNER = (
    "import importlib.util, sys, pytest\n"
    "spec = importlib.util.spec_from_file_location('tinyllm_course_plugin', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(mod)\n"
    "sys.exit(pytest.main(sys.argv[2:], plugins=[mod]))\n"
)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # blocked, or half-imported
        return False


def require_pytest() -> None:
    if not _has("pytest"):
        raise CourseError('grading runs the tests with pytest, which is not installed here: '
                          'pip install -e ".[course]" in your project (or pip install pytest '
                          'pytest-timeout)')


def has_pytest_timeout() -> bool:
    return _has("pytest_timeout")


def tree_env(root, env: dict | None = None) -> dict:
    """The environment of a process that must import ``root``'s tinyllm."""
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [full.get("PYTHONPATH")] if p])
    full["TINYLLM_COURSE_ROOT"] = str(Path(root).resolve())
    full.update(env or {})
    return full


def run_pytest(root, args, *, timeout: float | None = None, env: dict | None = None):
    """Run pytest in ``root`` with the course plugin; return ``(records, returncode, output)``.

    ``records`` are the report's JSON objects in order. ``timeout`` bounds the whole process
    (per-test limits are pytest-timeout's ``--timeout``, passed in ``args``).
    """
    require_pytest()
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="tinyllm-course-") as tmp:
        report = Path(tmp) / "report.jsonl"
        report.touch()
        cmd = [sys.executable, "-c", _RUNNER, str(PLUGIN), "-p", "no:cacheprovider",
               "--course-report", str(report), *args]
        try:
            proc = subprocess.run(cmd, cwd=root, env=tree_env(root, env), capture_output=True,
                                  text=True, timeout=timeout)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout or b""
            output = out.decode(errors="replace") if isinstance(out, bytes) else out
            code, output = -9, output + f"\n(the test run was stopped after {timeout} s)"
        records = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    return records, code, output
