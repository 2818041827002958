"""Starting N processes from Python: ``mpiexec`` found, checked and called (tests, lessons, bench).

    from tinyllm.distributed.launch import mpi_available, run_mpi
    ok, why = mpi_available()
    out = run_mpi(2, ["script.py", "arg"])     # mpiexec -n 2 <python> script.py arg

``mpiexec`` is looked for beside this Python first (the ``mpich`` wheel installs it there, in
the virtual environment's ``bin``), then on ``PATH``. More processes than cores is fine for
MPICH; Open MPI refuses unless told ``--oversubscribe``, which is added for it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["mpiexec_path", "mpi_available", "mpiexec_command", "run_mpi"]


def mpiexec_path() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


@functools.lru_cache(maxsize=1)
def _is_open_mpi(path: str) -> bool:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return "open mpi" in (out.stdout + out.stderr).lower()


def mpi_available() -> tuple[bool, str]:
    """``(True, "")`` when ``mpiexec`` and mpi4py are both there, else ``(False, why)``."""
    if importlib.util.find_spec("mpi4py") is None:
        return False, "mpi4py is not installed (pip install 'tinyllm[dist]', or mpi4py mpich)"
    if mpiexec_path() is None:
        return False, "no mpiexec beside this Python or on PATH (pip install mpich)"
    return True, ""


def mpiexec_command(n: int) -> list[str]:
    """``[mpiexec, -n, n]`` plus what lets n exceed the cores."""
    path = mpiexec_path()
    if path is None:
        raise FileNotFoundError(mpi_available()[1])
    return [path, "-n", str(n)] + (["--oversubscribe"] if _is_open_mpi(path) else [])


def run_mpi(n: int, args: list, timeout: float = 120, env: dict | None = None,
            cwd=None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n <this python> *args``, capturing text output (never raises on a
    failing exit status; a run longer than ``timeout`` seconds raises TimeoutExpired)."""
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_"))}
    child_env.update(env or {})
    return subprocess.run(mpiexec_command(n) + [sys.executable, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=child_env,
                          cwd=cwd)
