"""The mutation check's workers: processes that import pytest, the tests and the package once and
run each mutant in a ``fork`` of themselves.

``Pool(root, workers)`` starts the processes (``python -c`` calling ``serve``) and hands each one
request at a time: a JSON line naming the mutated function (module, qualname, its mutated
source), the exercise's test files, the test seed and the time limit. The worker forks; the child
swaps the function's code object for the mutant's (``__code__``, so that every reference to the
function sees it) and runs ``pytest.main`` on the exercise's tests; the parent answers with the
exit status (0 survived, 1 killed), or -9 when the child ran past the limit and was killed.
``tinyllm.course.mutants`` decides which mutants to run and reports on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["Pool", "serve"]

_WORKER = "import tinyllm.course.mutant_worker as w; w.serve()"


def serve() -> None:  # pragma: no cover - runs in the worker process
    """Answer mutant requests (JSON lines on stdin) until stdin closes."""
    import importlib
    import importlib.util
    import signal

    import pytest  # noqa: F401 - imported once, before the forks

    root = Path.cwd()
    sys.path.insert(0, str(root / "tests"))
    spec = importlib.util.spec_from_file_location("tinyllm_course_plugin",
                                                  Path(__file__).with_name("plugin.py"))
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    importlib.import_module("conftest")
    out = sys.stdout
    sys.stdout = sys.stderr
    for line in sys.stdin:
        req = json.loads(line)
        for f in req["files"]:
            importlib.import_module(Path(f).stem)
        importlib.import_module(req["module"])
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(req, plugin)
        deadline, status, timed_out = start + req["timeout"], None, False
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            elif time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status, timed_out = -9, True
            else:
                time.sleep(0.005)
        rc = os.waitstatus_to_exitcode(status) if status != -9 else -9
        out.write(json.dumps({"id": req["id"], "rc": rc, "timed_out": timed_out,
                              "seconds": round(time.perf_counter() - start, 3)}) + "\n")
        out.flush()


def _child(req, plugin) -> None:  # pragma: no cover - the forked child
    import importlib

    import pytest

    code = 98
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        if req["source"] is not None:
            code = 97
            _patch(importlib.import_module(req["module"]), req["qualname"], req["source"],
                   req["path"])
        os.environ["TINYLLM_TEST_SEED"] = str(req["seed"])
        code = pytest.main([*req["files"], "-q", "-x", "-p", "no:cacheprovider", "-m",
                            "exercise", "--exercise", req["exercise"], "-o",
                            "addopts=--strict-markers", "-W", "ignore::pytest.PytestWarning",
                            "-p", "no:hypothesispytest", "--assert=plain"],
                           plugins=[plugin])
    finally:
        os._exit(int(code))


def _patch(module, qualname: str, source: str, path: str) -> None:
    """Swap the code of ``module.<qualname>`` for its code compiled from ``source``."""
    import inspect

    obj = module
    for part in qualname.split("."):
        obj = vars(obj)[part] if part in vars(obj) else getattr(obj, part)
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        elif isinstance(obj, property):
            obj = obj.fget
    fn = inspect.unwrap(obj)
    new = _find_code(compile(source, path, "exec"), qualname)
    if new is None:
        raise LookupError(f"no code object {qualname} in the mutated {path}")
    fn.__code__ = new


def _find_code(code, qualname):
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            if getattr(const, "co_qualname", None) == qualname:
                return const
            found = _find_code(const, qualname)
            if found is not None:
                return found
    return None


class Pool:
    """``workers`` worker processes in ``root``; ``run(request)`` is thread-safe per worker."""

    def __init__(self, root, workers: int = 2):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
                       [str(root)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        self.procs = [subprocess.Popen([sys.executable, "-c", _WORKER], cwd=root, env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True, bufsize=1)
                      for _ in range(max(1, workers))]
        self.free = list(range(len(self.procs)))
        self.lock = threading.Condition()
        self.counter = 0

    def run(self, request: dict) -> dict:
        with self.lock:
            while not self.free:
                self.lock.wait()
            w = self.free.pop()
            self.counter += 1
            request = {**request, "id": self.counter}
        try:
            p = self.procs[w]
            p.stdin.write(json.dumps(request) + "\n")
            p.stdin.flush()
            line = p.stdout.readline()
            if not line:
                return {"rc": -1, "timed_out": False, "seconds": 0.0, "dead": True}
            return json.loads(line)
        finally:
            with self.lock:
                self.free.append(w)
                self.lock.notify()

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
