"""The course tooling on a small synthetic repository (independent of the real exercises).

The fake repository has its own ``tinyllm`` package with three exercises: 01.1 (solved),
01.2 (wrong on purpose) and 01.3 (still a stub), its own registry and marked tests.
"""

import json
import sys
import textwrap

import pytest

from tinyllm.course import cli
from tinyllm.course.check import check
from tinyllm.course.grade import format_table, grade, gradescope
from tinyllm.course.registry import load_registry
from tinyllm.course.student import build_student_edition, stub_notebook, stub_regions
from tinyllm.course.verify import verify_order, verify_stubs

MATHY = '''\
"""Toy exercises."""


def double(x):
    """2 x."""
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION


class Acc:
    def __init__(self):
        self.total = 0

    def add(self, v):
        # BEGIN SOLUTION
        self.total += v + 1  # wrong on purpose
        # END SOLUTION
        return self.total


def square(x):
    raise NotImplementedError("Exercise 01.3: Square. See lessons/01_intro.ipynb")
'''

TESTS = '''\
import pytest

from tinyllm.mathy import Acc, double, square


@pytest.mark.exercise("01.1")
def test_double():
    assert double(3) == 6


@pytest.mark.exercise("01.1")
@pytest.mark.parametrize("x", [0, 5])
def test_double_more(x):
    assert double(x) == x + x


@pytest.mark.exercise("01.2")
def test_add():
    a = Acc()
    assert a.add(2) == 2, "adding 2 to an empty accumulator"


@pytest.mark.exercise("01.3")
def test_square():
    assert square(3) == 9


def test_not_an_exercise():
    assert square(2) == 4
'''

REGISTRY = [
    {"id": "01.1", "title": "Doubling", "lesson": "01_intro.ipynb",
     "targets": ["tinyllm/mathy.py:double"], "points": 2, "hint": "twice"},
    {"id": "01.2", "title": "Accumulate", "lesson": "01_intro.ipynb",
     "targets": ["tinyllm/mathy.py:Acc.add"], "points": 3, "hint": "add v, nothing more"},
    {"id": "01.3", "title": "Square", "lesson": "01_intro.ipynb",
     "targets": ["tinyllm/mathy.py:square"], "points": 1},
]

SETUP_CFG = """\
[tool:pytest]
testpaths = tests
addopts = --strict-markers
markers =
    exercise(id): course exercise
"""


def make_repo(root, mathy=MATHY, tests=TESTS, registry=REGISTRY):
    (root / "tinyllm" / "course").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "lessons").mkdir()
    (root / "setup.cfg").write_text(SETUP_CFG)
    (root / "tinyllm" / "__init__.py").write_text("")
    (root / "tinyllm" / "mathy.py").write_text(mathy)
    (root / "tinyllm" / "course" / "exercises.json").write_text(json.dumps(registry))
    (root / "tests" / "test_mathy.py").write_text(tests)
    return root


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


def by_id(results):
    return {r.exercise.id: r for r in results}


def test_grade_scores_exercises_whose_tests_all_pass(repo):
    results = by_id(grade(repo, timeout=30))
    assert results["01.1"].passed and results["01.1"].score == 2
    assert len(results["01.1"].tests) == 3  # parametrized tests count one by one
    assert not results["01.2"].passed and results["01.2"].score == 0
    assert "adding 2 to an empty accumulator" in results["01.2"].summary
    assert results["01.3"].summary == "not implemented yet"
    table = format_table(list(results.values()))
    assert "Lesson 01 (01_intro.ipynb)" in table and "Total: 2/6 points" in table


