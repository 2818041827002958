"""``cupyx``: the one function tinyllm takes from it, ``scatter_add`` (NumPy's ``add.at``).

tinyllm computes erf itself, so ``cupyx.scipy.special`` is not here.
"""

from __future__ import annotations

import numpy as np

from fakecupy._core import _in, _index, ndarray


def scatter_add(a, slices, value) -> None:
    """``a[slices] += value`` with repeated indices adding up, in place on device array ``a``."""
    if not isinstance(a, ndarray):
        raise TypeError(f"cupyx.scatter_add needs a device array to write into, got {type(a)}")
    np.add.at(a._a, _index(slices), _in(value))
