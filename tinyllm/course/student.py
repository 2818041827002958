"""The student edition: the repository with every reference solution replaced by a stub.

* Python files of the package: each solution region (the BEGIN and END marker lines included)
  becomes two lines at the BEGIN line's indentation::

      # TODO Exercise 02.3: write your code here, in place of the raise below
      raise NotImplementedError("Exercise 02.3: Topological order. See lessons/02_autograd.ipynb")

  so every module still imports and the first call of an unsolved exercise says what to do.
* Notebooks: a code cell tagged ``solution`` becomes ``# Exercise: <its first comment line>``
  plus a ``raise NotImplementedError(...)``; a markdown cell tagged ``solution`` becomes
  "*Your answer here.*". Both lose their outputs and get the tag ``exercise`` instead.
* Instructor-only files (``INSTRUCTOR_ONLY``) are left out; ``README.md`` becomes the student's
  (``STUDENT_README``: the steps from the folder to the first green check) and ``STUDENT.md``
  marks the folder as a student edition.

Files are those git tracks plus untracked ones it does not ignore (or, outside a git checkout,
a walk skipping caches). The output is deterministic: building twice gives identical bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tinyllm.course.registry import (
    _PARSE_LOCK,
    PACKAGE,
    REPO_ROOT,
    Registry,
    assign,
    find_regions,
    load_registry,
)

INSTRUCTOR_ONLY = ("tests/test_student_edition.py", "tests/test_exercise_registry.py",
                   "tinyllm/course/mutants.json", "docs/mutation.md")
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
             ".venv", "venv", "build", "dist", ".hypothesis", ".eggs"}
MARKER = "STUDENT.md"
STUDENT_NOTE = """# tinyllm, student edition

This folder is a student edition of tinyllm (made by `tinyllm course student`): every package
exercise is a stub. Start with README.md.
"""
STUDENT_README = """# tinyllm: the course, student edition

You build a small deep-learning framework in NumPy and, on top of it, the language models that
made the field: a counting bigram model, Bengio's neural language model, GPT and BERT. The
lessons are Jupyter notebooks in `lessons/`; the pieces you write are stubs in the package
`tinyllm/`, each a `raise NotImplementedError("Exercise LL.N: ...")` with a `# TODO` line above
it, and the tests grade them.

## From this folder to your first green check

You need Python 3.10 or newer. In a terminal, in this folder (the one that holds this README):

```bash
python3 -m venv .venv
. .venv/bin/activate                  # Windows: .venv\\Scripts\\activate
pip install -e ".[course]"            # NumPy, matplotlib, JupyterLab, pytest; this folder is
                                      # the tinyllm that Python imports from now on
tinyllm course grade --exercise 02.1  # 0 points, "not implemented yet": right, for now
```

Then open the lessons:

```bash
cd lessons
jupyter lab                           # open 00_welcome.ipynb, run every cell
```

Lesson 00's environment check must name **this folder** as the one tinyllm is imported from;
it stops with an error that says what to do when it is another copy (another install, another
virtual environment, a kernel started elsewhere).

Your first exercise: open `tinyllm/ops.py`, find `Exercise 02.1` (the backward passes of `Mul`
and `Div`, explained in `lessons/02_autograd.ipynb`), replace the two stub lines with your code,
and run the check, in the lesson's check cell or in a terminal:

```bash
tinyllm course check 02.1             # the same as check("02.1") in a notebook
```

Green means every test of the exercise passes on *your* file as it is on disk.

## Grading

```bash
tinyllm course grade                  # every exercise: a table per lesson and the total
tinyllm course grade --lesson 03      # one lesson
tinyllm course grade --json results.json   # Gradescope's format
```

Both `check` and `grade` grade the project around the folder you run them in, and refuse (naming
both folders) when the tinyllm that Python imports is another one: run
`pip install -e ".[course]"` here again and restart the kernel.