def test_gradescope_json_has_the_required_fields(repo):
    data = gradescope(grade(repo, timeout=30))
    data = json.loads(json.dumps(data))  # it is plain JSON
    assert isinstance(data["score"], float) and data["score"] == 2.0
    assert data["visibility"] in ("visible", "hidden", "after_due_date", "after_published")
    assert data["stdout_visibility"] in ("visible", "hidden")
    assert len(data["tests"]) == 3
    for t in data["tests"]:
        assert isinstance(t["name"], str) and isinstance(t["output"], str)
        assert isinstance(t["score"], float) and isinstance(t["max_score"], float)
        assert 0 <= t["score"] <= t["max_score"] and t["status"] in ("passed", "failed")
    failed = next(t for t in data["tests"] if t["number"] == "01.2")
    assert "Hint: add v" in failed["output"]


def test_an_endless_loop_costs_one_test(tmp_path):
    tests = TESTS.replace("assert double(3) == 6", "while True:\n        pass")
    repo = make_repo(tmp_path / "r", tests=tests)
    results = by_id(grade(repo, timeout=2))
    slow = next(t for t in results["01.1"].tests if t.name == "test_double")
    assert slow.outcome == "failed" and "Timeout" in slow.message
    assert sum(t.outcome == "passed" for t in results["01.1"].tests) == 2


def test_a_module_that_fails_to_import_is_named_with_its_line(tmp_path):
    repo = make_repo(tmp_path / "r", mathy=MATHY + "\nthis is not python\n")  # a NameError
    results = by_id(grade(repo, timeout=30))
    assert not any(r.passed for r in results.values())
    summary = results["01.1"].summary
    assert "tinyllm/mathy.py:25" in summary and "NameError: name 'this'" in summary, summary


def test_a_syntax_error_in_the_students_file_names_file_line_and_source(tmp_path, capsys):
    broken = MATHY.replace("return 2 * x", "return 2 * x)")
    repo = make_repo(tmp_path / "r", mathy=broken)
    assert check("01.1", root=repo) is False
    out = capsys.readouterr().out
    assert "your code does not run" in out and "tinyllm/mathy.py:7: SyntaxError" in out, out
    assert "return 2 * x)" in out and "tests/test_mathy.py" not in out


def test_grade_cli_writes_results_json(repo, tmp_path, capsys):
    out = tmp_path / "results" / "results.json"
    code = cli.main(["grade", "--root", str(repo), "--json", str(out), "--lesson", "1"])
    assert code == 1  # not everything passes
    assert json.loads(out.read_text())["score"] == 2.0
    assert "01.2" in capsys.readouterr().out


def test_check_reports_kindly(repo, capsys):
    assert check("01.1", root=repo) is True
    assert "Doubling: all 3 tests pass" in capsys.readouterr().out
    assert check("01.2", root=repo) is False
    out = capsys.readouterr().out
    assert "✗ test_add" in out and "adding 2 to an empty accumulator" in out
    assert "Hint: add v, nothing more" in out and "Traceback" not in out
    assert len(out.splitlines()) < 15


def test_check_says_not_implemented_and_where(repo, capsys):
    assert check("01.3", root=repo) is False
    out = capsys.readouterr().out
    assert "Square: not implemented yet" in out and "edit tinyllm/mathy.py: square" in out


def test_check_sees_edits_without_reloading(repo, capsys):
    assert check("01.2", root=repo, show=False) is False
    mathy = repo / "tinyllm" / "mathy.py"
    mathy.write_text(mathy.read_text().replace("v + 1  # wrong on purpose", "v"))
    assert check("01.2", root=repo, show=False) is True


