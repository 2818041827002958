"""Named GPT sizes with the training settings that go with them.

``PRESETS[name]`` is ``{"config": GPTConfig keywords (no vocab_size), "train": training defaults,
"about": one line}``. The vocabulary size comes from the tokenizer: 65 characters for Tiny
Shakespeare. ``GPTConfig.from_preset(name, vocab_size=65)`` builds the config;
``training_defaults(name)`` gives the trainer's settings (nanoGPT's names).
"""

from __future__ import annotations

import copy

__all__ = ["PRESETS", "preset_config", "training_defaults"]

PRESETS = {
    "baby-shakespeare": {
        "about": "a 0.8M-parameter character model that trains on a laptop CPU in minutes",
        "config": dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True),
        "train": dict(batch_size=32, learning_rate=1e-3, min_lr=1e-4, max_iters=2000,
                      warmup_iters=100, lr_decay_iters=2000, weight_decay=0.1, beta1=0.9,
                      beta2=0.99, grad_clip=1.0, eval_interval=200, eval_iters=20),
    },
    "shakespeare-char": {
        "about": "nanoGPT's train_shakespeare_char config (10.7M parameters; a GPU helps)",
        "config": dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=True),
        "train": dict(batch_size=64, learning_rate=1e-3, min_lr=1e-4, max_iters=5000,
                      warmup_iters=100, lr_decay_iters=5000, weight_decay=0.1, beta1=0.9,
                      beta2=0.99, grad_clip=1.0, eval_interval=250, eval_iters=200),
    },
}


def _get(name: str) -> dict:
    if name not in PRESETS:
        raise KeyError(f"unknown GPT preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str) -> dict:
    """The GPTConfig keywords of preset ``name`` (a fresh copy, without vocab_size)."""
    return copy.deepcopy(_get(name)["config"])


def training_defaults(name: str) -> dict:
    """The training settings of preset ``name`` (a fresh copy)."""
    return copy.deepcopy(_get(name)["train"])
