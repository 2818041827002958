"""Byte-level BPE (GPT-2 style): 256 byte tokens, learned merges, whole special tokens.

Ids of a tokenizer trained here: ``0..255`` are the raw bytes (so any string can be encoded:
byte fallback is automatic), ``256 + i`` is the token made by merge ``i``, and special tokens
(e.g. ``<|endoftext|>``) come last. Text is first cut into pre-tokens by GPT-2's regex; merges
never cross pre-token boundaries, and special tokens are cut out before that and never merged.

A tokenizer read from Hugging Face (GPT-2's ``vocab.json`` + ``merges.txt``, or a
``tokenizer.json``) keeps that file's ids instead: ``byte_ids[b]`` is the id of byte ``b`` and
``merge_ids[r]`` the id that merge ``r`` makes. Token strings (``itos``, ``token_to_id``) are
GPT-2's byte-level spelling: each byte is one printable character (``bytes_to_unicode``), so
``"Ġthe"`` is the bytes of ``" the"``.

Training keeps the pair counts of the *unique* pre-tokens weighted by their frequency and an
index ``pair -> words containing it``; each merge touches only the words that contain the
chosen pair (exercise 05.1). ``merge_word`` (exercise 05.2) rewrites one word.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

from .base import Tokenizer, TokenizerError

GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_GPT2_RE = regex.compile(GPT2_PATTERN)

Pair = tuple[int, int]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map byte -> one printable character: the 188 printable Latin-1 bytes stand for
    themselves, the other 68 (space, control bytes, ...) get ``chr(256 + n)`` in byte order, so
    that byte-level tokens can be written as plain strings (a space is ``Ġ``, ``\\n`` is ``Ċ``)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    out, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + n)
            n += 1
    return dict(sorted(out.items()))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_string(data: bytes) -> str:
    """``bytes`` -> GPT-2's byte-level spelling (``b" the"`` -> ``"Ġthe"``)."""
    return "".join(BYTE_TO_CHAR[b] for b in data)


