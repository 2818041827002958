"""WordPiece (BERT): the basic tokenizer, greedy longest-match-first, pairs, padding.

``WordPieceTokenizer.from_pretrained(dir)`` reads a Hugging Face BERT folder (``tokenizer.json``,
or the older ``vocab.txt``, with ``tokenizer_config.json`` if present; see
``tinyllm.tokenizers.hf``). The pipeline, as in BERT and HF ``tokenizers``:

1. clean: drop NUL, U+FFFD and control characters (Unicode category C*, except tab/newline/CR);
   every whitespace character becomes a space;
2. put spaces around CJK ideographs (``tokenize_chinese_chars``);
3. if ``do_lower_case``: lower-case; strip accents (NFD, drop category Mn) when
   ``strip_accents`` is true, or is unset and lower-casing is on;
4. split on whitespace, then split off every punctuation character (ASCII 33-47, 58-64,
   91-96, 123-126, or Unicode category P*);
5. split each word into wordpieces greedily (exercise 05.3, ``wordpiece_split``).

Special tokens written literally in the text (``[SEP]``, ``[MASK]``, ...) are kept whole.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np
import regex

from .base import Tokenizer, TokenizerError

_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
DEFAULT_SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                          "mask": "[MASK]"}


def wordpiece_split(word: str, vocab: dict[str, int] | set[str], unk_token: str = "[UNK]",
                    max_input_chars_per_word: int = 100, prefix: str = "##") -> list[str]:
    """Split one word into wordpieces, greedy longest-match-first.

    From the start of the word take the longest prefix that is in ``vocab``; continue from
    where it ended with the longest ``prefix + rest`` piece that is in ``vocab``, and so on.
    If at some point no piece matches, or the word has more than
    ``max_input_chars_per_word`` characters, the whole word is ``[unk_token]``.
    Example with vocab {un, ##aff, ##able}: ``"unaffable" -> ["un", "##aff", "##able"]``."""
    # BEGIN SOLUTION
    if len(word) > max_input_chars_per_word:
        return [unk_token]
    pieces = []
    start = 0
    while start < len(word):
        end = len(word)
        piece = None
        while start < end:
            candidate = word[start:end] if start == 0 else prefix + word[start:end]
            if candidate in vocab:
                piece = candidate
                break
            end -= 1
        if piece is None:
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces
    # END SOLUTION


def _is_control(c: str) -> bool:
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def _is_whitespace(c: str) -> bool:
    return c in " \t\n\r" or c.isspace() or unicodedata.category(c) == "Zs"


def _is_punctuation(c: str) -> bool:
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text: str, do_lower_case: bool = True, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True) -> list[str]:
    """BERT's basic tokenizer (steps 1-4 of the module docstring): text -> words."""
    out = []
    for c in text:
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or _is_control(c):
            continue
        if _is_whitespace(c):
            out.append(" ")
        elif tokenize_chinese_chars and _is_cjk(cp):
            out.append(f" {c} ")
        else:
            out.append(c)
    text = "".join(out)
    if strip_accents is None:
        strip_accents = do_lower_case
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text)
                       if unicodedata.category(c) != "Mn")
    if do_lower_case:
        text = text.lower()
    words = []
    for word in text.split():
        current = []
        for c in word:
            if _is_punctuation(c):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(c)
            else:
                current.append(c)
        if current:
            words.append("".join(current))
    return words


