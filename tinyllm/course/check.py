"""``tinyllm.course.check("02.3")``: run one exercise's tests from a notebook, report kindly.

The tests run in a fresh pytest process in the project you work in (the one around the working
directory: a notebook in ``<project>/lessons`` grades ``<project>``), so an edited file is always
tested as it is on disk, however stale the notebook kernel's modules. When the kernel imports
``tinyllm`` from another tree, ``check`` refuses (``CourseError``, naming both trees): the demo
cells would run that tree's code. The report lists each test with a tick or a cross; a failure
shows its message in full (never a traceback), the seed of its random cases, and the
exercise's hint; a file of yours that does not compile or import is named with its line.
In IPython the report is shown as Markdown.
"""

from __future__ import annotations

from tinyllm.course.grade import (
    _STUB_RE,
    ExerciseResult,
    registry_for,
    run_exercise_tests,
    test_files_for,
)
from tinyllm.course.project import resolve_root

MAX_LINES = 40  # of one failure's message


def check(exercise_id: str, *, timeout: float = 60, root=None, show: bool = True) -> bool:
    """Run the tests of exercise ``exercise_id``; show a short report; True when all pass.

    ``root`` grades that tree instead of the project around the working directory.
    """
    root = resolve_root(root)
    registry = registry_for(root)
    ex = registry[str(exercise_id)]
    # collect only the test files that mention this exercise: collecting the whole suite
    # (PyTorch comparisons included) would cost many seconds per check
    files = test_files_for(root, [ex.id])
    run = run_exercise_tests(root, [ex.id], timeout=timeout, extra_args=files)
    result = ExerciseResult(ex, run.for_exercise(ex.id), run)
    if show:
        _show(report(result, registry))
    return result.passed


def report(result: ExerciseResult, registry) -> tuple[str, str]:
    """``(plain text, markdown)`` of one exercise's result."""
    ex, tests = result.exercise, result.tests
    n_pass = sum(t.outcome == "passed" for t in tests)
    head = f"Exercise {ex.id}: {ex.title}"
    broken = result.broken_here()
    if broken:
        detail = "\n".join(b.describe() for b in broken)
        return (f"{head}: your code does not run.\n" + _indent(detail, "  "),
                f"**{head}**: your code does not run:\n\n```\n{detail}\n```")
    mine = _stubbed(tests, ex.id)
    if mine and len(mine) == len(tests):
        line = "edit " + ", ".join(t.replace(":", ": ", 1) for t in ex.targets)
        return (f"{head}: not implemented yet.\n  {line}",
                f"**{head}**: not implemented yet: {line}")
    if result.passed:
        verdict = f"all {n_pass} tests pass. Well done!" if n_pass > 1 else "the test passes."
    else:
        verdict = f"{n_pass} of {len(tests)} tests pass." if tests else result.summary
    text, md = [f"{head}: {verdict}"], [f"**{head}**: {verdict}", ""]
    for t in tests:
        mark = {"passed": "✓", "skipped": "-"}.get(t.outcome, "✗")
        text.append(f"  {mark} {t.name}")
        md.append(f"- {mark} `{t.name}`")
        if t.outcome in ("passed", "skipped"):
            continue
        detail = _explain(t, ex.id, registry)
        text += ["      " + ln for ln in detail.splitlines()]
        md += ["", "  ```", *("  " + ln for ln in detail.splitlines()), "  ```"]
    blocked = all((m := _STUB_RE.search(t.message or "")) and m.group(1) != ex.id
                  for t in tests if t.outcome in ("failed", "error"))
    if not result.passed and ex.hint and not (tests and blocked):
        text.append(f"Hint: {ex.hint}")
        md += ["", f"*Hint:* {ex.hint}"]
    return "\n".join(text), "\n".join(md)


def _stubbed(tests, exercise_id) -> list:
    return [t for t in tests if t.outcome in ("failed", "error")
            and (m := _STUB_RE.search(t.message or "")) and m.group(1) == exercise_id]


def _explain(test, exercise_id, registry) -> str:
    msg = test.message or ""
    m = _STUB_RE.search(msg)
    if m and m.group(1) == exercise_id:
        return "not implemented yet (your code still raises NotImplementedError)"
    if m:
        other = m.group(1)
        title = registry[other].title if other in registry else ""
        return f"needs exercise {other} ({title}) first: it is not implemented yet"
    if msg.startswith("Timeout") or "Timeout" in msg and "pytest-timeout" in msg:
        return f"took too long ({first_sentence(msg)}): an endless loop?"
    lines = [ln.rstrip() for ln in msg.splitlines() if ln.strip()]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines)"]
    if test.seed is not None and "TINYLLM_TEST_SEED" not in msg:
        lines.append(f"(random seed {test.seed}: replay with TINYLLM_TEST_SEED={test.seed})")
    return "\n".join(lines) or "failed"


def _indent(text: str, pad: str) -> str:
    return "\n".join(pad + ln for ln in text.splitlines())


def first_sentence(text: str) -> str:
    return text.splitlines()[0].strip() if text else ""


def _show(texts) -> None:
    text, md = texts
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from IPython.display import display

        display({"text/markdown": md, "text/plain": text}, raw=True)
    else:
        print(text)
