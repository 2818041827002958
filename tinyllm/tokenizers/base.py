"""The interface every tinyllm tokenizer shares: the vocabulary table, special tokens, files.

A tokenizer turns text into a list of integer ids and back. Every tokenizer holds its
vocabulary as one table, set once by ``_set_vocab(tokens)``: ``itos[i]`` is the token string of
id ``i`` and ``stoi`` the reverse map. Everything that only reads that table lives here, once:
``vocab_size``, ``len(tok)``, ``token_to_id``, ``id_to_token``, ``get_vocab``,
``convert_tokens_to_ids``/``convert_ids_to_tokens`` (Hugging Face's names), and the special-token
ids (``pad_token_id``, ``unk_token_id``, ``bos_token_id``, ``eos_token_id``, ``mask_token_id``,
``cls_token_id``, ``sep_token_id``; ``None`` for a role the tokenizer does not have). A concrete
tokenizer adds only what differs: ``encode``, ``decode``, ``to_dict``/``from_dict``.

Two file formats:

* Hugging Face's: ``tok.save_pretrained(dir)`` writes ``tokenizer.json`` (+
  ``tokenizer_config.json``), which ``tokenizers.Tokenizer.from_file`` and transformers'
  ``PreTrainedTokenizerFast`` read; ``Tokenizer.from_pretrained(dir)`` reads it back, or any
  Hugging Face folder of a kind tinyllm implements (``tinyllm.tokenizers.hf``);
* tinyllm's own JSON schema (``{"type": "char", ...}``): ``tok.save(path)`` and
  ``Tokenizer.load(path)``, which also reads a Hugging Face ``tokenizer.json``.

Every problem with a file or a vocabulary raises ``TokenizerError`` (a ``ValueError``) naming the
file and the key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tinyllm import atomic, json_files

__all__ = ["Tokenizer", "TokenizerError", "SPECIAL_ROLES"]

SPECIAL_ROLES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")


class TokenizerError(ValueError):
    """A tokenizer file or vocabulary that cannot be used as it is (the message says why)."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) atomically, creating the folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)


def read_json(path: Path, what: str = "tokenizer JSON"):
    """The parsed JSON of ``path``, or ``TokenizerError`` naming the file."""
    return json_files.read_json(path, TokenizerError, f"is not valid {what}")


def _special_id_property(role: str) -> property:
    """A read-only property: the id of the special token of ``role`` ("pad", "eos", ...), or None."""
    return property(lambda self: self._special_id(role),
                    doc=f"The id of the {role} token (int), or None when there is none.")


class Tokenizer:
    """Base class: subclasses call ``_set_vocab`` and set ``self.special_tokens`` (role ->
    token string), and implement ``encode``, ``decode``, ``to_dict`` and ``from_dict``."""

    type_name = "tokenizer"
    _registry: dict[str, type[Tokenizer]] = {}

    itos: list[str]
    stoi: dict[str, int]
    special_tokens: dict[str, str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # only a class that names its own type is registered: a subclass that merely tweaks
        # one (in a test, say) must not take over loading of every file of its parent's type
        if "type_name" in cls.__dict__:
            Tokenizer._registry.setdefault(cls.type_name, cls)

    # --- what differs between tokenizers --------------------------------------------------
    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        raise NotImplementedError

    # --- the vocabulary table ---------------------------------------------------------------
    def _set_vocab(self, tokens, unique: bool = True) -> None:
        """``tokens[i]`` is the string of id ``i``. ``unique=False`` lets two ids share a string
        (byte-level BPE can build one string by two merge paths); ``stoi`` keeps the first."""
        self.itos = list(tokens)
        self.stoi = {}
        for i, t in enumerate(self.itos):
            if t in self.stoi:
                if unique:
                    raise TokenizerError(f"the vocabulary holds {t!r} twice (ids {self.stoi[t]} "
                                         f"and {i}): every token must have one id")
                continue
            self.stoi[t] = i

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token`` (a string of the vocabulary), or None."""
        return self.stoi.get(token)

    def id_to_token(self, i: int) -> str:
        return self.itos[self._check_ids([i])[0]]

    def get_vocab(self) -> dict[str, int]:
        """token string -> id (a copy)."""
        return dict(self.stoi)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.token_to_id(tokens)
        return [self.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.id_to_token(ids)
        return [self.itos[i] for i in self._check_ids(ids)]

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

    # --- special tokens --------------------------------------------------------------------
    def _special_id(self, role: str) -> int | None:
        tok = getattr(self, "special_tokens", {}).get(role)
        return None if tok is None else self.token_to_id(tok)

    # Hugging Face's names for the special tokens' ids (None when the tokenizer has no such role)
    pad_token_id = _special_id_property("pad")
    unk_token_id = _special_id_property("unk")
    bos_token_id = _special_id_property("bos")
    eos_token_id = _special_id_property("eos")
    mask_token_id = _special_id_property("mask")
    cls_token_id = _special_id_property("cls")
    sep_token_id = _special_id_property("sep")

    @property
    def all_special_ids(self) -> list[int]:
        ids = {self._special_id(r) for r in getattr(self, "special_tokens", {})}
        return sorted(i for i in ids if i is not None)

    # --- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """tinyllm's own JSON schema (``{"type": ..., ...}``) to ``path``, atomically."""
        d = {"type": self.type_name, **self.to_dict()}
        atomic_write_text(path, json.dumps(d, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """A file written by ``save`` or a Hugging Face ``tokenizer.json`` (with the
        ``tokenizer_config.json`` beside it, if any). Raises ``TokenizerError`` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}: save one with tok.save(path)")
        d = read_json(path)
        if not isinstance(d, dict):
            raise TokenizerError(f"{path} holds a JSON {type(d).__name__}, not a tokenizer "
                                 "(a JSON object with a 'type' or, for Hugging Face, a 'model')")
        if "type" not in d and "model" in d:
            from tinyllm.tokenizers.hf import from_tokenizer_json

            return _expect(cls, from_tokenizer_json(d, path), path)
        kind = d.get("type")
        target = cls if cls.type_name == kind else Tokenizer._registry.get(kind)
        if target is None or (cls is not Tokenizer and target is not cls):
            raise TokenizerError(
                f"{path} holds a tokenizer of type {kind!r}, expected "
                f"{cls.type_name if cls is not Tokenizer else sorted(Tokenizer._registry)}")
        try:
            return target.from_dict(d)
        except KeyError as e:
            raise TokenizerError(f"{path}: the {kind} tokenizer has no key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise TokenizerError(f"{path}: {e}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Hugging Face's files: ``tokenizer.json`` and ``tokenizer_config.json``."""
        from tinyllm.tokenizers.hf import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> Tokenizer:
        """Read a Hugging Face tokenizer folder: ``tokenizer.json`` (+ ``tokenizer_config.json``),
        or the older ``vocab.json`` + ``merges.txt`` (GPT-2) or ``vocab.txt`` (BERT)."""
        from tinyllm.tokenizers.hf import from_pretrained

        return _expect(cls, from_pretrained(directory), Path(directory))

    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer's JSON form: equal fingerprints encode identically."""
        blob = json.dumps({"type": self.type_name, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _expect(cls, tok: Tokenizer, where: Path) -> Tokenizer:
    if cls is not Tokenizer and not isinstance(tok, cls):
        raise TokenizerError(f"{where} holds a {type(tok).__name__}, not a {cls.__name__}: "
                             f"read it with {type(tok).__name__}.from_pretrained or "
                             "Tokenizer.from_pretrained")
    return tok
