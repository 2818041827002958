"""Working copies of a repository with some exercises stubbed (or a file replaced).

The checks of the course (lesson order, stub honesty, notebooks run with later exercises
stubbed, mutants) run the tests in copies of the repository side by side, one per worker.
``Trees`` makes the copies once; ``set_stubbed`` then rewrites only the files whose content must
change, and removes their compiled caches so that no process runs a stale version.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
from pathlib import Path

from tinyllm.course.registry import Registry, assign, package_regions


class Tree:
    def __init__(self, path: Path):
        self.path = path
        self.stubbed: frozenset = frozenset()
        self.replaced: dict = {}  # rel -> text written in place of the original


class Trees:
    """``count`` copies of ``root`` in a temporary folder (``close()`` removes them)."""

    def __init__(self, root, registry: Registry, count: int = 1, files=None):
        from tinyllm.course.student import list_files

        self.root, self.registry = Path(root).resolve(), registry
        owned, _ = assign(package_regions(self.root), registry)
        self.owner_files = {ex_id: sorted({r.path for r in rs}) for ex_id, rs in owned.items()}
        self.sources = {p: (self.root / p).read_text(encoding="utf-8")
                        for ps in self.owner_files.values() for p in ps}
        self.tmp = Path(tempfile.mkdtemp(prefix="tinyllm-trees-"))
        self._free: queue.Queue = queue.Queue()
        self.all = []
        names = list(files) if files is not None else list_files(self.root)
        for w in range(max(1, count)):
            tree = Tree(self.tmp / f"tree{w}")
            for rel in names:
                (tree.path / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.root / rel, tree.path / rel)
            self.all.append(tree)
            self._free.put(tree)

    @contextlib.contextmanager
    def take(self):
        tree = self._free.get()
        try:
            yield tree
        finally:
            self._free.put(tree)

    def text(self, rel: str, stubbed) -> str:
        """The text of package file ``rel`` with the regions of exercises ``stubbed`` stubbed."""
        from tinyllm.course.student import stub_regions

        here = [e for e in stubbed if rel in self.owner_files.get(e, ())]
        src = self.sources[rel]
        return stub_regions(src, here, self.registry, rel) if here else src

    def set_state(self, tree: Tree, stubbed=(), replace: dict | None = None) -> None:
        """Stub exactly the exercises ``stubbed``; put ``replace`` ({rel: text}) in place of
        those files (replacements win over stubs); every other file as in the original."""
        stubbed, replace = frozenset(stubbed), dict(replace or {})
        touched = {p for e in stubbed | tree.stubbed for p in self.owner_files.get(e, ())}
        touched |= set(replace) | set(tree.replaced)
        for rel in sorted(touched):
            if rel in replace:
                text = replace[rel]
            elif rel in self.sources:
                text = self.text(rel, stubbed)
            else:
                text = (self.root / rel).read_text(encoding="utf-8")
            write(tree.path / rel, text)
        tree.stubbed, tree.replaced = stubbed, replace

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (when different) and drop its compiled caches."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    path.write_text(text, encoding="utf-8")
    for pyc in path.parent.glob(f"__pycache__/{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)  # never run a stale compiled copy of the other version
