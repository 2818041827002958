"""Reading a JSON file that a user may have damaged: one exception, of the caller's error type,
naming the file and what is wrong with it. Standard library only, so every layer may use it.

    read_json(path, TokenizerError, "is not valid tokenizer JSON")
    # -> TokenizerError("vocab.json is not valid tokenizer JSON (Expecting value: line 1 ...)")

Bytes that are not UTF-8, text that is not JSON and JSON nested deeper than Python's parser can
follow (a ``RecursionError`` inside ``json.loads``) all become ``error``; a missing file stays a
``FileNotFoundError`` (callers that know what the file is for say so first).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_json"]


def read_json(path, error: type[Exception], problem: str):
    """The parsed JSON of ``path``, or ``error(f"{path} {problem} (why)")``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path} {problem} ({e})") from None
    except RecursionError:
        raise error(f"{path} {problem}: it nests too deeply") from None
