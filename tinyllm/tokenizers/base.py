"""The interface every tinyllm tokenizer shares, and its JSON save/load.

A tokenizer turns text into a list of integer ids and back. Besides ``encode``/``decode`` and
``vocab_size`` it names its special-token ids (``pad_token_id``, ``unk_token_id``,
``bos_token_id``, ``eos_token_id``, ``mask_token_id``, ``cls_token_id``, ``sep_token_id``);
an id a tokenizer does not have is ``None``.

``save(path)`` writes JSON atomically (temporary file in the same folder, then rename);
``Tokenizer.load(path)`` reads any tinyllm tokenizer back, dispatching on its ``"type"``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tinyllm import atomic

SPECIAL_ROLES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) atomically, creating the folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)


class Tokenizer:
    """Base class: subclasses set ``self.special_tokens`` (role -> token string) and implement
    ``encode``, ``decode``, ``vocab_size``, ``token_to_id``, ``to_dict`` and ``from_dict``."""

    type_name = "tokenizer"
    _registry: dict[str, type[Tokenizer]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # only a class that names its own type is registered: a subclass that merely tweaks
        # one (in a test, say) must not take over loading of every file of its parent's type
        if "type_name" in cls.__dict__:
            Tokenizer._registry.setdefault(cls.type_name, cls)

    special_tokens: dict[str, str]

    # --- the interface -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.vocab_size

    # --- special tokens --------------------------------------------------------------------
    def _special_id(self, role: str) -> int | None:
        tok = getattr(self, "special_tokens", {}).get(role)
        return None if tok is None else self.token_to_id(tok)

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad")

    @property
    def unk_token_id(self) -> int | None:
        return self._special_id("unk")

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos")

    @property
    def mask_token_id(self) -> int | None:
        return self._special_id("mask")

    @property
    def cls_token_id(self) -> int | None:
        return self._special_id("cls")

    @property
    def sep_token_id(self) -> int | None:
        return self._special_id("sep")

    @property
    def all_special_ids(self) -> list[int]:
        ids = {self._special_id(r) for r in getattr(self, "special_tokens", {})}
        return sorted(i for i in ids if i is not None)

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        d = {"type": self.type_name, **self.to_dict()}
        atomic_write_text(path, json.dumps(d, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}: save one with tok.save(path)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid tokenizer JSON ({e})") from e
        kind = d.get("type")
        target = cls if cls.type_name == kind else Tokenizer._registry.get(kind)
        if target is None or (cls is not Tokenizer and target is not cls):
            raise ValueError(
                f"{path} holds a tokenizer of type {kind!r}, expected "
                f"{cls.type_name if cls is not Tokenizer else sorted(Tokenizer._registry)}"
            )
        return target.from_dict(d)

    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer's JSON form: equal fingerprints encode identically."""
        blob = json.dumps({"type": self.type_name, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _check_ids(self, ids) -> list[int]:
        out = [int(i) for i in ids]
        n = self.vocab_size
        for pos, i in enumerate(out):
            if not 0 <= i < n:
                raise ValueError(
                    f"token id {i} at position {pos} is outside the vocabulary "
                    f"(valid ids are 0..{n - 1}): was it made by another tokenizer?"
                )
        return out