The corpora (Tiny Shakespeare, the Tang poems) are read from `$TINYLLM_DATA_DIR` or `data/` (see
`data/README.md`); the notebooks never download anything. Do the exercises in order: later
lessons use what earlier ones built, and no exercise needs a later one.
"""


STUB_NOQA = "# ruff: noqa: E501, F401, F821, F841, B007  (stubbed exercises: see the TODO lines)\n"


def stub_regions(source: str, exercise_ids=None, registry: Registry | None = None,
                 path: str | None = None) -> str:
    """Replace the solution regions of one Python file's ``source`` by stubs.

    ``path`` (relative to the repository root, e.g. ``"tinyllm/ops.py"``) lets the registry
    name each region's exercise; without it, or for a region in no registered target, the stub
    names the file and function instead. With ``exercise_ids``, only the regions of those
    exercises are stubbed (others keep their solution and markers). The result is compiled
    to make sure it is still valid Python.
    """
    name = path or "<string>"
    regions = find_regions(source, name)
    if not regions:
        return source
    if registry is None and (path is not None or exercise_ids is not None):
        registry = load_registry()
    owner = {}
    if registry is not None and path is not None:
        owned, _ = assign(regions, registry)
        owner = {(r.begin, r.end): ex_id for ex_id, rs in owned.items() for r in rs}
    wanted = None if exercise_ids is None else {str(e) for e in exercise_ids}
    lines = source.splitlines(keepends=True)
    stubbed = False
    for r in reversed(regions):
        ex_id = owner.get((r.begin, r.end))
        if wanted is not None and ex_id not in wanted:
            continue
        if ex_id:
            ex = registry[ex_id]
            todo, message = f"TODO Exercise {ex.id}", ex.stub_message()
        else:
            todo = "TODO Exercise"
            message = f"Exercise in {name}:{r.qualname}: write this part"
        stub = (f"{r.indent}# {todo}: write your code here, in place of the raise below\n"
                f"{r.indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})\n")
        lines[r.begin - 1: r.end] = [stub]
        stubbed = True
    if stubbed:  # set-up lines unused and code after the raise undefined until it is solved
        lines.insert(0, STUB_NOQA)
    out = "".join(lines)
    with _PARSE_LOCK:  # a SyntaxError here names the file: the region was misplaced
        compile(out, name, "exec")
    return out


def stub_notebook(text: str) -> str:
    """Replace the cells tagged ``solution`` of a notebook (its JSON text) by exercise stubs."""
    nb = json.loads(text)
    changed = False
    for cell in nb.get("cells", []):
        meta = cell.setdefault("metadata", {})
        tags = meta.get("tags", [])
        if "solution" not in tags:
            continue
        changed = True
        meta["tags"] = [t for t in tags if t != "solution"] + ["exercise"]
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        if cell.get("cell_type") == "code":
            first = next((ln.strip().lstrip("#").strip() for ln in src.splitlines()
                          if ln.strip().startswith("#")), "") or "write your code in this cell"
            message = json.dumps(f"Exercise: {first}", ensure_ascii=False)
            cell["source"] = f"# Exercise: {first}\nraise NotImplementedError({message})"
            cell["outputs"], cell["execution_count"] = [], None
        else:
            cell["source"] = "*Your answer here.*"
    if not changed:
        return text
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def list_files(root: str | Path) -> list[str]:
    """Relative paths (forward slashes, sorted) of the files that make up the repository."""
    root = Path(root)
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=root, capture_output=True, check=True)
        names = [n for n in out.stdout.decode().split("\0") if n]
        if names:
            return sorted(n for n in set(names) if (root / n).is_file())
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS
                             and not d.endswith(".egg-info"))
        for f in filenames:
            if not f.endswith((".pyc", ".pyo")):
                found.append((Path(dirpath) / f).relative_to(root).as_posix())
    return sorted(found)


def student_file(rel: str, data: bytes, registry: Registry) -> bytes:
    """The student edition's bytes of the file ``rel`` whose original bytes are ``data``."""
    if rel.startswith(PACKAGE + "/") and rel.endswith(".py"):
        return stub_regions(data.decode("utf-8"), registry=registry, path=rel).encode("utf-8")
    if rel.endswith(".ipynb"):
        return stub_notebook(data.decode("utf-8")).encode("utf-8")
    return data


def build_student_edition(out: str | Path, root: str | Path = REPO_ROOT,
                          registry: Registry | None = None, force: bool = False) -> list[str]:
    """Write the student edition of ``root`` into ``out``; return the files written.

    ``out`` must be empty or absent; with ``force`` an earlier student edition there (it has a
    STUDENT.md) is replaced.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    if registry is None:
        reg_file = root / PACKAGE / "course" / "exercises.json"
        registry = load_registry(reg_file if reg_file.is_file() else None)
    if out.exists() and any(out.iterdir()):
        if not (force and (out / MARKER).is_file()):
            raise FileExistsError(f"{out} is not empty; choose a new folder (or pass --force "
                                  f"to replace an earlier student edition there)")
        shutil.rmtree(out)
    files = [f for f in list_files(root) if f not in INSTRUCTOR_ONLY
             and not (root / f).resolve().is_relative_to(out)]
    for rel in files:
        src, dst = root / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(student_file(rel, src.read_bytes(), registry))
        shutil.copymode(src, dst)
    (out / MARKER).write_text(STUDENT_NOTE, encoding="utf-8")
    (out / "README.md").write_text(STUDENT_README, encoding="utf-8")
    return sorted(set(files) | {MARKER, "README.md"})
