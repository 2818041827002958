"""``cupy.random``: seeded draws made on the device.

The stream is deliberately not NumPy's for the same seed (CuPy's is not either), so a test that
compares a CPU run with a device run cannot pass by accident while they draw dropout masks.
"""

from __future__ import annotations

import numpy as np

from fakecupy._core import _wrap

_STREAM = 0xC0DA  # mixed into the seed: another stream than np.random.default_rng(seed)
_gen = np.random.default_rng([0, _STREAM])


def seed(seed=None) -> None:
    global _gen
    _gen = np.random.default_rng(None if seed is None else [int(seed), _STREAM])


def _shape(size):
    return () if size is None else size


def random(size=None, dtype=float):
    return _wrap(np.asarray(_gen.random(_shape(size), dtype=dtype)))


random_sample = random


def rand(*size, dtype=float):
    return random(size, dtype)


def standard_normal(size=None, dtype=float):
    return _wrap(np.asarray(_gen.standard_normal(_shape(size), dtype=dtype)))


def randn(*size, dtype=float):
    return standard_normal(size, dtype)


def normal(loc=0.0, scale=1.0, size=None, dtype=float):
    return _wrap(np.asarray(_gen.normal(loc, scale, _shape(size))).astype(dtype))


def uniform(low=0.0, high=1.0, size=None, dtype=float):
    return _wrap(np.asarray(_gen.uniform(low, high, _shape(size))).astype(dtype))


def randint(low, high=None, size=None, dtype=int):
    return _wrap(np.asarray(_gen.integers(low, high, _shape(size), dtype=dtype)))
