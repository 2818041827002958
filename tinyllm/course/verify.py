"""Honesty checks of the exercises: lesson order and stubs that fail.

``verify_order`` walks the registry in order the way a student does. With ``ids`` the exercise
ids in registry order, tree ``k`` has the first ``k`` exercises solved and every later one
stubbed; in it

* the tests of exercise ``ids[k-1]`` must pass: they need nothing that comes later (the
  *lesson order*), and
* the tests of exercise ``ids[k]`` must all fail: a student who has not written it yet cannot
  pass them (the *stub honesty*).

Both run in one pytest process per tree, ``len(ids) + 1`` processes in all, shared among
``workers`` copies of the repository. A test carrying several exercise ids belongs to the latest
of them. ``verify_stubs`` is the older, weaker check (each exercise alone stubbed).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinyllm.course.grade import (
    _STUB_RE,
    collect_exercise_tests,
    first_line,
    id_key,
    registry_for,
    run_exercise_tests,
)
from tinyllm.course.registry import REPO_ROOT, Registry
from tinyllm.course.trees import Trees


def ordered_ids(registry: Registry) -> list[str]:
    return sorted((ex.id for ex in registry), key=id_key)


def _owner(exercises: list, order: dict) -> str:
    """The exercise a test belongs to: the latest of its ids in registry order."""
    return max(exercises, key=lambda e: order.get(e, -1))


def verify_order(root=REPO_ROOT, registry: Registry | None = None, workers: int = 2,
                 timeout: float = 60, exercise_ids=None) -> tuple[list[str], float]:
    """Lesson order and stub honesty (see the module docstring). Returns ``(problems, s)``.

    ``exercise_ids`` limits the check to those exercises (their trees only).
    """
    root = Path(root).resolve()
    registry = registry if registry is not None else registry_for(root)
    ids = ordered_ids(registry)
    order = {e: i for i, e in enumerate(ids)}
    start = time.perf_counter()
    found, errors = collect_exercise_tests(root)
    problems = [f"test module {node} fails to import: {first_line(msg)}" for node, msg in errors]
    files = {e: sorted({n.split("::")[0] for n in nodes}) for e, nodes in found.items()}
    wanted = set(ids if exercise_ids is None else exercise_ids)
    for e in ids:
        if e in wanted and e not in found:
            problems.append(f"exercise {e}: no tests carry @pytest.mark.exercise({e!r})")
    steps = [k for k in range(len(ids) + 1)
             if (k >= 1 and ids[k - 1] in wanted) or (k < len(ids) and ids[k] in wanted)]
    with Trees(root, registry, count=min(workers, len(steps)) or 1) as trees:

        def step(k: int) -> list[str]:
            done = ids[k - 1] if k >= 1 and ids[k - 1] in wanted else None
            todo = ids[k] if k < len(ids) and ids[k] in wanted else None
            chosen = [e for e in (done, todo) if e and e in found]
            if not chosen:
                return []
            with trees.take() as tree:
                trees.set_state(tree, stubbed=ids[k:])
                test_files = sorted({f for e in chosen for f in files[e]})
                run = run_exercise_tests(tree.path, chosen, timeout=timeout,
                                         extra_args=test_files)
            out = []
            for t in run.tests.values():
                owner = _owner(t.exercises, order)
                if owner == done and t.outcome not in ("passed", "skipped"):
                    m = _STUB_RE.search(t.message or "")
                    why = (f"needs exercise {m.group(1)}, which comes later" if m
                           else first_line(t.message, 160))
                    out.append(f"exercise {done}: {t.nodeid} fails with every later exercise "
                               f"stubbed: {why}")
                elif owner == todo and t.outcome == "passed":
                    out.append(f"exercise {todo}: {t.nodeid} passes with the exercise (and "
                               f"every later one) stubbed")
            for e in chosen:
                if not run.for_exercise(e):
                    out.append(f"exercise {e}: its tests did not run: {first_line(run.output)}")
            return out

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            problems += [p for ps in pool.map(step, steps) for p in ps]
    return problems, time.perf_counter() - start


def verify_stubs(root=REPO_ROOT, registry: Registry | None = None, exercise_ids=None,
                 workers: int = 2, timeout: float = 60) -> tuple[list[str], float]:
    """Stub each exercise alone in a copy of ``root`` and check that all its tests fail.

    Returns ``(problems, seconds)``; a problem names the exercise and, for a test that passed
    on the stub, the test.
    """
    root = Path(root).resolve()
    registry = registry if registry is not None else registry_for(root)
    start = time.perf_counter()
    found, errors = collect_exercise_tests(root)
    problems = [f"test module {node} fails to import: {first_line(msg)}" for node, msg in errors]
    ids = list(exercise_ids) if exercise_ids is not None else ordered_ids(registry)
    with Trees(root, registry, count=min(workers, len(ids)) or 1) as trees:
        todo = []
        for ex_id in ids:
            if not trees.owner_files.get(ex_id):
                problems.append(f"exercise {ex_id}: no solution region to stub")
            elif ex_id not in found:
                problems.append(f"exercise {ex_id}: no tests carry "
                                f"@pytest.mark.exercise({ex_id!r})")
            else:
                todo.append(ex_id)

        def check_one(ex_id: str) -> list[str]:
            test_files = sorted({n.split("::")[0] for n in found[ex_id]})
            with trees.take() as tree:
                trees.set_state(tree, stubbed=[ex_id])
                run = run_exercise_tests(tree.path, [ex_id], timeout=timeout,
                                         extra_args=test_files)
            tests = run.for_exercise(ex_id)
            if not tests:
                return [f"exercise {ex_id}: its tests did not run: {first_line(run.output)}"]
            return [f"exercise {ex_id}: {t.nodeid} passes with the exercise stubbed"
                    for t in tests if t.outcome == "passed"]

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            problems += [p for ps in pool.map(check_one, todo) for p in ps]
    return problems, time.perf_counter() - start
