"""A row of the op table (``tests/op_table.py``): the ``Op`` record, the samples' fixed index
arrays, and torch, imported only when a row's reference runs (the rows load without it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IDX = np.array([2, 0, 2])
MASK3 = np.array([True, False, True])
GATHER = np.array([[0, 2, 2, 1], [1, 0, 0, 0]])
TARGETS = np.array([[1, 0, 3], [-100, 2, 2]])


@dataclass
class Op:
    id: str
    covers: tuple
    fn: object
    ref: object  # a function of torch tensors (the module is passed as ``T`` through ``torch``)
    shapes: list
    kind: str | None = None
    ints: bool = False
    grad: bool = True
    noncontig: bool = False
    fd: bool = True
    floats: tuple = ("float32", "float64")
    fast_path: str | None = None  # the Function whose fast path this row also runs plain
    tags: dict = field(default_factory=dict)

    def dtypes(self):
        return list(self.floats) + (["int64"] if self.ints else [])


def torch_():
    """The torch module (imported on first use: the table itself does not need torch)."""
    import torch

    return torch


def as_torch(a):
    """A torch tensor holding a contiguous copy of ``a``."""
    return torch_().from_numpy(np.array(a))  # a contiguous copy (keeps 0-d arrays 0-d)


def O(*args, **kw):  # noqa: E743, N802
    return Op(*args, **kw)
