"""Named GPT architectures: ``GPTConfig.from_preset(name, vocab_size=...)``.

``PRESETS[name]`` is ``{"config": GPTConfig keywords (no vocab_size), "about": one line}``. The
vocabulary size comes from the tokenizer (65 characters for Tiny Shakespeare). The training
settings that go with each (nanoGPT's) live in ``tinyllm.train.presets``, which builds on these.
"""

from __future__ import annotations

import copy

__all__ = ["PRESETS", "preset_config"]

PRESETS = {
    "baby-shakespeare": {
        "about": "a 0.8M-parameter character model that trains on a laptop CPU in minutes",
        "config": dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True),
    },
    "shakespeare-char": {
        "about": "nanoGPT's train_shakespeare_char config (10.7M parameters; a GPU helps)",
        "config": dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=True),
    },
}


def preset_config(name: str) -> dict:
    """The GPTConfig keywords of preset ``name`` (a fresh copy, without vocab_size)."""
    if name not in PRESETS:
        raise KeyError(f"unknown GPT preset {name!r}; choose from {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name]["config"])
