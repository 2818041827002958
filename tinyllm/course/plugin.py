"""A pytest plugin that selects exercise tests and records their results, and its launcher.

The plugin needs only the standard library and pytest (no tinyllm import), so it can be loaded
from its file into a pytest process running in *any* tree: the repository, a student edition,
a temporary copy with one exercise stubbed. Options:

* ``--exercise 02.3`` (repeatable, or comma-separated): keep only tests marked with these ids;
* ``--lesson 02`` (repeatable): keep only tests of exercises of these lessons;
* ``--course-report PATH``: append one JSON object per line to PATH, as results come in
  (``collected`` items with their exercise ids, ``collect_error``, and ``test`` phase reports),
  so that a run killed half-way still leaves what it had.

``run_pytest`` starts ``python -c <runner>`` with the tree as working directory (so the tree's
``tinyllm`` is the one imported) and reads the report back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_RUNNER = (
    "import importlib.util, sys, pytest\n"
    "spec = importlib.util.spec_from_file_location('tinyllm_course_plugin', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(mod)\n"
    "sys.exit(pytest.main(sys.argv[2:], plugins=[mod]))\n"
)


def pytest_addoption(parser):
    group = parser.getgroup("tinyllm-course", "tinyllm course exercises")
    group.addoption("--exercise", action="append", default=[], metavar="ID",
                    help="run only the tests of these exercise ids (repeat or comma-separate)")
    group.addoption("--lesson", action="append", default=[], metavar="LL",
                    help="run only the exercise tests of these lessons, e.g. 02")
    group.addoption("--course-report", default=None, metavar="PATH",
                    help="append per-test results as JSON lines to PATH")


def _exercise_ids(item) -> list[str]:
    ids = []
    for mark in item.iter_markers("exercise"):
        ids += [str(a) for a in mark.args]
    return sorted(set(ids))


def _wanted(config):
    ids = {x.strip() for arg in config.getoption("exercise") for x in arg.split(",") if x.strip()}
    lessons = {x.strip() for a in config.getoption("lesson") for x in a.split(",") if x.strip()}
    return ids, lessons


def _write(config, record: dict) -> None:
    path = config.getoption("course_report")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    ids, lessons = _wanted(config)
    config._course_ids = {}
    keep, drop = [], []
    for item in items:
        ex = _exercise_ids(item)
        match = not (ids or lessons) or any(
            e in ids or e.split(".")[0] in lessons for e in ex)
        (keep if match else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    for item in items:
        config._course_ids[item.nodeid] = _exercise_ids(item)
        _write(config, {"event": "collected", "nodeid": item.nodeid,
                        "exercises": config._course_ids[item.nodeid]})


_CONFIG: list = []  # the running config, for the report hooks that don't receive it


def pytest_configure(config):
    _CONFIG[:] = [config]


def pytest_collectreport(report):
    if report.failed:
        _write(_CONFIG[0], {"event": "collect_error", "nodeid": report.nodeid,
                            "message": _message(report.longrepr)})


def _message(longrepr) -> str:
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skips: (path, line, reason)
        return str(longrepr[2])
    return str(longrepr or "")


def pytest_runtest_logreport(report):
    if report.when != "call" and report.passed:
        return
    config = _CONFIG[0]
    crash = getattr(report.longrepr, "reprcrash", None)
    seed = dict(report.user_properties).get("seed") if report.user_properties else None
    _write(config, {
        "event": "test", "nodeid": report.nodeid, "when": report.when,
        "exercises": getattr(config, "_course_ids", {}).get(report.nodeid, []),
        "outcome": report.outcome, "message": "" if report.passed else _message(report.longrepr),
        "crash_path": getattr(crash, "path", None), "crash_line": getattr(crash, "lineno", None),
        "seed": seed, "duration": round(report.duration, 4),
    })


# ---------------------------------------------------------------------------- the launcher
def run_pytest(root, args, *, timeout: float | None = None, env: dict | None = None):
    """Run pytest in ``root`` with this plugin; return ``(records, returncode, output)``.

    ``records`` are the report's JSON objects in order. ``timeout`` bounds the whole process
    (per-test limits are pytest-timeout's ``--timeout``, passed in ``args``).
    """
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="tinyllm-course-") as tmp:
        report = Path(tmp) / "report.jsonl"
        report.touch()
        cmd = [sys.executable, "-c", _RUNNER, str(Path(__file__).resolve()),
               "-p", "no:cacheprovider", "--course-report", str(report), *args]
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(root)] + [p for p in [full_env.get("PYTHONPATH")] if p])
        full_env.update(env or {})
        try:
            proc = subprocess.run(cmd, cwd=root, env=full_env, capture_output=True, text=True,
                                  timeout=timeout)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout or b""
            output = out.decode(errors="replace") if isinstance(out, bytes) else out
            code, output = -9, output + f"\n(the test run was stopped after {timeout} s)"
        records = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    return records, code, output


def has_pytest_timeout() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytest_timeout") is not None
