"""A base tokenizer with the chat format's special tokens appended: roles and the end of a turn.

    tok = ChatTokenizer(CharTokenizer.from_text(text))   # or a ByteBPETokenizer
    tok.encode("<|user|>春眠<|end|>")     # the special tokens are cut out first
    tok.role_token_id("assistant"), tok.end_token_id

The base tokenizer's ids are kept as they are (0 .. V - 1), so a model trained with it keeps
every row of its embedding table; the added tokens get the next ids, V, V + 1, ... in the order
given (``CHAT_TOKENS`` by default: ``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``).
Only the new rows of the table are new to the model.

``encode(text)`` cuts the added tokens out of ``text`` (longest first) and encodes the pieces
between them with the base tokenizer; ``encode(text, split_special_tokens=True)`` treats them as
plain text instead (how a chat template encodes what a user typed: typing ``<|assistant|>`` must
not forge a turn). ``decode`` turns runs of base ids back with the base tokenizer (byte-level
BPE needs a whole run to rebuild a multi-byte character) and added ids into their strings.

Saved as JSON (``type: "chat"``) holding the base tokenizer's own JSON and the added tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import Tokenizer
from .bpe import _split_specials

__all__ = ["ChatTokenizer", "CHAT_TOKENS", "ROLE_TOKENS", "END_TOKEN"]

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TOKEN = "<|end|>"
CHAT_TOKENS = (*ROLE_TOKENS.values(), END_TOKEN)


class ChatTokenizer(Tokenizer):
    """``ChatTokenizer(base, added_tokens=CHAT_TOKENS)``: ``base``'s ids, then the added tokens.

    ``added_tokens`` must include the three role tokens and the end token of ``ROLE_TOKENS`` and
    ``END_TOKEN``; none may already be a token of ``base``.
    """

    type_name = "chat"

    def __init__(self, base: Tokenizer, added_tokens: Iterable[str] = CHAT_TOKENS):
        if isinstance(base, ChatTokenizer):
            raise TypeError("ChatTokenizer(base): base is already a ChatTokenizer; use it as is")
        if not isinstance(base, Tokenizer):
            raise TypeError(f"ChatTokenizer(base) needs a tinyllm Tokenizer, got "
                            f"{type(base).__name__}")
        added = list(dict.fromkeys(added_tokens))
        missing = [t for t in CHAT_TOKENS if t not in added]
        if missing:
            raise ValueError(f"ChatTokenizer: added_tokens {added} lack the chat format's "
                             f"{missing}")
        taken = [t for t in added if base.token_to_id(t) is not None]
        if taken:
            raise ValueError(f"ChatTokenizer: {taken} already are tokens of the base tokenizer "
                             f"(ids {[base.token_to_id(t) for t in taken]}); choose other strings")
        self.base = base
        self.added_tokens = added
        first = base.vocab_size
        self.added_to_id = {t: first + i for i, t in enumerate(added)}
        self.id_to_added = {i: t for t, i in self.added_to_id.items()}
        self.special_tokens = dict(getattr(base, "special_tokens", {}))

    # ---------------------------------------------------------------- the chat format's ids
    def role_token_id(self, role: str) -> int:
        """The id of the token that opens a turn of ``role`` (system, user or assistant)."""
        if role not in ROLE_TOKENS:
            raise ValueError(f"unknown chat role {role!r}: roles are {list(ROLE_TOKENS)}")
        return self.added_to_id[ROLE_TOKENS[role]]

    @property
    def end_token_id(self) -> int:
        """The id of ``<|end|>``, which closes every turn (a reply stops there)."""
        return self.added_to_id[END_TOKEN]

    @property
    def base_vocab_size(self) -> int:
        return self.base.vocab_size

    # ---------------------------------------------------------------- the Tokenizer interface
    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.added_tokens)

    def token_to_id(self, token: str) -> int | None:
        if token in self.added_to_id:
            return self.added_to_id[token]
        return self.base.token_to_id(token)

    def encode(self, text: str, split_special_tokens: bool = False) -> list[int]:
        if split_special_tokens:
            return self.base.encode(text)
        out: list[int] = []
        for piece in _split_specials(text, self.added_tokens):
            if piece in self.added_to_id:
                out.append(self.added_to_id[piece])
            else:
                out.extend(self.base.encode(piece))
        return out

    def decode(self, ids) -> str:
        parts, run = [], []
        for i in self._check_ids(ids):
            if i in self.id_to_added:
                if run:
                    parts.append(self.base.decode(run))
                    run = []
                parts.append(self.id_to_added[i])
            else:
                run.append(i)
        if run:
            parts.append(self.base.decode(run))
        return "".join(parts)

    def to_dict(self) -> dict:
        return {"base": {"type": self.base.type_name, **self.base.to_dict()},
                "added_tokens": list(self.added_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> ChatTokenizer:
        base = d.get("base")
        kind = base.get("type") if isinstance(base, dict) else None
        target = Tokenizer._registry.get(kind)
        if target is None or target is cls:
            raise ValueError(f"a chat tokenizer's 'base' must be another tinyllm tokenizer's "
                             f"JSON, got type {kind!r} (known: {sorted(Tokenizer._registry)})")
        return cls(target.from_dict(base), d.get("added_tokens", CHAT_TOKENS))
