"""Text classification data: Tang poem authorship, and a stratified split."""

from __future__ import annotations

from collections import Counter

import numpy as np


def author_classification(poems, top_k: int = 12):
    """Poems by the ``top_k`` most prolific authors: ``(texts, labels, label_names)``.

    ``label_names[j]`` is the author of class ``j``, ordered by poem count (most first, ties by
    name); ``labels`` is an int64 array; poem order is kept."""
    if top_k < 2:
        raise ValueError(f"top_k must be at least 2 for a classification task, got {top_k}")
    counts = Counter(p.author for p in poems)
    if len(counts) < top_k:
        raise ValueError(f"asked for top_k={top_k} authors but the poems have {len(counts)}")
    names = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    index = {a: i for i, a in enumerate(names)}
    kept = [p for p in poems if p.author in index]
    return ([p.text for p in kept], np.array([index[p.author] for p in kept], dtype=np.int64),
            names)


def stratified_split(labels, val_fraction: float = 0.1, seed: int = 0):
    """Indices ``(train_idx, val_idx)`` (sorted int64) with ``round(n_c * val_fraction)`` of
    each class ``c`` in validation, chosen by a seeded shuffle."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        val.extend(rng.permutation(idx)[: int(round(len(idx) * val_fraction))])
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[np.asarray(val, dtype=np.int64)] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
