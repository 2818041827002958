"""Sequence-to-sequence data: Tang couplets, synthetic digit tasks, and a padding collate.

Couplets: a regulated Tang poem is a run of couplets ``X，Y。``. The *source* is the first
line up to and including ``，``; the *target* is the second line up to and including ``。``
(the punctuation tells the model where a line ends). ``couplet_pairs`` yields every couplet
of every poem (``first_only=True``: one per poem).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .batches import as_rng

_COUPLET = re.compile(r"([^，。]+，)([^，。]+。)")


def couplet_pairs(poems, first_only: bool = False) -> list[tuple[str, str]]:
    """``(first line incl. '，', second line incl. '。')`` for each couplet of each poem."""
    pairs = []
    for poem in poems:
        text = getattr(poem, "text", poem)
        found = _COUPLET.findall(text)
        pairs.extend(found[:1] if first_only else found)
    if not pairs:
        raise ValueError("no couplets 'X，Y。' found in the poems given")
    return pairs


class DigitVocab:
    """The synthetic tasks' vocabulary: 0 = <pad>, 1 = <bos>, 2 = <eos>, 3..12 = digits 0..9."""

    pad_id, bos_id, eos_id, offset = 0, 1, 2, 3
    size = 13

    @classmethod
    def encode(cls, digits: str) -> list[int]:
        return [cls.offset + int(d) for d in digits]

    @classmethod
    def decode(cls, ids) -> str:
        return "".join(str(int(i) - cls.offset) for i in ids if int(i) >= cls.offset)


def synthetic_seq2seq(n: int, task: str = "reverse", min_len: int = 3, max_len: int = 10,
                      rng=None) -> list[tuple[list[int], list[int]]]:
    """``n`` pairs of digit-id lists (``DigitVocab`` ids, no bos/eos): the target is the source
    reversed (``task="reverse"``) or sorted (``"sort"``). Lengths uniform in [min_len, max_len]."""
    if task not in ("reverse", "sort"):
        raise ValueError(f"unknown task {task!r}: use 'reverse' or 'sort'")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = as_rng(rng)
    out = []
    for _ in range(n):
        src = (rng.integers(0, 10, size=int(rng.integers(min_len, max_len + 1)))
               + DigitVocab.offset).tolist()
        out.append((src, src[::-1] if task == "reverse" else sorted(src)))
    return out


def collate_seq2seq(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                    bos_id: int, eos_id: int) -> dict[str, np.ndarray]:
    """Pad a batch of ``(source ids, target ids)``.

    Returns int64 ``src`` (B, S), ``tgt_in`` (B, T) = ``<bos> target`` and ``tgt_out`` (B, T)
    = ``target <eos>`` (teacher forcing: predict ``tgt_out[:, t]`` from ``tgt_in[:, :t+1]``),
    and bool padding masks ``src_mask`` (B, S), ``tgt_mask`` (B, T), True at real tokens.
    S is the longest source, T the longest target + 1; the causal mask is the model's job."""
    if len(pairs) == 0:
        raise ValueError("collate_seq2seq got an empty batch")
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs) + 1
    B = len(pairs)
    src = np.full((B, S), pad_id, dtype=np.int64)
    tgt_in = np.full((B, T), pad_id, dtype=np.int64)
    tgt_out = np.full((B, T), pad_id, dtype=np.int64)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = s
        # BEGIN SOLUTION
        tgt_in[i, : len(t) + 1] = [bos_id, *t]
        tgt_out[i, : len(t) + 1] = [*t, eos_id]
        # END SOLUTION
    src_mask = np.zeros((B, S), dtype=bool)
    tgt_mask = np.zeros((B, T), dtype=bool)
    for i, (s, t) in enumerate(pairs):
        src_mask[i, : len(s)] = True
        tgt_mask[i, : len(t) + 1] = True
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out, "src_mask": src_mask,
            "tgt_mask": tgt_mask}


def encode_text_pairs(pairs: Sequence[tuple[str, str]], tokenizer) -> list[tuple[list, list]]:
    """Encode string pairs (e.g. couplets) with any tokenizer, ready for ``collate_seq2seq``."""
    return [(tokenizer.encode(a), tokenizer.encode(b)) for a, b in pairs]
