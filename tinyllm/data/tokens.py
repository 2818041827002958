"""Token streams cached on disk: a flat integer ``.bin`` plus a JSON sidecar, opened by memmap.

``TokenStream.build(text, tokenizer, cache_dir, name)`` encodes once and writes
``<name>-<key>.bin`` (uint16 when the vocabulary fits, else uint32) and ``<name>-<key>.json``
(dtype, length, tokenizer fingerprint, text SHA-256), both atomically; the next call with the
same text and tokenizer only maps the file (no encoding), so a second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tinyllm import atomic


def atomic_write_text(path: Path, text: str) -> None:
    atomic.write_text(path, text)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic.write_bytes(path, data)


def _fingerprint(tokenizer) -> str:
    """A tinyllm tokenizer's ``fingerprint()``; others need one too (duck typing keeps data
    independent of the tokenizers package)."""
    fp = getattr(tokenizer, "fingerprint", None)
    if fp is None:
        raise TypeError(f"{type(tokenizer).__name__} has no fingerprint() to key the cache by")
    return fp()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _atomic_write_array(path: Path, arr: np.ndarray) -> None:
    _atomic_write_bytes(path, np.ascontiguousarray(arr).tobytes())


class TokenStream:
    """A read-only flat array of token ids (``.tokens``, a ``np.memmap``) and its metadata."""

    def __init__(self, tokens: np.ndarray, meta: dict, path: Path | None = None):
        self.tokens = tokens
        self.meta = meta
        self.path = path

    def __len__(self) -> int:
        return len(self.tokens)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.tokens, dtype=dtype)

    @staticmethod
    def cache_key(text: str, tokenizer) -> str:
        h = hashlib.sha256(_fingerprint(tokenizer).encode())
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
        return h.hexdigest()[:16]

    @classmethod
    def build(cls, text: str, tokenizer, cache_dir: str | os.PathLike,
              name: str = "tokens") -> TokenStream:
        """Encode ``text`` with ``tokenizer`` into ``cache_dir`` unless already cached."""
        if not text:
            raise ValueError("cannot build a token stream from an empty text")
        cache_dir = Path(cache_dir)
        key = cls.cache_key(text, tokenizer)
        bin_path = cache_dir / f"{name}-{key}.bin"
        meta_path = bin_path.with_suffix(".json")
        if bin_path.is_file() and meta_path.is_file():
            try:
                return cls.open(bin_path)
            except ValueError:
                pass  # stale or damaged: rebuild below
        dtype = token_dtype(tokenizer.vocab_size)
        arr = np.asarray(tokenizer.encode(text), dtype=np.int64)
        if len(arr) == 0:
            raise ValueError("the tokenizer produced no tokens for this text")
        cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_array(bin_path, arr.astype(dtype))
        meta = {"dtype": dtype.name, "length": int(len(arr)), "vocab_size": tokenizer.vocab_size,
                "tokenizer_fingerprint": _fingerprint(tokenizer), "key": key,
                "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
        atomic_write_text(meta_path, json.dumps(meta, indent=1))
        return cls.open(bin_path)

    @classmethod
    def open(cls, bin_path: str | os.PathLike) -> TokenStream:
        bin_path = Path(bin_path)
        meta_path = bin_path.with_suffix(".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"no sidecar {meta_path} for {bin_path}: rebuild the cache")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        expected = meta["length"] * dtype.itemsize
        if bin_path.stat().st_size != expected:
            raise ValueError(f"{bin_path} has {bin_path.stat().st_size} bytes, its sidecar says "
                             f"{expected}: delete both files to rebuild")
        tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(meta["length"],))
        return cls(tokens, meta, bin_path)


def encode_to_cache(text: str, tokenizer, cache_dir, name: str = "tokens"):
    """The cached token ids of ``text`` as a read-only memmap."""
    return TokenStream.build(text, tokenizer, cache_dir, name).tokens
