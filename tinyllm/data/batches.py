"""Causal language-model batches: random windows of a token stream."""

from __future__ import annotations

import numpy as np


def as_rng(rng) -> np.random.Generator:
    """A ``np.random.Generator`` from a Generator, an int seed or None (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def get_batch(tokens, batch_size: int, block_size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` random windows of ``block_size + 1`` tokens.

    Returns ``(x, y)``, int64 arrays of shape ``(batch_size, block_size)`` with
    ``y[:, t] == x[:, t + 1]`` inside the window: ``y`` is ``x`` shifted left by one.
    ``tokens``: any 1-D integer array (a memmap works; only the windows are read)."""
    n = len(tokens)
    if n == 0:
        raise ValueError("cannot draw batches from an empty token stream")
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) and block_size ({block_size}) must be >= 1")
    if block_size >= n:
        raise ValueError(f"block_size={block_size} needs at least {block_size + 1} tokens but the "
                         f"stream has only {n}: use a smaller block_size or more text")
    starts = as_rng(rng).integers(0, n - block_size, size=batch_size)
    windows = np.stack([np.asarray(tokens[s: s + block_size + 1], dtype=np.int64)
                        for s in starts])
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])
