"""The lesson notebooks: committed clean, and every one runs from top to bottom.

* ``test_notebook_is_clean`` (fast): each ``lessons/*.ipynb`` is committed without outputs or
  execution counts, and every ``check("LL.N")`` it calls names an exercise of
  ``tinyllm/course/exercises.json``; ``test_notebook_checks_its_exercises`` (fast): every
  exercise registered for a notebook has a ``check`` cell in it.
* ``test_notebook_runs`` (slow): executes each notebook with nbclient in *fast mode*
  (``TINYLLM_FAST=1``: the notebooks shrink their loops), kernel ``python3``, working
  directory ``lessons/``, ``MPLBACKEND=Agg``; a failure shows the failing cell's source and
  error. New notebooks in ``lessons/`` are picked up automatically.

The notebooks need the reference solutions (their exercise cells hold them), so the run test
skips in the student edition.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
REGISTRY = ROOT / "tinyllm" / "course" / "exercises.json"
NOTEBOOKS = sorted(LESSONS.glob("*.ipynb"))
CHECK_RE = re.compile(r"""\bcheck\(\s*["'](\d\d\.\d+)["']""")
CELL_TIMEOUT = 300


def _ids(paths):
    return [p.name for p in paths]


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _registered_ids() -> set:
    return {e["id"] for e in json.loads(REGISTRY.read_text(encoding="utf-8"))}


def test_lessons_exist():
    assert NOTEBOOKS, f"no notebooks found in {LESSONS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_clean(path):
    nb = _load(path)
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    assert kernel == "python3", f"{path.name}: kernelspec name is {kernel!r}, expected 'python3'"
    problems = []
    known = _registered_ids()
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        first = (_source(cell).strip().splitlines() or [""])[0][:60]
        if cell.get("outputs"):
            problems.append(f"cell {i} ({first!r}) has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} ({first!r}) has execution count {cell['execution_count']}")
        for ex_id in CHECK_RE.findall(_source(cell)):
            if ex_id not in known:
                problems.append(f"cell {i} calls check({ex_id!r}), which is not in {REGISTRY.name}")
    assert not problems, (
        f"{path.name}: " + "; ".join(problems)
        + " (clear the outputs before committing: Kernel > Restart & Clear Output, or "
        "`jupyter nbconvert --clear-output --inplace`)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_checks_its_exercises(path):
    """Every exercise registered for this notebook has a check() cell in it."""
    registry = json.loads(REGISTRY.read_text(encoding="utf-8"))
    mine = {e["id"] for e in registry if e["lesson"] == path.name}
    checked = {i for c in _load(path)["cells"] if c["cell_type"] == "code"
               for i in CHECK_RE.findall(_source(c))}
    missing = sorted(mine - checked, key=lambda i: tuple(int(x) for x in i.split(".")))
    assert not missing, (f"{path.name} has no check() cell for its exercises {missing} "
                         f"(add `check(\"{missing[0]}\")` where the lesson asks for it)")


def _exercise_test_files(notebook: dict) -> list[str]:
    """Test files holding the exercise tests that the notebook's check() calls run.

    ``check`` collects the whole test suite for every call (seconds each); in CI the kernel
    gets ``PYTEST_ADDOPTS`` naming only the files that mention the exercise ids, so each check
    collects just those. The result is the same: the checks select their tests by marker.
    """
    ids = {i for c in notebook["cells"] if c["cell_type"] == "code"
           for i in CHECK_RE.findall(_source(c))}
    if not ids:
        return []
    files = []
    for f in sorted((ROOT / "tests").glob("test_*.py")):
        text = f.read_text(encoding="utf-8")
        if "pytest.mark.exercise" in text and any(f'"{i}"' in text or f"'{i}'" in text
                                                  for i in ids):
            files.append(f.relative_to(ROOT).as_posix())
    return files


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="running the notebooks needs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="running the notebooks needs nbclient")
    pytest.importorskip("ipykernel", reason="running the notebooks needs ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel (python -m ipykernel install --user)")
    if (ROOT / "STUDENT.md").is_file():
        pytest.skip("student edition: the notebooks need the exercise solutions to run")

    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("TINYLLM_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    files = _exercise_test_files(nb)
    if files:
        monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(
            [os.environ.get("PYTEST_ADDOPTS", ""), *files]).strip())
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(LESSONS)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellTimeoutError as e:
        failure = f"a cell ran longer than {CELL_TIMEOUT} s: {_plain(str(e))}"
    except nbclient.exceptions.CellExecutionError:
        failure = _describe_failure(nb)
    if failure is not None:
        pytest.fail(f"{path.name}: {failure}", pytrace=False)


ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    return ANSI_RE.sub("", text)


def _describe_failure(nb) -> str:
    """The failing cell's number, source and error (the executed notebook keeps them)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                trace = _plain("\n".join(out.get("traceback", [])))
                bar = "-" * 70
                return (f"cell {i} failed: {out.get('ename')}: {_plain(out.get('evalue', ''))}\n"
                        f"{bar}\n{_source(cell)}\n{bar}\n{trace}")
    return "a cell failed (no error output was recorded)"
