"""Named training runs: ``tinyllm train --preset NAME``.

Each preset is a dict of ``TrainConfig`` keys (the rest keep their defaults) and one line about
it. ``baby-shakespeare`` is nanoGPT's ``train_shakespeare_char`` run in its CPU form (block 64,
batch 12, 4 layers, 4 heads, 128 wide, no dropout, AdamW at 1e-3 with a cosine decay to 1e-4,
2,000 iterations; nanoGPT reports a validation loss of about 1.88 for it). Its optimizer
differs from nanoGPT's in three settings that nanoGPT tuned for longer runs: Adam's default
beta2 = 0.999 (not 0.99), no weight decay (not 0.1) and no gradient clipping (not 1.0). Over
six seeds that lowers the validation loss from 1.905 to 1.877 (docs/benchmarks.md, "Training
quality"); ``--set betas=0.9,0.99 --set weight_decay=0.1 --set grad_clip=1`` restores nanoGPT's.
``baby-llama`` is the same run with a Llama (``model_args.arch``) of the same parameter count.
"""

from __future__ import annotations

import copy

from tinyllm.models.presets import preset_config as gpt_preset
from tinyllm.train.config import ConfigError, TrainConfig, apply_overrides

__all__ = ["PRESETS", "preset_names", "preset_config"]

