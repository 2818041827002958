"""Byte-level BPE (GPT-2 style): 256 byte tokens, learned merges, whole special tokens.

Ids: ``0..255`` are the raw bytes (so any string can be encoded: byte fallback is automatic),
``256 + i`` is the token made by merge ``i``, and special tokens (e.g. ``<|endoftext|>``)
come last. Text is first cut into pre-tokens by GPT-2's regex; merges never cross pre-token
boundaries, and special tokens are cut out before that and never merged.

Training keeps the pair counts of the *unique* pre-tokens weighted by their frequency and an
index ``pair -> words containing it``; each merge touches only the words that contain the
chosen pair (exercise 05.1). ``merge_word`` (exercise 05.2) rewrites one word.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

from .base import Tokenizer

GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_GPT2_RE = regex.compile(GPT2_PATTERN)

Pair = tuple[int, int]


def merge_word(word: tuple[int, ...], pair: Pair, new_id: int) -> tuple[int, ...]:
    """Return ``word`` with every occurrence of ``pair`` (scanning left to right, not
    overlapping) replaced by ``new_id``. Example: ``merge_word((1, 2, 2, 2), (2, 2), 9)``
    is ``(1, 9, 2)``."""
    # BEGIN SOLUTION
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
    # END SOLUTION


def add_pair_counts(counts: dict[Pair, int], where: dict[Pair, set[int]], index: int,
                    word: tuple[int, ...], freq: int, sign: int = 1) -> None:
    """Add (``sign=1``) or remove (``sign=-1``) the adjacent pairs of ``words[index]``,
    weighted by its frequency, to ``counts``; pairs whose count reaches 0 are deleted.
    ``where[pair]`` gets ``index`` added (it is never pruned: a stale entry is harmless)."""
    for pair in zip(word, word[1:]):
        c = counts.get(pair, 0) + sign * freq
        if c:
            counts[pair] = c
        else:
            del counts[pair]
        if sign > 0:
            where[pair].add(index)


def best_pair(counts: dict[Pair, int]) -> Pair:
    """The most frequent pair; ties go to the smallest pair ``(a, b)``."""
    top = max(counts.values())
    return min(p for p, c in counts.items() if c == top)


def bpe_merge_loop(words: list[tuple[int, ...]], freqs: list[int], num_merges: int,
                   first_id: int = 256) -> list[Pair]:
    """Learn up to ``num_merges`` merges from unique ``words`` (tuples of token ids) with
    their frequencies ``freqs``; merge ``i`` creates token ``first_id + i``.

    Each step picks ``best_pair(counts)``, appends it to the returned list, and, for every
    word index in ``where[pair]``: removes that word's pair counts, rewrites it with
    ``merge_word`` and adds its new pair counts back (``add_pair_counts``). Stops early when
    no pair is left. ``words`` is modified in place."""
    counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        add_pair_counts(counts, where, i, w, f)
    merges: list[Pair] = []
    # BEGIN SOLUTION
    for new_id in range(first_id, first_id + num_merges):
        if not counts:
            break
        pair = best_pair(counts)
        merges.append(pair)
        for i in sorted(where.pop(pair)):
            word = words[i]
            if len(word) < 2:
                continue
            add_pair_counts(counts, where, i, word, freqs[i], -1)
            words[i] = merge_word(word, pair, new_id)
            add_pair_counts(counts, where, i, words[i], freqs[i], +1)
    # END SOLUTION
    return merges


def _split_specials(text: str, specials: Iterable[str]) -> list[str]:
    """Cut ``text`` at special tokens, keeping them as separate pieces (longest match first)."""
    specials = sorted(set(specials), key=len, reverse=True)
    if not specials:
        return [text] if text else []
    pat = "(" + "|".join(regex.escape(s) for s in specials) + ")"
    return [p for p in regex.split(pat, text) if p]


def pretokenize(text: str) -> list[str]:
    """GPT-2 pre-tokens: ``"".join(pretokenize(t)) == t`` for every string."""
    return _GPT2_RE.findall(text)


def train_bpe(text: str, vocab_size: int, special_tokens: Iterable[str] = ()) -> list[Pair]:
    """Pure function for benchmarks: the merges of a byte-level BPE trained on ``text``."""
    specials = list(dict.fromkeys(special_tokens))
    if not text:
        raise ValueError("cannot train BPE on an empty text: load a corpus first")
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the 256-byte base alphabet plus "
            f"{len(specials)} special token(s): use vocab_size >= {256 + len(specials)}"
        )
    counter: Counter[str] = Counter()
    for piece in _split_specials(text, specials):
        if piece not in specials:
            counter.update(pretokenize(piece))
    words = [tuple(w.encode("utf-8")) for w in counter]
    freqs = list(counter.values())
    return bpe_merge_loop(words, freqs, vocab_size - 256 - len(specials))


class ByteBPETokenizer(Tokenizer):
    """GPT-2 style byte-level BPE. Build with ``ByteBPETokenizer.train(text, vocab_size)``."""

    type_name = "byte_bpe"

    def __init__(self, merges: Iterable[Pair] = (), special_tokens: Iterable[str] = (),
                 eos_token: str | None = None):
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.ranks: dict[Pair, int] = {p: i for i, p in enumerate(self.merges)}
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]
        for n, (a, b) in enumerate(self.merges):
            if not (a < 256 + n and b < 256 + n):
                raise ValueError(f"merge {n} = {(a, b)} uses a token not yet defined")
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.extra_special_tokens = list(dict.fromkeys(special_tokens))
        self.special_to_id = {s: len(self.vocab) + i
                              for i, s in enumerate(self.extra_special_tokens)}
        self.id_to_special = {i: s for s, i in self.special_to_id.items()}
        if eos_token is None and "<|endoftext|>" in self.special_to_id:
            eos_token = "<|endoftext|>"
        self.special_tokens = {"eos": eos_token, "bos": eos_token} if eos_token else {}
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int,
              special_tokens: Iterable[str] = ("<|endoftext|>",)) -> ByteBPETokenizer:
        specials = list(special_tokens)
        return cls(train_bpe(text, vocab_size, specials), specials)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.extra_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        if token in self.special_to_id:
            return self.special_to_id[token]
        try:
            return self.vocab.index(token.encode("utf-8"))
        except ValueError:
            return None

    def _encode_word(self, word: str) -> tuple[int, ...]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        ids = tuple(word.encode("utf-8"))
        ranks = self.ranks
        while len(ids) >= 2:
            rank, pair = min((ranks.get(p, 1 << 62), p) for p in zip(ids, ids[1:]))
            if rank == 1 << 62:
                break
            ids = merge_word(ids, pair, 256 + rank)
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in _split_specials(text, self.extra_special_tokens):
            if piece in self.special_to_id:
                out.append(self.special_to_id[piece])
                continue
            for word in pretokenize(piece):
                out.extend(self._encode_word(word))
        return out

    def decode(self, ids, errors: str = "replace") -> str:
        parts: list[bytes] = []
        for i in self._check_ids(ids):
            special = self.id_to_special.get(i)
            parts.append(special.encode("utf-8") if special is not None else self.vocab[i])
        return b"".join(parts).decode("utf-8", errors=errors)

    def to_dict(self) -> dict:
        return {"merges": [list(p) for p in self.merges],
                "special_tokens": self.extra_special_tokens,
                "eos_token": self.special_tokens.get("eos")}

    @classmethod
    def from_dict(cls, d: dict) -> ByteBPETokenizer:
        return cls(d["merges"], d.get("special_tokens", ()), d.get("eos_token"))
