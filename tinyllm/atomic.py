"""Atomic file writes: a crash or an error never leaves a half-written file under the final name.

Every file tinyllm writes (weights, checkpoints, tokenizers, token caches, plots, downloads) goes
through ``atomic_open``: the bytes go to a temporary file in the same folder, which is flushed,
synced to disk and then renamed onto the final name (``os.replace`` is atomic on one file
system). On any error the temporary file is removed and the old file, if any, is untouched.
Standard library only, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_open", "write_bytes", "write_text"]


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", encoding: str | None = None):
    """``with atomic_open(path) as f: f.write(...)``: ``path`` appears only once all is written.

    The new file keeps the permissions of the file it replaces (0644 for a new one, not
    ``mkstemp``'s private 0600). Raise inside the block to abandon the write.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    """Write ``text`` as UTF-8."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
