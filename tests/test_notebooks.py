"""The lesson notebooks: committed clean, and every one runs from top to bottom.

* ``test_notebook_is_clean`` (fast): each ``lessons/*.ipynb`` is committed without outputs or
  execution counts, and every ``check("LL.N")`` it calls names an exercise of
  ``tinyllm/course/exercises.json``; ``test_notebook_checks_its_exercises`` (fast): every
  exercise registered for a notebook has a ``check`` cell in it.
* ``test_notebook_runs`` (slow): executes each notebook with nbclient in *fast mode*
  (``TINYLLM_FAST=1``: the notebooks shrink their loops), kernel ``python3``, ``MPLBACKEND=Agg``,
  in a copy of the repository where every package exercise of a *later* lesson is stubbed
  (lesson order: no cell of lesson N needs what a student writes after it), working directory
  that copy's ``lessons/``; a failure shows the failing cell's source and error. New notebooks
  in ``lessons/`` are picked up automatically.

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_starts_with_autoreload(path):
    """Edits of the package reach the notebook: the first code cell loads autoreload."""
    first = next(_source(c) for c in _load(path)["cells"] if c["cell_type"] == "code")
    assert "%load_ext autoreload" in first and "%autoreload 2" in first, (
        f"{path.name}: the first code cell must be `%load_ext autoreload` and `%autoreload 2`")


def _lesson(path: Path) -> str:
    return path.name[:2]


@pytest.fixture(scope="module")
def lesson_tree():
    """One copy of the repository in which a notebook runs with every exercise of a later
    lesson stubbed, as a student who has done the lessons up to it has it."""
    from tinyllm.course.grade import registry_for
    from tinyllm.course.trees import Trees

    registry = registry_for(ROOT)
    trees = Trees(ROOT, registry, count=1)
    try:
        yield trees, registry
    finally:
        trees.close()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, monkeypatch, lesson_tree):
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

    trees, registry = lesson_tree
    tree = trees.all[0]
    later = [ex.id for ex in registry if ex.lesson_number > _lesson(path)]
    trees.set_state(tree, stubbed=later)
    nb = nbformat.read(tree.path / "lessons" / path.name, as_version=4)
    monkeypatch.setenv("TINYLLM_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tree.path)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tree.path / "lessons")}})
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
