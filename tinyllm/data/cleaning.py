"""Text cleaning: Unicode and whitespace normalisation, de-duplication, train/val split."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T", bound=Hashable)

_SPACES = re.compile(r"[^\S\n]+")
_BLANKS = re.compile(r"\n{3,}")


def normalize_unicode(text: str, form: str = "NFC") -> str:
    """NFC (compose; keeps meaning) or NFKC (also folds compatibility forms: ``ﬁ`` -> ``fi``,
    full-width letters -> ASCII)."""
    if form not in ("NFC", "NFKC", "NFD", "NFKD"):
        raise ValueError(f"unknown normalisation form {form!r}: use 'NFC' or 'NFKC'")
    return unicodedata.normalize(form, text)


def normalize_whitespace(text: str, keep_newlines: bool = True) -> str:
    """Runs of spaces/tabs (any Unicode space) become one space, lines are stripped, ``\\r\\n``
    becomes ``\\n`` and more than one blank line becomes one. ``keep_newlines=False`` joins
    everything into one line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not keep_newlines:
        return " ".join(text.split())
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n")


def dedupe(items: Sequence[T]) -> list[T]:
    """Drop exact duplicates, keeping the first occurrence and the order."""
    return list(dict.fromkeys(items))


def train_val_split(items_or_text, val_fraction: float = 0.1, seed: int = 0):
    """Deterministic split.

    * a ``str``: contiguous: the first ``1 - val_fraction`` of the characters train, the rest
      validate (a random split of a running text would leak context; ``seed`` is unused);
    * a sequence: a seeded random subset of ``round(n * val_fraction)`` items validates;
      both parts keep the original order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(items_or_text)
    if n == 0:
        raise ValueError("cannot split an empty corpus: load some data first")
    if isinstance(items_or_text, str):
        cut = n - int(round(n * val_fraction))
        return items_or_text[:cut], items_or_text[cut:]
    n_val = int(round(n * val_fraction))
    val_idx = np.random.default_rng(seed).permutation(n)[:n_val]
    is_val = np.zeros(n, dtype=bool)
    is_val[val_idx] = True
    items = list(items_or_text)
    return ([x for x, v in zip(items, is_val) if not v], [x for x, v in zip(items, is_val) if v])
