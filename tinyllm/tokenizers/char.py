"""Character-level tokenizer: one id per Unicode character (CJK included), sorted vocabulary."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Tokenizer, TokenizerError


class CharTokenizer(Tokenizer):
    """Ids are positions in a sorted character vocabulary; special tokens come first.

    ``unk_token``: if given, characters not seen in training map to it; otherwise encoding an
    unknown character raises ValueError naming the character and its position.
    """

    type_name = "char"

    def __init__(self, chars: Iterable[str], unk_token: str | None = None,
                 special_tokens: Iterable[str] = ()):
        specials = list(dict.fromkeys(special_tokens))
        if unk_token is not None and unk_token not in specials:
            specials.insert(0, unk_token)
        chars = sorted(set(chars) - set(specials))
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise TokenizerError(f"CharTokenizer vocabulary entries must be one character: "
                                     f"{c!r}")
        self._set_vocab(specials + chars)
        self.unk_token = unk_token
        self.extra_special_tokens = specials
        self.special_tokens = {"unk": unk_token} if unk_token is not None else {}
        for tok in specials:
            role = {"<pad>": "pad", "<bos>": "bos", "<eos>": "eos", "<mask>": "mask"}.get(tok)
            if role:
                self.special_tokens[role] = tok

    @classmethod
    def from_text(cls, text: str, unk_token: str | None = None,
                  special_tokens: Iterable[str] = ()) -> CharTokenizer:
        if not text:
            raise ValueError("CharTokenizer.from_text got an empty text: nothing to build a "
                             "vocabulary from (load a corpus first, e.g. load_corpus(...))")
        return cls(set(text), unk_token=unk_token, special_tokens=special_tokens)

    train = from_text

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pass
        unk = None if self.unk_token is None else stoi[self.unk_token]
        out = []
        for pos, c in enumerate(text):
            i = stoi.get(c, unk)
            if i is None:
                raise ValueError(
                    f"character {c!r} (U+{ord(c):04X}) at position {pos} is not in the "
                    f"vocabulary of {self.vocab_size} characters: build the tokenizer from text "
                    "containing it, or with unk_token='<unk>'"
                )
            out.append(i)
        return out

    def decode(self, ids) -> str:
        itos = self.itos
        return "".join(itos[i] for i in self._check_ids(ids))

    def to_dict(self) -> dict:
        return {"chars": self.itos[len(self.extra_special_tokens):], "unk_token": self.unk_token,
                "special_tokens": self.extra_special_tokens}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        """The inverse of ``to_dict``. The stored characters must be distinct and sorted (as
        ``to_dict`` writes them): otherwise the ids would silently differ from the file's."""
        chars, specials = d["chars"], list(d.get("special_tokens", ()))
        if not isinstance(chars, list) or not isinstance(specials, list):
            raise TokenizerError("'chars' and 'special_tokens' must be JSON lists")
        seen: dict = {}
        for i, c in enumerate(chars):
            if c in seen:
                raise TokenizerError(f"'chars' holds {c!r} twice (entries {seen[c]} and {i}): "
                                     "every character must have one id")
            seen[c] = i
        if chars != sorted(chars):
            raise TokenizerError("'chars' is not sorted, so its ids would not be the ones the "
                                 "file was written with: restore the file CharTokenizer.save "
                                 "wrote")
        return cls(chars, unk_token=d.get("unk_token"), special_tokens=specials)