def string_bytes(token: str) -> bytes:
    """The inverse of ``byte_string``; ``TokenizerError`` for a character that is not one."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError as e:
        raise TokenizerError(f"token {token!r} is not byte-level: {e.args[0]!r} stands for no "
                             "byte") from None


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
    """GPT-2 style byte-level BPE. Build with ``ByteBPETokenizer.train(text, vocab_size)``, or
    read Hugging Face files with ``ByteBPETokenizer.from_pretrained(dir)``.

    ``ByteBPETokenizer(merges, special_tokens, eos_token)``: tinyllm's layout (bytes, then one
    token per merge, then the special tokens). ``bos_token`` defaults to ``eos_token``, which
    defaults to ``<|endoftext|>`` when that is a special token."""

    type_name = "byte_bpe"

    def __init__(self, merges: Iterable[Pair] = (), special_tokens: Iterable[str] = (),
                 eos_token: str | None = None, bos_token: str | None = None):
        merges = [(int(a), int(b)) for a, b in merges]
        vocab = [bytes([i]) for i in range(256)]
        for n, (a, b) in enumerate(merges):
            if not (0 <= a < 256 + n and 0 <= b < 256 + n):
                raise TokenizerError(f"merge {n} = {(a, b)} uses a token not yet defined (merge "
                                     f"{n} may use ids 0..{255 + n})")
            vocab.append(vocab[a] + vocab[b])
        specials = list(dict.fromkeys(special_tokens))
        tokens = [byte_string(v) for v in vocab] + specials
        self._build(tokens, vocab + [s.encode("utf-8") for s in specials], list(range(256)),
                    merges, list(range(256, 256 + len(merges))), specials, eos_token, bos_token)

    @classmethod
    def from_vocab(cls, vocab: list[str], merges: Iterable[tuple[str, str]],
                   special_tokens: Iterable[str] = (), eos_token: str | None = None,
                   bos_token: str | None = None) -> ByteBPETokenizer:
        """Hugging Face's form: ``vocab[i]`` the byte-level string of id ``i`` (special tokens
        spelled as they are), ``merges`` pairs of token strings in rank order; the id a merge
        makes is the id of the two strings joined."""
        self = cls.__new__(cls)
        specials = list(dict.fromkeys(special_tokens))
        stoi = {}
        for i, t in enumerate(vocab):
            stoi.setdefault(t, i)
        data = [t.encode("utf-8") if t in specials else string_bytes(t) for t in vocab]
        missing = [b for b in range(256) if BYTE_TO_CHAR[b] not in stoi]
        if missing:
            raise TokenizerError(f"the vocabulary has no token for byte(s) {missing[:8]}: a "
                                 "byte-level BPE needs all 256")
        pairs, made = [], []
        for r, (a, b) in enumerate(merges):
            if a not in stoi or b not in stoi or a + b not in stoi:
                missing = [t for t in (a, b, a + b) if t not in stoi]
                raise TokenizerError(f"merge {r} ({a!r}, {b!r}) uses or makes {missing[0]!r}, "
                                     "which is not in the vocabulary")
            pairs.append((stoi[a], stoi[b]))
            made.append(stoi[a + b])
        self._build(vocab, data, [stoi[BYTE_TO_CHAR[b]] for b in range(256)], pairs, made,
                    specials, eos_token, bos_token)
        return self

    def _build(self, tokens, data, byte_ids, merges, merge_ids, specials, eos, bos) -> None:
        self._set_vocab(tokens, unique=False)  # tinyllm's training can spell a token twice
        self.vocab: list[bytes] = data          # id -> bytes (a special token: its UTF-8)
        self.byte_ids, self.merges, self.merge_ids = byte_ids, merges, merge_ids
        self.ranks: dict[Pair, int] = {}
        for r, p in enumerate(merges):
            self.ranks.setdefault(p, r)
        self.extra_special_tokens = specials
        missing = [s for s in specials if s not in self.stoi]
        if missing:
            raise TokenizerError(f"special token(s) {missing} are not in the vocabulary")
        self.special_to_id = {s: self.stoi[s] for s in specials}
        self.id_to_special = {i: s for s, i in self.special_to_id.items()}
        if eos is None and "<|endoftext|>" in self.special_to_id:
            eos = "<|endoftext|>"
        bos = eos if bos is None else bos
        self.special_tokens = {r: t for r, t in (("eos", eos), ("bos", bos)) if t}
        self._identity = byte_ids == list(range(256))
        self._cache: dict[str, tuple[int, ...]] = {}

    @property
    def default_layout(self) -> bool:
        """True for tinyllm's own id layout (bytes, merges, then special tokens)."""
        n = len(self.merges)
        return (self._identity and self.merge_ids == list(range(256, 256 + n))
                and self.vocab_size == 256 + n + len(self.extra_special_tokens))

    @classmethod
    def train(cls, text: str, vocab_size: int,
              special_tokens: Iterable[str] = ("<|endoftext|>",)) -> ByteBPETokenizer:
        specials = list(special_tokens)
        return cls(train_bpe(text, vocab_size, specials), specials)

    def _encode_word(self, word: str) -> tuple[int, ...]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        raw = word.encode("utf-8")
        ids = tuple(raw) if self._identity else tuple(self.byte_ids[b] for b in raw)
        ranks, made = self.ranks, self.merge_ids
        while len(ids) >= 2:
            rank, pair = min((ranks.get(p, 1 << 62), p) for p in zip(ids, ids[1:]))
            if rank == 1 << 62:
                break
            ids = merge_word(ids, pair, made[rank])
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

    def decode(self, ids, errors: str = "replace", skip_special_tokens: bool = False) -> str:
        """The text of ``ids`` (invalid UTF-8 from a cut multi-byte character: ``errors``)."""
        vocab, skip = self.vocab, self.id_to_special if skip_special_tokens else {}
        return b"".join(vocab[i] for i in self._check_ids(ids) if i not in skip).decode(
            "utf-8", errors=errors)

    def to_dict(self) -> dict:
        d = {"merges": [list(p) for p in self.merges],
             "special_tokens": self.extra_special_tokens,
             "eos_token": self.special_tokens.get("eos")}
        if self.special_tokens.get("bos") != d["eos_token"]:
            d["bos_token"] = self.special_tokens.get("bos")
        if not self.default_layout:  # ids of a Hugging Face file: keep its whole table
            d["vocab"] = self.itos
            d["merges"] = [[self.itos[a], self.itos[b]] for a, b in self.merges]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ByteBPETokenizer:
        if not isinstance(d["merges"], list):
            raise TokenizerError("'merges' must be a JSON list of pairs")
        if "vocab" in d:
            return cls.from_vocab(d["vocab"], [tuple(m) for m in d["merges"]],
                                  d.get("special_tokens", ()), d.get("eos_token"),
                                  d.get("bos_token"))
        return cls(d["merges"], d.get("special_tokens", ()), d.get("eos_token"),
                   d.get("bos_token"))
