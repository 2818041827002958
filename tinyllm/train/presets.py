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


def _size(n_layer: int, n_head: int, n_embd: int, block_size: int, dropout: float) -> dict:
    """A model's size as TrainConfig keys."""
    return dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                dropout=dropout)


_NANOGPT_OPT = dict(lr=1e-3, min_lr=1e-4, warmup_iters=100, weight_decay=0.1, betas=(0.9, 0.99),
                    grad_clip=1.0)


def _adam(lr=1e-3, min_lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, grad_clip=0.0) -> dict:
    """nanoGPT's schedule (100 warm-up steps, a cosine decay from ``lr`` to ``min_lr``) with
    Adam's default beta2 and, unless told otherwise, no weight decay and no clipping."""
    return {**_NANOGPT_OPT, "lr": lr, "min_lr": min_lr, "betas": betas,
            "weight_decay": weight_decay, "grad_clip": grad_clip}


def _tang_chat(task: str, **settings) -> dict:
    """A chat preset on tang-char's sizes (the base run's sizes replace them anyway)."""
    return {"task": task, "corpus": "tang_poems", "tokenizer": "char", "n_layer": 4, "n_head": 4,
            "n_embd": 128, "block_size": 64, "dropout": 0.0, "eval_iters": 10,
            "log_interval": 10, "val_fraction": 0.05,
            **{**_NANOGPT_OPT, "weight_decay": 0.0}, **settings}


# baby-shakespeare's data, steps and optimizer, which baby-llama and baby-distill share
_BABY = dict(task="lm", corpus="tinyshakespeare", tokenizer="char", **_gpt("baby-shakespeare"),
             batch_size=12, max_iters=2000, eval_interval=250, eval_iters=20, log_interval=10,
             sample_chars=200, **_adam())
_LOG = dict(eval_iters=20, log_interval=10)  # most runs' evaluation and logging

PRESETS: dict[str, dict] = {
    "baby-shakespeare": {
        "about": "GPT, characters of Tiny Shakespeare, 0.8M parameters: minutes on a laptop CPU",
        "config": dict(_BABY),
    },
    "baby-llama": {
        "about": "Llama (RoPE, RMSNorm, SwiGLU, 2 key/value heads), baby-shakespeare's size and run",
        "config": {**_BABY, "model_args": {"arch": "llama", "n_kv_head": 2,
                                           "intermediate_size": 384}},
    },
    "bigram-shakespeare": {
        "about": "the character bigram table (lesson 01) on Tiny Shakespeare: seconds",
        "config": dict(task="bigram", corpus="tinyshakespeare", tokenizer="char",
                       **_size(1, 1, 1, 1, 0.0), batch_size=256, max_iters=2000,
                       eval_interval=200, **_LOG, sample_chars=300,
                       **_adam(0.1, 0.01, weight_decay=0.01)),
    },
    "mlp-shakespeare": {
        "about": "Bengio et al.'s MLP language model (lesson 04), 8 characters of context",
        "config": dict(task="mlp", corpus="tinyshakespeare", tokenizer="char",
                       **_size(1, 1, 24, 8, 0.0), batch_size=256, max_iters=6000,
                       eval_interval=600, **_LOG, sample_chars=300,
                       model_args={"n_hidden": 256}, **_adam(3e-3, 3e-4, weight_decay=0.01)),
    },
    "baby-distill": {
        "about": "a 2-layer, 64-wide GPT student of Tiny Shakespeare distilled from --teacher RUN "
                 "(e.g. a baby-shakespeare run): the same data, steps and optimizer",
        "config": {**_BABY, "task": "distill", **_size(2, 4, 64, 64, 0.0),
                   "task_args": {"temperature": 2.0, "alpha": 0.5}},
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
        "config": dict(task="lm", corpus="tang_poems", tokenizer="char",
                       **_size(4, 4, 128, 64, 0.0), batch_size=16, max_iters=3000,
                       eval_interval=250, **_LOG, sample_chars=100, **_NANOGPT_OPT),
    },
    "tang-sft": {
        "about": "chat fine-tuning of a tang-char run (--init RUN): poem requests and reversals; "
                 "task_args.lora_rank=8 for LoRA",
        "config": _tang_chat("sft", batch_size=32, max_iters=1000, eval_interval=250,
                             task_args={"n_eval": 100}, lr=3e-4, min_lr=3e-5, warmup_iters=50),
    },
    "tang-dpo": {
        "about": "DPO of a tang-sft run (--init RUN) on pairs of its own replies that keep and "
                 "break the requested form",
        "config": _tang_chat("dpo", batch_size=16, max_iters=300, eval_interval=100,
                             task_args={"n_eval": 100, "beta": 0.1}, lr=5e-5, min_lr=5e-6,
                             warmup_iters=20),
    },
    "bert-tang": {
        "about": "BERT masked-LM on Tang poems (characters; 15% masked, BERT's 80/10/10 rule)",
        "config": dict(task="mlm", corpus="tang_poems", tokenizer="char",
                       **_size(4, 4, 128, 64, 0.1), batch_size=32, max_iters=3000,
                       eval_interval=250, **_LOG, task_args={"mlm_probability": 0.15},
                       **_adam(5e-4, 5e-5, weight_decay=0.01, grad_clip=1.0)),
    },
    "couplets": {
        "about": "encoder-decoder Transformer: the second line of a Tang couplet from the first",
        "config": dict(task="seq2seq", corpus="couplets", tokenizer="char",
                       **_size(3, 4, 128, 32, 0.1), batch_size=32, max_iters=3000,
                       eval_interval=250, **_LOG,
                       **_adam(5e-4, 5e-5, (0.9, 0.98), weight_decay=0.01, grad_clip=1.0)),
    },
    "digits-reverse": {
        "about": "encoder-decoder Transformer on a synthetic task: reverse a string of digits",
        "config": dict(task="seq2seq", corpus="digits-reverse", tokenizer="digits",
                       **_size(2, 4, 64, 16, 0.0), batch_size=32, max_iters=1500,
                       eval_interval=250, eval_iters=10, log_interval=10,
                       task_args={"n_train": 20000, "n_val": 500, "min_len": 3, "max_len": 10},
                       **_adam(1e-3, 1e-4, (0.9, 0.98), weight_decay=0.01, grad_clip=1.0)),
    },
    "tang-authors": {
        "about": "classify a Tang poem's author (12 most prolific) by fine-tuning an encoder",
        "config": dict(task="classify", corpus="tang_authors", tokenizer="char",
                       **_size(4, 4, 128, 64, 0.1), batch_size=32, max_iters=2000,
                       eval_interval=250, **_LOG, task_args={"top_k": 12},
                       **_adam(3e-4, 3e-5, weight_decay=0.01, grad_clip=1.0)),
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
