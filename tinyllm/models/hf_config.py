"""Reading a Hugging Face ``config.json`` for the loaders (``hf_gpt2``, ``hf_bert``): one error
type, typed keys, and options the implementation does not have refused by name.

Every problem raises ``HFCheckpointError`` (a ``ValueError``) whose message starts with the file
and names the key: ``config.json: 'hidden_size' must be an integer, got '16' (str)``. A loader
never lets an ``AttributeError`` or a ``KeyError`` of a malformed file escape, and never reads a
checkpoint approximately: an option tinyllm's model does not implement (cross-attention, a
decoder flag, relative positions, ...) is refused, not ignored. ``model_from_state`` builds the
model once the checkpoint's weights are converted to tinyllm's names.
"""

from __future__ import annotations

import json
import os

__all__ = ["HFCheckpointError", "read_config", "typed", "refuse", "model_from_state"]


class HFCheckpointError(ValueError):
    """A Hugging Face checkpoint (config or weights) that does not fit the model: a missing,
    unexpected or wrongly typed key, a wrong shape, an unsupported option."""


_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
MISSING = object()


def read_config(path) -> dict:
    """The JSON object of ``config.json`` at ``path`` (``FileNotFoundError`` when missing)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: a Hugging Face model folder holds "
                                "config.json and model.safetensors")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFCheckpointError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise HFCheckpointError(f"{path}: not a model config (its JSON nests too deeply)") from None
    if not isinstance(cfg, dict):
        raise HFCheckpointError(f"{path}: holds a JSON {type(cfg).__name__}; a config.json is "
                                "one JSON object of settings")
    return cfg


def _fits(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def typed(cfg: dict, key: str, kind, where, default=MISSING, optional: bool = False):
    """``cfg[key]`` checked to be of ``kind`` (int, float, str, bool); ``default`` when absent
    (no default: the key is required). ``optional``: null is allowed and returns None."""
    if key not in cfg:
        if default is MISSING:
            raise HFCheckpointError(f"{where}: missing key {key!r} ({_KINDS[kind]})")
        return default
    value = cfg[key]
    if value is None and optional:
        return None
    if not _fits(value, kind):
        raise HFCheckpointError(f"{where}: {key!r} must be {_KINDS[kind]}"
                                f"{' or null' if optional else ''}, got {value!r} "
                                f"({type(value).__name__})")
    return float(value) if kind is float else value


def refuse(cfg: dict, where, what: str, supported: dict) -> None:
    """Refuse every key of ``supported`` (key -> the only value(s) tinyllm implements, a tuple)
    whose value in ``cfg`` is another one; absent keys are fine."""
    bad = [f"{k}={cfg[k]!r}" for k, ok in supported.items() if k in cfg and cfg[k] not in ok]
    if bad:
        raise HFCheckpointError(f"{where}: option(s) {', '.join(bad)} are not supported by "
                                f"tinyllm's {what}; it implements "
                                + ", ".join(f"{k}={'/'.join(map(repr, ok))}"
                                            for k, ok in supported.items()))


def model_from_state(cls, config, state: dict, dtype="float32"):
    """``cls(config)`` holding ``state`` (tinyllm's names, checked by ``load_state_dict``) in
    ``dtype``: the checkpoint decides the values, the caller the dtype."""
    model = cls(config)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    model.load_state_dict(state)
    return model
