"""Weight initialisation, drawn from tinyllm's seeded generator (``tl.manual_seed``).

GPT-2 initialises every Linear and Embedding weight from N(0, 0.02) and biases at zero, and scales
the residual projections by 1/sqrt(2 n_layer) so that the residual stream's variance does not
grow with depth.
"""

from __future__ import annotations

import math

from tinyllm import backend


def normal(shape, std: float = 0.02, dtype="float32"):
    return (backend.rng().standard_normal(shape, dtype="float32") * std).astype(dtype)


def uniform(shape, bound: float, dtype="float32"):
    return backend.rng().uniform(-bound, bound, size=shape).astype(dtype)


def zeros(shape, dtype="float32"):
    return backend.np.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    return backend.np.ones(shape, dtype=dtype)


def kaiming_uniform(shape, fan_in: int, dtype="float32"):
    """PyTorch's default for Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(shape, 1 / math.sqrt(max(fan_in, 1)), dtype)
