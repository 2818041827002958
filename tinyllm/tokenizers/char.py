"""Character-level tokenizer: one id per Unicode character (CJK included), sorted vocabulary."""

from __future__ import annotations

from collections.abc import Iterable

from .base import Tokenizer


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
            if len(c) != 1:
                raise ValueError(f"CharTokenizer vocabulary entries must be one character: {c!r}")
        self.itos: list[str] = specials + chars
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
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

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def token_to_id(self, token: str) -> int | None:
        return self.stoi.get(token)

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
        return cls(d["chars"], unk_token=d.get("unk_token"),
                   special_tokens=d.get("special_tokens", ()))