def _gpt(name: str) -> dict:
    """The architecture of GPT preset ``name`` (tinyllm.models.presets), as TrainConfig keys."""
    arch = gpt_preset(name)
    return {k: arch[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")}


_NANOGPT_OPT = dict(lr=1e-3, min_lr=1e-4, warmup_iters=100, weight_decay=0.1, betas=(0.9, 0.99),
                    grad_clip=1.0)

PRESETS: dict[str, dict] = {
    "baby-shakespeare": {
        "about": "GPT, characters of Tiny Shakespeare, 0.8M parameters: minutes on a laptop CPU",
        "config": dict(task="lm", corpus="tinyshakespeare", tokenizer="char",
                       **_gpt("baby-shakespeare"), batch_size=12,
                       max_iters=2000, eval_interval=250, eval_iters=20, log_interval=10,
                       sample_chars=200,
                       **{**_NANOGPT_OPT, "betas": (0.9, 0.999), "weight_decay": 0.0,
                          "grad_clip": 0.0}),
    },
    "baby-llama": {
        "about": "Llama (RoPE, RMSNorm, SwiGLU, 2 key/value heads), baby-shakespeare's size and run",
        "config": dict(task="lm", corpus="tinyshakespeare", tokenizer="char",
                       **_gpt("baby-shakespeare"), batch_size=12,
                       model_args={"arch": "llama", "n_kv_head": 2, "intermediate_size": 384},
                       max_iters=2000, eval_interval=250, eval_iters=20, log_interval=10,
                       sample_chars=200,
                       **{**_NANOGPT_OPT, "betas": (0.9, 0.999), "weight_decay": 0.0,
                          "grad_clip": 0.0}),
    },
    "bigram-shakespeare": {
        "about": "the character bigram table (lesson 01) on Tiny Shakespeare: seconds",
        "config": dict(task="bigram", corpus="tinyshakespeare", tokenizer="char", n_layer=1,
                       n_head=1, n_embd=1, block_size=1, dropout=0.0, batch_size=256,
                       max_iters=2000, eval_interval=200, eval_iters=20, log_interval=10,
                       sample_chars=300,
                       **{**_NANOGPT_OPT, "lr": 0.1, "min_lr": 0.01, "betas": (0.9, 0.999),
                          "weight_decay": 0.01, "grad_clip": 0.0}),
    },
    "mlp-shakespeare": {
        "about": "Bengio et al.'s MLP language model (lesson 04), 8 characters of context",
        "config": dict(task="mlp", corpus="tinyshakespeare", tokenizer="char", n_layer=1,
                       n_head=1, n_embd=24, block_size=8, dropout=0.0, batch_size=256,
                       max_iters=6000, eval_interval=600, eval_iters=20, log_interval=10,
                       sample_chars=300, model_args={"n_hidden": 256},
                       **{**_NANOGPT_OPT, "lr": 3e-3, "min_lr": 3e-4, "betas": (0.9, 0.999),
                          "weight_decay": 0.01, "grad_clip": 0.0}),
    },
    "baby-distill": {
        "about": "a 2-layer, 64-wide GPT student of Tiny Shakespeare distilled from --teacher RUN "
                 "(e.g. a baby-shakespeare run): the same data, steps and optimizer",
        "config": dict(task="distill", corpus="tinyshakespeare", tokenizer="char",
                       n_layer=2, n_head=4, n_embd=64, block_size=64, dropout=0.0,
                       batch_size=12, max_iters=2000, eval_interval=250, eval_iters=20,
                       log_interval=10, sample_chars=200,
                       task_args={"temperature": 2.0, "alpha": 0.5},
                       **{**_NANOGPT_OPT, "betas": (0.9, 0.999), "weight_decay": 0.0,
                          "grad_clip": 0.0}),
    },
    "shakespeare-char": {
        "about": "GPT, nanoGPT's train_shakespeare_char (10.7M parameters; a GPU helps)",
        "config": dict(task="lm", corpus="tinyshakespeare", tokenizer="char",
                       **_gpt("shakespeare-char"), batch_size=64,
                       max_iters=5000, eval_interval=250, eval_iters=200, log_interval=10,
                       sample_chars=500, **_NANOGPT_OPT),
    },
    "tang-char": {
        "about": "GPT, characters of Tang poems (five- and seven-character regulated verse)",
        "config": dict(task="lm", corpus="tang_poems", tokenizer="char", n_layer=4, n_head=4,
                       n_embd=128, block_size=64, dropout=0.0, batch_size=16, max_iters=3000,
                       eval_interval=250, eval_iters=20, log_interval=10, sample_chars=100,
                       **_NANOGPT_OPT),
    },
    "bert-tang": {
        "about": "BERT masked-LM on Tang poems (characters; 15% masked, BERT's 80/10/10 rule)",
        "config": dict(task="mlm", corpus="tang_poems", tokenizer="char", n_layer=4, n_head=4,
                       n_embd=128, block_size=64, dropout=0.1, batch_size=32, max_iters=3000,
                       eval_interval=250, eval_iters=20, log_interval=10,
                       task_args={"mlm_probability": 0.15},
                       **{**_NANOGPT_OPT, "lr": 5e-4, "min_lr": 5e-5, "betas": (0.9, 0.999),
                          "weight_decay": 0.01}),
    },
    "couplets": {
        "about": "encoder-decoder Transformer: the second line of a Tang couplet from the first",
        "config": dict(task="seq2seq", corpus="couplets", tokenizer="char", n_layer=3, n_head=4,
                       n_embd=128, block_size=32, dropout=0.1, batch_size=32, max_iters=3000,
                       eval_interval=250, eval_iters=20, log_interval=10,
                       **{**_NANOGPT_OPT, "lr": 5e-4, "min_lr": 5e-5, "betas": (0.9, 0.98),
                          "weight_decay": 0.01}),
    },
    "digits-reverse": {
        "about": "encoder-decoder Transformer on a synthetic task: reverse a string of digits",
        "config": dict(task="seq2seq", corpus="digits-reverse", tokenizer="digits", n_layer=2,
                       n_head=4, n_embd=64, block_size=16, dropout=0.0, batch_size=32,
                       max_iters=1500, eval_interval=250, eval_iters=10, log_interval=10,
                       task_args={"n_train": 20000, "n_val": 500, "min_len": 3, "max_len": 10},
                       **{**_NANOGPT_OPT, "lr": 1e-3, "min_lr": 1e-4, "betas": (0.9, 0.98),
                          "weight_decay": 0.01}),
    },
    "tang-authors": {
        "about": "classify a Tang poem's author (12 most prolific) by fine-tuning an encoder",
        "config": dict(task="classify", corpus="tang_authors", tokenizer="char", n_layer=4,
                       n_head=4, n_embd=128, block_size=64, dropout=0.1, batch_size=32,
                       max_iters=2000, eval_interval=250, eval_iters=20, log_interval=10,
                       task_args={"top_k": 12},
                       **{**_NANOGPT_OPT, "lr": 3e-4, "min_lr": 3e-5, "betas": (0.9, 0.999),
                          "weight_decay": 0.01}),
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset_config(name: str) -> TrainConfig:
    """A fresh ``TrainConfig`` holding preset ``name``'s values."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(preset_names())}")
    cfg = apply_overrides(TrainConfig(), copy.deepcopy(PRESETS[name]["config"]),
                          where=f"preset {name!r}")
    cfg.preset = name
    return cfg
