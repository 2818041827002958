"""A pytest plugin that selects exercise tests and records their results.

The plugin needs only the standard library and pytest (no tinyllm import), so it can be loaded
from its file into a pytest process running in *any* tree: the repository, a student edition,
a temporary copy with some exercises stubbed (``tinyllm.course.runner`` starts it). Options:

* ``--exercise 02.3`` (repeatable, or comma-separated): keep only tests marked with these ids;
* ``--lesson 02`` (repeatable): keep only tests of exercises of these lessons;
* ``--course-report PATH``: append one JSON object per line to PATH, as results come in, so that
  a run killed half-way still leaves what it had. Events: ``broken`` (a file of the graded
  package that does not compile or import, with its path, line and source line), ``collected``
  (a test with its exercise ids), ``collect_error``, and ``test`` (one phase report, with a
  message for a student: the assertion's own message without pytest's introspection, or the
  exception and the line of the student's code that raised it).

With a report, the session starts by compiling every file of the graded tree's package and
importing the modules that the selected exercises' targets live in; when the launcher names the
graded tree (``TINYLLM_COURSE_ROOT``) and the ``tinyllm`` found first is another tree, it stops.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import traceback
from pathlib import Path

import pytest

_STATE: dict = {}  # config, details of failures by (nodeid, when), the graded package folder


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


def pytest_configure(config):
    _STATE.clear()
    root = Path(os.environ.get("TINYLLM_COURSE_ROOT") or config.rootpath).resolve()
    _STATE.update(config=config, details={}, root=root, package=root / "tinyllm")


# ---------------------------------------------------------------------------- preflight
def pytest_sessionstart(session):
    config = session.config
    if not config.getoption("course_report"):
        return
    root, package = _STATE["root"], _STATE["package"]
    if os.environ.get("TINYLLM_COURSE_ROOT"):
        spec = importlib.util.find_spec("tinyllm")
        found = Path(spec.origin).resolve().parents[1] if spec and spec.origin else None
        if found != root:
            _write(config, {"event": "broken", "path": None, "line": None, "source": "",
                            "message": f"the tests would import tinyllm from {found}, not from "
                                       f"the graded tree {root}"})
            pytest.exit("the graded tree is not the one imported", returncode=4)
    bad_files = set()
    for f in sorted(package.rglob("*.py")):
        if "__pycache__" in f.parts:
            continue
        try:
            compile(f.read_bytes(), str(f), "exec")
        except SyntaxError as e:
            bad_files.add(f)
            _write(config, {"event": "broken", "path": _rel(f), "line": e.lineno,
                            "source": (e.text or "").rstrip("\n"), "offset": e.offset,
                            "message": f"{type(e).__name__}: {e.msg}"})
    for name in _target_modules(config, root):
        path = root / (name.replace(".", "/") + ".py")
        if path in bad_files:
            continue
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as e:  # whatever the student's module raises
            frame = _student_frame(traceback.extract_tb(e.__traceback__))
            _write(config, {"event": "broken", "path": _rel(frame.filename) if frame else
                            _rel(path), "line": frame.lineno if frame else None,
                            "source": (frame.line or "") if frame else "",
                            "message": f"importing {name} failed: {type(e).__name__}: {e}"})


def _target_modules(config, root: Path) -> list[str]:
    """Modules holding the targets of the selected exercises (all exercises without a choice)."""
    try:
        registry = json.loads((root / "tinyllm" / "course" / "exercises.json").read_text("utf-8"))
    except (OSError, ValueError):
        return []
    ids, lessons = _wanted(config)
    names = []
    for e in registry if isinstance(registry, list) else []:
        if not isinstance(e, dict) or (ids or lessons) and not (
                e.get("id") in ids or str(e.get("id", ""))[:2] in lessons):
            continue
        for t in e.get("targets", []):
            mod = str(t).split(":")[0].removesuffix(".py").replace("/", ".")
            mod = mod.removesuffix(".__init__")
            if mod not in names:
                names.append(mod)
    return names


def _rel(path) -> str:
    p = Path(path).resolve()
    try:
        return p.relative_to(_STATE["root"]).as_posix()
    except ValueError:
        return str(path)


def _student_frame(frames):
    """The deepest frame in the graded package (the student's code), or None."""
    package = _STATE["package"]
    for fr in reversed(frames):
        try:
            Path(fr.filename).resolve().relative_to(package)
        except ValueError:
            continue
        return fr
    return None


# ---------------------------------------------------------------------------- selection
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


def pytest_collectreport(report):
    if report.failed:
        _write(_STATE["config"], {"event": "collect_error", "nodeid": report.nodeid,
                                  "message": _longrepr_message(report.longrepr)})


def _longrepr_message(longrepr) -> str:
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skips: (path, line, reason)
        return str(longrepr[2])
    text = str(longrepr or "")
    errors = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    return "\n".join(errors) or text


# ---------------------------------------------------------------------------- messages
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and report.failed:
        _STATE["details"][report.nodeid, report.when] = describe(call.excinfo)


def describe(excinfo) -> dict:
    """``{message, crash_path, crash_line}`` of a failure, for a student to act on."""
    exc = excinfo.value
    frames = traceback.extract_tb(excinfo.tb)
    mine = _student_frame(frames)
    kind = type(exc).__name__
    text = str(exc)
    if isinstance(exc, AssertionError):
        lines = text.splitlines()
        cut = next((i for i, ln in enumerate(lines) if i and ln.startswith("assert ")), None)
        message = "\n".join(lines[:cut]).rstrip() if cut else text
        if not message or message.startswith("assert "):  # a bare assert: name its line
            test = frames[-1] if frames else None
            where = f" at {_rel(test.filename)}:{test.lineno}: {test.line}" if test else ""
            message = f"a check failed{where}" + (f"\n{message}" if message else "")
    elif kind in ("Failed", "Skipped", "XFailed"):
        message = text
    else:
        message = f"{kind}: {text}" if text else kind
        if mine is not None and not isinstance(exc, NotImplementedError):
            message += f"\n(raised in your code at {_rel(mine.filename)}:{mine.lineno}: " \
                       f"{(mine.line or '').strip()})"
    crash = mine or (frames[-1] if frames else None)
    return {"message": message, "crash_path": _rel(crash.filename) if crash else None,
            "crash_line": crash.lineno if crash else None}


def pytest_runtest_logreport(report):
    if report.when != "call" and report.passed:
        return
    config = _STATE["config"]
    detail = _STATE["details"].pop((report.nodeid, report.when), None)
    if detail is None:
        crash = getattr(report.longrepr, "reprcrash", None)
        detail = {"message": "" if report.passed else _longrepr_message(report.longrepr),
                  "crash_path": getattr(crash, "path", None),
                  "crash_line": getattr(crash, "lineno", None)}
    seed = dict(report.user_properties).get("seed") if report.user_properties else None
    _write(config, {
        "event": "test", "nodeid": report.nodeid, "when": report.when,
        "exercises": getattr(config, "_course_ids", {}).get(report.nodeid, []),
        "outcome": report.outcome, "seed": seed, "duration": round(report.duration, 4),
        **detail,
    })