def _truncate_pair(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Longest-first lengths for a pair (as HF tokenizers): keep the shorter whole if the
    longer can absorb the cut, else give each half (the longer gets the odd token)."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece tokenizer; call it like HF: ``tok(texts, text_pair=None, ...)``."""

    type_name = "wordpiece"

    def __init__(self, vocab: Sequence[str], do_lower_case: bool = True,
                 strip_accents: bool | None = None, tokenize_chinese_chars: bool = True,
                 model_max_length: int = 512, special_tokens: dict[str, str] | None = None,
                 max_input_chars_per_word: int = 100):
        self._set_vocab(vocab)
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = int(model_max_length)
        self.max_input_chars_per_word = max_input_chars_per_word
        specials = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        self.special_tokens = {r: t for r, t in specials.items() if t in self.stoi}
        if "unk" not in self.special_tokens:
            raise TokenizerError(f"the vocabulary has no unknown token {specials.get('unk')!r}")
        vals = sorted(self.special_tokens.values(), key=len, reverse=True)
        self._special_re = regex.compile("(" + "|".join(regex.escape(v) for v in vals) + ")")

    # --- interface --------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """Text -> wordpiece strings (no [CLS]/[SEP])."""
        tokens: list[str] = []
        specials = set(self.special_tokens.values())
        for piece in self._special_re.split(text):
            if piece in specials:
                tokens.append(piece)
                continue
            for word in basic_tokenize(piece, self.do_lower_case, self.strip_accents,
                                       self.tokenize_chinese_chars):
                tokens.extend(wordpiece_split(word, self.stoi, self.special_tokens["unk"],
                                              self.max_input_chars_per_word))
        return tokens

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = [self.stoi[t] for t in self.tokenize(text)]
        if add_special_tokens:
            ids = [self.cls_token_id, *ids, self.sep_token_id]
        return ids

    def decode(self, ids, skip_special_tokens: bool = True,
               clean_up_tokenization_spaces: bool = True) -> str:
        special = set(self.all_special_ids) if skip_special_tokens else set()
        toks = [self.itos[i] for i in self._check_ids(ids) if i not in special]
        # As HF tokenizers' WordPiece decoder: "##" pieces glue on, others get a space, and
        # the clean-up (" ." -> ".", ...) applies to each piece with its leading space.
        parts = []
        for n, tok in enumerate(toks):
            piece = tok[2:] if tok.startswith("##") else (" " + tok if n else tok)
            if clean_up_tokenization_spaces:
                for a, b in _CLEANUP:
                    piece = piece.replace(a, b)
            parts.append(piece)
        return "".join(parts)

    def encode_pair(self, a: str, b: str | None = None, truncation: bool = True,
                    max_length: int | None = None) -> tuple[list[int], list[int]]:
        """``[CLS] a [SEP] (b [SEP])`` ids and token type ids, longest-first truncated."""
        ids_a = self.encode(a)
        ids_b = None if b is None else self.encode(b)
        if truncation:
            limit = max_length or self.model_max_length
            if ids_b is None:
                ids_a = ids_a[: max(limit - 2, 0)]
            else:
                n1, n2 = _truncate_pair(len(ids_a), len(ids_b), max(limit - 3, 0))
                ids_a, ids_b = ids_a[:n1], ids_b[:n2]
        ids = [self.cls_token_id, *ids_a, self.sep_token_id]
        types = [0] * len(ids)
        if ids_b is not None:
            ids += [*ids_b, self.sep_token_id]
            types += [1] * (len(ids_b) + 1)
        return ids, types

    def __call__(self, texts: str | Sequence[str], text_pair: str | Sequence[str] | None = None,
                 padding: bool | str = True, truncation: bool = True,
                 max_length: int | None = None, return_tensors=None) -> dict[str, np.ndarray]:
        """Batch encode. Returns int64 arrays ``input_ids``, ``attention_mask`` and
        ``token_type_ids`` of shape (B, L); a single str gives B = 1.
        ``padding``: True/"longest" pads to the longest row, "max_length" to ``max_length``;
        False requires rows of equal length. ``return_tensors`` is ignored (always NumPy)."""
        if isinstance(texts, str):
            texts = [texts]
            text_pair = None if text_pair is None else [text_pair]
        if text_pair is not None:
            if isinstance(text_pair, str) or len(text_pair) != len(texts):
                raise ValueError(f"text_pair must be a list as long as texts ({len(texts)})")
        rows = [self.encode_pair(a, None if text_pair is None else text_pair[i],
                                 truncation, max_length) for i, a in enumerate(texts)]
        lengths = [len(r[0]) for r in rows]
        if padding == "max_length":
            width = max_length or self.model_max_length
        elif padding:
            width = max(lengths, default=0)
        else:
            if len(set(lengths)) > 1:
                raise ValueError(f"rows have different lengths {sorted(set(lengths))}: "
                                 "pass padding=True to pad them")
            width = max(lengths, default=0)
        width = max(width, max(lengths, default=0))
        pad = self.pad_token_id or 0
        out = {k: np.zeros((len(rows), width), dtype=np.int64)
               for k in ("input_ids", "token_type_ids", "attention_mask")}
        out["input_ids"][:] = pad
        for r, (ids, types) in enumerate(rows):
            out["input_ids"][r, : len(ids)] = ids
            out["token_type_ids"][r, : len(ids)] = types
            out["attention_mask"][r, : len(ids)] = 1
        return out

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"vocab": self.itos, "do_lower_case": self.do_lower_case,
                "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars,
                "model_max_length": self.model_max_length, "special_tokens": self.special_tokens,
                "max_input_chars_per_word": self.max_input_chars_per_word}

    @classmethod
    def from_dict(cls, d: dict) -> WordPieceTokenizer:
        return cls(d["vocab"], d["do_lower_case"], d["strip_accents"],
                   d["tokenize_chinese_chars"], d["model_max_length"], d["special_tokens"],
                   d.get("max_input_chars_per_word", 100))
