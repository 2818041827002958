"""Masked-LM and next-sentence-prediction data (BERT, RoBERTa).

``mask_tokens`` (exercise 11.1) is BERT's rule: every non-special, non-pad position is chosen
with probability ``mlm_probability``; a chosen position becomes ``[MASK]`` with probability
0.8, a random token (uniform over the whole vocabulary, as in BERT/HF) with 0.1, and stays
unchanged with 0.1. Labels hold the original id at chosen positions and -100 elsewhere (the
ignore index of cross-entropy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .batches import as_rng

IGNORE_INDEX = -100


def special_tokens_mask(input_ids, special_ids: Sequence[int]) -> np.ndarray:
    return np.isin(np.asarray(input_ids), np.asarray(list(special_ids), dtype=np.int64))


def mask_tokens(input_ids, vocab_size: int, mask_token_id: int, special_ids=(), rng=None,
                mlm_probability: float = 0.15, special_mask=None,
                pad_token_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(masked_input_ids, labels)``, int64 arrays shaped like ``input_ids``.

    Positions that are special (``special_mask`` True, or id in ``special_ids``) or padding
    (``== pad_token_id``) are never chosen. ``rng``: a Generator or seed."""
    input_ids = np.asarray(input_ids, dtype=np.int64)
    rng = as_rng(rng)
    if special_mask is None:
        special_mask = special_tokens_mask(input_ids, special_ids)
    special_mask = np.asarray(special_mask, dtype=bool)
    if special_mask.shape != input_ids.shape:
        raise ValueError(f"special_mask has shape {special_mask.shape}, input_ids "
                         f"{input_ids.shape}: they must match")
    if pad_token_id is not None:
        special_mask = special_mask | (input_ids == pad_token_id)
    masked = input_ids.copy()
    labels = np.full_like(input_ids, IGNORE_INDEX)
    # BEGIN SOLUTION
    chosen = (rng.random(input_ids.shape) < mlm_probability) & ~special_mask
    labels[chosen] = input_ids[chosen]
    action = rng.random(input_ids.shape)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    masked[to_mask] = mask_token_id
    masked[to_random] = rng.integers(0, vocab_size, size=int(to_random.sum()))
    # END SOLUTION
    return masked, labels


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None,
              fill: int | None = None) -> np.ndarray:
    """Right-pad integer rows to ``width`` (default: the longest) into an int64 array."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = np.full((len(rows), width), pad_id if fill is None else fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[:width]
    return out


class MLMBatcher:
    """Batches of masked examples.

    ``examples``: token-id rows (already with [CLS]/[SEP] if the model wants them).
    ``dynamic=True`` (RoBERTa) draws fresh masks each time an example is served;
    ``dynamic=False`` (BERT's static masking) masks example ``i`` once, with the generator
    ``default_rng([seed, i])``, and serves the same masks every epoch.
    Each batch is a dict of int64 arrays ``input_ids``, ``attention_mask``, ``labels`` (B, L).
    """

    def __init__(self, examples: Sequence[Sequence[int]], batch_size: int, vocab_size: int,
                 mask_token_id: int, pad_token_id: int, special_ids=(), dynamic: bool = True,
                 mlm_probability: float = 0.15, seed: int = 0):
        if len(examples) == 0:
            raise ValueError("MLMBatcher got no examples")
        self.examples = [np.asarray(e, dtype=np.int64) for e in examples]
        self.batch_size, self.vocab_size = batch_size, vocab_size
        self.mask_token_id, self.pad_token_id = mask_token_id, pad_token_id
        self.special_ids = list(special_ids)
        self.dynamic, self.p, self.seed = dynamic, mlm_probability, seed
        self.rng = np.random.default_rng(seed)
        self._static: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.dynamic and i in self._static:
            return self._static[i]
        rng = self.rng if self.dynamic else np.random.default_rng([self.seed, i])
        out = mask_tokens(self.examples[i], self.vocab_size, self.mask_token_id,
                          self.special_ids, rng, self.p, pad_token_id=self.pad_token_id)
        if not self.dynamic:
            self._static[i] = out
        return out

    def batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        pairs = [self._mask(int(i)) for i in indices]
        ids = pad_batch([p[0] for p in pairs], self.pad_token_id)
        labels = pad_batch([p[1] for p in pairs], IGNORE_INDEX)
        mask = pad_batch([np.ones(len(p[0]), dtype=np.int64) for p in pairs], 0)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def __iter__(self):
        """One epoch in a fresh shuffled order."""
        order = self.rng.permutation(len(self.examples))
        for s in range(0, len(order), self.batch_size):
            yield self.batch(order[s: s + self.batch_size])


def make_nsp_pairs(segments_by_doc: Sequence[Sequence], rng) -> list[tuple[object, object, int]]:
    """Next-sentence pairs ``(a, b, label)`` from consecutive segments of each document:
    with probability 1/2 ``b`` is the true next segment (label 0 = IsNext, as HF), otherwise a
    random segment of another document (label 1 = NotNext)."""
    rng = as_rng(rng)
    docs = [list(d) for d in segments_by_doc]
    if sum(1 for d in docs if d) < 2:
        raise ValueError("NSP needs at least two non-empty documents (random 'next' segments "
                         "come from a different document)")
    pairs = []
    for di, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            if rng.random() < 0.5:
                pairs.append((doc[i], doc[i + 1], 0))
                continue
            while True:
                dj = int(rng.integers(len(docs)))
                if dj != di and docs[dj]:
                    break
            other = docs[dj]
            pairs.append((doc[i], other[int(rng.integers(len(other)))], 1))
    return pairs


def nsp_batch(pairs, tokenizer, max_length: int = 128) -> dict[str, np.ndarray]:
    """Encode NSP pairs ``(a, b, label)`` as ``[CLS] a [SEP] b [SEP]``: int64 arrays
    ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, L) and ``next_sentence_label``
    (B,). A tokenizer with ``encode_pair`` (WordPiece) truncates longest-first; any other
    needs ``cls_token_id``/``sep_token_id`` and cuts the longer side first."""
    rows, types = [], []
    for a, b, _ in pairs:
        if hasattr(tokenizer, "encode_pair"):
            ids, tt = tokenizer.encode_pair(a, b, truncation=True, max_length=max_length)
        else:
            cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
            if cls_id is None or sep_id is None:
                raise ValueError("nsp_batch needs a tokenizer with cls and sep tokens")
            ea, eb = tokenizer.encode(a), tokenizer.encode(b)
            while len(ea) + len(eb) > max_length - 3 and (ea or eb):
                if len(ea) > len(eb):
                    ea = ea[:-1]
                else:
                    eb = eb[:-1]
            ids = [cls_id, *ea, sep_id, *eb, sep_id]
            tt = [0] * (len(ea) + 2) + [1] * (len(eb) + 1)
        rows.append(ids)
        types.append(tt)
    pad = tokenizer.pad_token_id or 0
    return {"input_ids": pad_batch(rows, pad),
            "token_type_ids": pad_batch(types, 0),
            "attention_mask": pad_batch([[1] * len(r) for r in rows], 0),
            "next_sentence_label": np.array([p[2] for p in pairs], dtype=np.int64)}