def test_stub_regions_names_the_exercise_and_keeps_the_module_importable():
    reg = load_registry_from(REGISTRY)
    out = stub_regions(MATHY, registry=reg, path="tinyllm/mathy.py")
    assert "BEGIN SOLUTION" not in out and "return 2 * x" not in out
    assert ('    raise NotImplementedError("Exercise 01.1: Doubling. See '
            'lessons/01_intro.ipynb")') in out
    assert "        # TODO Exercise 01.2: write your code here" in out
    namespace = {}
    exec(compile(out, "mathy", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="Exercise 01.2: Accumulate"):
        namespace["Acc"]().add(1)
    only = stub_regions(MATHY, ["01.2"], registry=reg, path="tinyllm/mathy.py")
    assert "return 2 * x" in only and "Exercise 01.2" in only and "Exercise 01.1" not in only


def test_stub_regions_without_registry_uses_a_generic_message():
    out = stub_regions(MATHY)
    assert out.count("raise NotImplementedError(\"Exercise in <string>:") == 2


def load_registry_from(entries):
    import pathlib
    import tempfile

    d = pathlib.Path(tempfile.mkdtemp())
    (d / "exercises.json").write_text(json.dumps(entries))
    return load_registry(d / "exercises.json")


def notebook(cells):
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def test_notebook_solution_cells_become_stubs():
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title"]},
        {"cell_type": "code", "metadata": {"tags": ["solution"]}, "execution_count": 3,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "42"}],
         "source": ["# Compute the answer\n", "answer = 6 * 7\n", "print(answer)"]},
        {"cell_type": "markdown", "metadata": {"tags": ["solution", "keep"]},
         "source": "Because 6 * 7 = 42."},
    ]
    nb = json.loads(stub_notebook(notebook(cells)))
    code, md = nb["cells"][1], nb["cells"][2]
    assert code["source"].startswith("# Exercise: Compute the answer\nraise NotImplementedError(")
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"]["tags"] == ["exercise"]
    assert md["source"] == "*Your answer here.*" and md["metadata"]["tags"] == ["keep", "exercise"]
    assert nb["cells"][0]["source"] == ["# Title"]
    plain = notebook(cells[:1])
    assert stub_notebook(plain) == plain  # notebooks without solutions are copied unchanged


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_student_edition_of_the_toy_repo_is_deterministic_and_fails(repo, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_student_edition(a, root=repo)
    build_student_edition(b, root=repo)
    assert tree_bytes(a) == tree_bytes(b)
    assert "return 2 * x" not in (a / "tinyllm" / "mathy.py").read_text()
    assert (a / "STUDENT.md").is_file()
    assert all(r.score == 0 for r in grade(a, timeout=30))
    with pytest.raises(FileExistsError):
        build_student_edition(a, root=repo)
    build_student_edition(a, root=repo, force=True)  # an earlier student edition: replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_student_edition(tmp_path / "other", root=repo, force=True)


def test_verify_stubs_finds_a_test_that_passes_on_its_stub(tmp_path):
    tests = TESTS + textwrap.dedent('''

        @pytest.mark.exercise("01.1")
        def test_lazy():
            assert callable(double)
    ''')
    repo = make_repo(tmp_path / "r", tests=tests)
    problems, seconds = verify_stubs(repo, exercise_ids=["01.1", "01.2"], workers=2, timeout=30)
    assert problems == ["exercise 01.1: tests/test_mathy.py::test_lazy passes with the "
                        "exercise stubbed"]
    assert "return 2 * x" in (repo / "tinyllm" / "mathy.py").read_text()  # the original is intact


def test_python_dash_m_entry_point(repo, tmp_path):
    import subprocess

    from tinyllm.course.registry import REPO_ROOT

    out = subprocess.run([sys.executable, "-m", "tinyllm.course", "grade", "--root", str(repo)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Total: 2/6 points" in out.stdout


@pytest.mark.slow
def test_check_in_a_notebook_kernel_shows_markdown(repo):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from tinyllm.course.registry import REPO_ROOT

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"import tinyllm.course\ntinyllm.course.check('01.2', root={str(repo)!r})")]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    shown = nb.cells[0].outputs[0]["data"]
    assert "**Exercise 01.2: Accumulate**" in shown["text/markdown"]
    assert "✗ test_add" in shown["text/plain"]
    assert nb.cells[0].outputs[-1]["data"]["text/plain"] == "False"


# ---------------------------------------------------------------------------- which tree
def test_check_refuses_when_the_imported_tinyllm_is_another_tree(repo, monkeypatch, capsys):
    from tinyllm.course.project import CourseError, environment, imported_root, resolve_root

    monkeypatch.chdir(repo / "tinyllm")  # inside the toy project, but this process imports ours
    with pytest.raises(CourseError) as info:
        resolve_root()
    msg = str(info.value)
    assert str(repo) in msg and str(imported_root()) in msg and 'pip install -e ".[course]"' in msg
    with pytest.raises(CourseError):
        check("01.1")
    env = environment()
    assert env["ok"] is False and env["project"] == repo.resolve()
    assert cli.main(["grade", "--lesson", "01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(repo) in err and len(err.splitlines()) == 1


def test_the_project_around_the_working_directory_is_graded(repo, tmp_path, monkeypatch):
    from tinyllm.course.project import environment, imported_root, resolve_root

    monkeypatch.chdir(imported_root() / "lessons")  # a kernel's working directory
    assert resolve_root() == imported_root() and environment()["ok"]
    monkeypatch.chdir(tmp_path)  # in no project: the imported tree
    assert resolve_root() == imported_root()
    assert resolve_root(repo) == repo.resolve()  # an explicit tree: graded as asked


def test_grade_one_exercise(repo, capsys):
    assert cli.main(["grade", "--root", str(repo), "--exercise", "01.1"]) == 0
    out = capsys.readouterr().out
    assert "01.1" in out and "01.2" not in out and "Total: 2/2 points" in out


def test_course_help_and_errors_without_pytest():
    import subprocess

    from tinyllm.course.registry import REPO_ROOT

    block = ("import sys\nclass Block:\n    def find_spec(self, name, *a):\n"
             "        if name.split('.')[0] in ('pytest', '_pytest'):\n"
             "            raise ImportError('blocked')\nsys.meta_path.insert(0, Block())\n"
             "from tinyllm.cli import main\n")
    run = lambda *args: subprocess.run(
        [sys.executable, "-c", block + f"sys.exit(main({list(args)!r}))"], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120)
    helped = run("course", "--help")
    assert helped.returncode == 0 and "grade" in helped.stdout, helped.stderr
    graded = run("course", "grade", "--exercise", "02.1")
    assert graded.returncode == 2 and "pytest" in graded.stderr and "Traceback" not in \
        graded.stderr, graded.stderr


def test_failure_messages_are_the_assertions_own(tmp_path, capsys):
    tests = TESTS.replace(
        'assert a.add(2) == 2, "adding 2 to an empty accumulator"',
        'import numpy as np\n    got = np.arange(300.0)\n'
        '    assert np.allclose(got, 0), f"total: expected 300 zeros, got {got.tolist()}"')
    repo = make_repo(tmp_path / "r", tests=tests)
    assert check("01.2", root=repo) is False
    out = capsys.readouterr().out
    assert "total: expected 300 zeros" in out and "299.0]" in out  # in full, not cut
    assert "assert False" not in out and "where" not in out and "Traceback" not in out


def test_verify_order_finds_a_test_that_needs_a_later_exercise(tmp_path):
    solved = MATHY.replace(
        'def square(x):\n    raise NotImplementedError("Exercise 01.3: Square. See lessons/01_intro.ipynb")',
        "def square(x):\n    # BEGIN SOLUTION\n    return x * x\n    # END SOLUTION").replace(
        "v + 1  # wrong on purpose", "v")
    tests = TESTS + textwrap.dedent('''

        @pytest.mark.exercise("01.1")
        def test_double_of_a_square():
            assert double(square(2)) == 8
    ''')
    repo = make_repo(tmp_path / "r", mathy=solved, tests=tests)
    problems, _ = verify_order(repo, workers=2, timeout=30)
    assert problems == ["exercise 01.1: tests/test_mathy.py::test_double_of_a_square fails with "
                        "every later exercise stubbed: needs exercise 01.3, which comes later"]
