"""The exercise registry agrees with the code and the tests (instructor-only: not in the student
edition). Also the parsing of solution regions and the validation of the registry."""

import json

import pytest

from tinyllm.course.grade import collect_exercise_tests
from tinyllm.course.registry import (
    REPO_ROOT,
    RegionError,
    RegistryError,
    check_consistency,
    find_regions,
    load_registry,
)


# ---------------------------------------------------------------------------- the real registry
def test_registry_loads_and_is_consistent_with_the_code():
    problems = check_consistency(REPO_ROOT, load_registry())
    assert not problems, "registry and code disagree:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def exercise_tests():
    found, errors = collect_exercise_tests(REPO_ROOT)
    assert not errors, f"test modules fail to import: {errors}"
    return found


def test_every_registered_exercise_has_tests(exercise_tests):
    missing = [ex.id for ex in load_registry() if ex.id not in exercise_tests]
    assert not missing, f"registered exercises without @pytest.mark.exercise tests: {missing}"


def test_every_exercise_marker_is_registered(exercise_tests):
    registry = load_registry()
    stray = {e: nodes[:2] for e, nodes in exercise_tests.items() if e not in registry}
    assert not stray, f"tests marked with exercise ids missing from exercises.json: {stray}"


def test_check_finds_the_test_files_of_each_exercise(exercise_tests):
    """check() collects only the files whose text carries the exercise's marker: that quick
    search must find every file that collection finds."""
    from tinyllm.course.grade import test_files_for

    for ex_id, nodes in exercise_tests.items():
        collected = {n.split("::")[0] for n in nodes}
        missing = collected - set(test_files_for(REPO_ROOT, [ex_id]))
        assert not missing, f"exercise {ex_id}: tests in {missing} are not found by the marker " \
                            "search (mark them @pytest.mark.exercise(\"LL.N\"))"


def test_registered_lessons_are_consistent():
    for ex in load_registry():
        assert ex.lesson.startswith(ex.lesson_number + "_"), ex


# ---------------------------------------------------------------------------- regions
GOOD = '''\
def f(x):
    y = 1
    # BEGIN SOLUTION
    y = x + 1
    # END SOLUTION
    return y


class A:
    def g(self):
        # BEGIN SOLUTION
        return 1
        # END SOLUTION

    @staticmethod
    def h():
        """Doc."""
        # BEGIN SOLUTION
        if True:
            return 2
        # END SOLUTION
'''


def test_regions_map_to_the_enclosing_function():
    regions = find_regions(GOOD, "m.py")
    assert [(r.qualname, r.begin, r.end, r.indent) for r in regions] == [
        ("f", 3, 5, "    "), ("A.g", 11, 13, "        "), ("A.h", 18, 21, "        ")]
    assert regions[1].target == "m.py:A.g"
    assert find_regions("x = 1\n# BEGIN SOLUTION\ny = 2\n# END SOLUTION\n")[0].qualname \
        == "<module>"


@pytest.mark.parametrize("source, line, words", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", 2, "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", 3, "without a BEGIN"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n"
     "    # END SOLUTION\n    # END SOLUTION\n", 3, "cannot nest"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n# END SOLUTION\n", 4, "not indented"),
])
def test_region_errors_name_file_and_line(source, line, words):
    with pytest.raises(RegionError, match=words) as info:
        find_regions(source, "pkg/mod.py")
    assert info.value.line == line and str(info.value).startswith(f"pkg/mod.py:{line}:")


# ---------------------------------------------------------------------------- the registry file
def entry(**kw):
    e = {"id": "02.3", "title": "Topo", "lesson": "02_autograd.ipynb",
         "targets": ["tinyllm/autograd.py:topological_order"], "points": 2, "hint": ""}
    e.update(kw)
    return e


@pytest.mark.parametrize("bad, words", [
    (entry(id="2.3"), "id must look like"),
    (entry(lesson="03_other.ipynb"), "lesson must be"),
    (entry(targets=[]), "targets must be"),
    (entry(targets=["tinyllm/autograd.py"]), "is not 'path/to/file.py:Qual.name'"),
    (entry(points=0), "points must be"),
    (entry(extra=1), "unknown keys"),
])
def test_bad_registry_entries_are_named(tmp_path, bad, words):
    path = tmp_path / "exercises.json"
    path.write_text(json.dumps([bad]))
    with pytest.raises(RegistryError, match=words):
        load_registry(path)


def test_duplicate_ids_and_targets_are_rejected(tmp_path):
    path = tmp_path / "exercises.json"
    path.write_text(json.dumps([entry(), entry()]))
    with pytest.raises(RegistryError, match="duplicate id 02.3") as info:
        load_registry(path)
    assert "already in exercise 02.3" in str(info.value)


def test_consistency_names_orphan_regions_and_targets_without_regions(tmp_path):
    (tmp_path / "tinyllm").mkdir()
    (tmp_path / "tinyllm" / "m.py").write_text(GOOD)
    path = tmp_path / "exercises.json"
    path.write_text(json.dumps([
        entry(id="01.1", lesson="01_a.ipynb", targets=["tinyllm/m.py:f", "tinyllm/m.py:A"]),
        entry(id="01.2", lesson="01_a.ipynb", targets=["tinyllm/m.py:A.g", "tinyllm/m.py:nope",
                                                       "tinyllm/gone.py:f"]),
    ]))
    problems = check_consistency(tmp_path, load_registry(path))
    text = "\n".join(problems)
    assert "tinyllm/m.py:18: solution region in A.h belongs to no registered exercise" in text
    assert "target tinyllm/m.py:A has no solution region" in text
    assert "no function or class nope" in text and "no file tinyllm/gone.py" in text
    assert len(problems) == 4
