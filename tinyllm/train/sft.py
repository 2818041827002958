"""Supervised fine-tuning (SFT): a pretrained language model taught the chat format.

    tinyllm train --preset tang-char --out runs/tang-char            # the base model
    tinyllm train --preset tang-sft --init runs/tang-char            # full fine-tuning
    tinyllm train --preset tang-sft --init runs/tang-char --set task_args.lora_rank=8

The task (``task: sft``) takes the base run's model and tokenizer: the tokenizer gets the chat
format's tokens appended (``ChatTokenizer``: the base ids unchanged), the embedding table (and
an untied head) one new row per added token, and the model's sizes are the base run's
(``n_layer``, ``n_head``, ``n_embd``, ``block_size``, ``model_args``; the preset's are replaced
by them). The data are the instructions of ``tinyllm.data.instructions``: poem requests answered
by real quatrains and reversal requests, rendered by the chat template; the loss is the
cross-entropy on the assistant's tokens only (the template's loss mask). Conversations longer
than ``block_size + 1`` tokens are left out.

Each evaluation measures, besides the losses, ``form_rate`` and ``reverse_accuracy`` on held-out
requests (``tinyllm.train.replies``); the first evaluation, at step 0, is the base model's.

``task_args``: ``lora_rank`` (0: full fine-tuning; r > 0: LoRA adapters of rank r on
``lora_targets`` with ``lora_alpha`` and ``lora_dropout``, everything else frozen, see
``tinyllm.nn.lora``), ``n_reverse`` (training reversal requests), ``n_eval`` (held-out requests of
each kind per evaluation), ``eval_temperature`` (the poems' sampling temperature).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyllm.train.config import ConfigError, TrainConfig, coerce
from tinyllm.train.tasks import LMTask

__all__ = ["SFTTask", "extend_vocab_rows"]

MODEL_SIZES = ("n_layer", "n_head", "n_embd", "block_size", "model_args")
VOCAB_TABLES = ("wte.weight", "lm_head.weight")  # the rows that follow the vocabulary


def task_args(task_cls, cfg: TrainConfig) -> dict:
    """``cfg.task_args`` coerced to ``task_cls.TASK_ARGS``'s types, defaults filled in."""
    spec = task_cls.TASK_ARGS
    unknown = sorted(set(cfg.task_args) - set(spec))
    if unknown:
        raise ConfigError(f"config key 'task_args.{unknown[0]}': task {cfg.task!r} has no such "
                          f"setting (it reads {', '.join(sorted(spec))})")
    return {k: coerce(f"task_args.{k}", cfg.task_args[k], tp) if k in cfg.task_args else d
            for k, (tp, d) in spec.items()}


def extend_vocab_rows(table, n_new: int, seed: int):
    """``table`` (V, C) with ``n_new`` rows appended, each drawn from N(mean, std) of the rows
    (per channel): new tokens look like typical ones and differ from each other."""
    table = np.asarray(table)
    rng = np.random.default_rng([seed, 21])
    new = table.mean(0) + table.std(0) * rng.standard_normal((n_new, table.shape[1]))
    return np.concatenate([table, new.astype(table.dtype)])


class SFTTask(LMTask):
    """Chat-format fine-tuning on the Tang instructions (see the module doc)."""

    kind = "sft"
    can_sample = True
    TASK_ARGS = {"lora_rank": (int, 0), "lora_alpha": (float, 16.0),
                 "lora_targets": (str, "all-linear"), "lora_dropout": (float, 0.0),
                 "n_reverse": (int, 20000), "n_eval": (int, 100),
                 "eval_temperature": (float, 1.0)}

    def __init__(self, cfg: TrainConfig, tokenizer=None, load_data: bool = True):
        from tinyllm.tokenizers import ChatTokenizer

        self.args = task_args(type(self), cfg)
        if tokenizer is not None and not isinstance(tokenizer, ChatTokenizer):
            tokenizer = ChatTokenizer(tokenizer)  # a base run's: the chat tokens appended
        super().__init__(cfg, tokenizer=tokenizer, load_data=load_data)

    # ---------------------------------------------------------------- data
    def load_data(self):
        from tinyllm.data import instruction_splits, load_tang_poems

        cfg = self.cfg
        if cfg.corpus != "tang_poems":
            raise ConfigError(f"config key 'corpus': task {cfg.task!r} builds its instructions "
                              f"from 'tang_poems', got {cfg.corpus!r}")
        poems = load_tang_poems()
        if self.tokenizer is None:  # no base run: a character vocabulary of the poems
            from tinyllm.tokenizers import ChatTokenizer

            from .tasks import _char_tokenizer

            self.tokenizer = ChatTokenizer(_char_tokenizer("\n".join(p.text for p in poems)))
        self.examples = instruction_splits(poems, seed=cfg.seed, val_fraction=cfg.val_fraction,
                                           n_reverse=self.args["n_reverse"])
        self._render()

    def _render(self):
        """The rendered (ids, labels) of every example that the tokenizer encodes and that fits
        in ``block_size + 1`` tokens; ``self.train_examples`` and ``self.val_examples`` the
        examples kept."""
        from tinyllm.data import render_chat

        limit, kept = self.cfg.block_size + 1, {}
        for split, examples in self.examples.items():
            rows, ok = [], []
            for e in examples:
                try:
                    ids, labels = render_chat(e.messages(), self.tokenizer)
                except ValueError:  # a character the base tokenizer does not know
                    continue
                if len(ids) <= limit:
                    rows.append((ids, labels))
                    ok.append(e)
            if not rows:
                raise ConfigError(f"config key 'block_size' ({self.cfg.block_size}): no {split} "
                                  "conversation fits, or the tokenizer encodes none")
            kept[split] = (rows, ok)
        (self.train_data, self.train_examples), (self.val_data, self.val_examples) = (
            kept["train"], kept["val"])
        self.info["examples"] = {s: len(r) for s, (r, _) in kept.items()}

    def batch(self, split, rng):
        from tinyllm.data import collate_chat

        rows = self._pick(split)
        idx = rng.integers(0, len(rows), size=self.cfg.batch_size)
        x, y = collate_chat([rows[i] for i in idx], self.tokenizer.end_token_id,
                            self.cfg.block_size)
        return {"idx": x, "targets": y}, int(sum(min(len(rows[i][0]) - 1, x.shape[1])
                                                 for i in idx))

    # ---------------------------------------------------------------- model
    def build_model(self):
        model = super().build_model()
        if self.args["lora_rank"] > 0:
            from tinyllm.nn.lora import apply_lora

            a = self.args
            try:
                self.info["lora_layers"] = apply_lora(model, a["lora_targets"], a["lora_rank"],
                                                      a["lora_alpha"], a["lora_dropout"])
            except ValueError as e:
                raise ConfigError(f"config key 'task_args.lora_*': {e}") from None
        return model

    def load_pretrained_body(self, arrays: dict) -> int:
        """Start from a base run's weights (``init_from``): adopt its model sizes, rebuild the
        model, and copy the weights in, the vocabulary tables grown by the added tokens' rows.
        LoRA's adapters (absent from a base run) keep their initialisation."""
        self._adopt_base_sizes()
        arrays = dict(arrays)
        v, v_base = self.tokenizer.vocab_size, self.tokenizer.base_vocab_size
        for name in VOCAB_TABLES:
            if name in arrays and arrays[name].shape[0] == v_base and v > v_base:
                arrays[name] = extend_vocab_rows(arrays[name], v - v_base, self.cfg.seed)
        missing, unexpected = self.model.load_state_dict(arrays, strict=False)
        bad = [k for k in missing if ".lora_" not in k]
        if bad or unexpected:
            raise ConfigError(f"config key 'init_from': {self.cfg.init_from} holds another "
                              f"model (missing {bad[:4]}, unexpected {unexpected[:4]})")
        return len(arrays)

    def _adopt_base_sizes(self) -> None:
        path = Path(self.cfg.init_from or "") / "config.json"
        if not path.is_file():
            return
        base = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: base[k] for k in MODEL_SIZES if k in base and base[k] != getattr(self.cfg, k)}
        if not changed:
            return
        old_block = self.cfg.block_size
        for k, v in changed.items():
            setattr(self.cfg, k, v)
        self.cfg.validate()
        self.model = self.build_model()
        if self.data_loaded and self.cfg.block_size != old_block:
            self._render()

    # ---------------------------------------------------------------- measuring and sampling
    def metrics(self, rng, n=None) -> dict:
        from tinyllm.train.replies import assistant_metrics

        if not self.data_loaded:
            return {}
        return assistant_metrics(self.model, self.tokenizer, self.val_examples,
                                 n or self.args["n_eval"], self.args["eval_temperature"],
                                 seed=self.cfg.seed)

    def sample(self, prompt=None, max_new_tokens=200, num_beams=1, **sampling) -> list[str]:
        """The model's reply to the user message ``prompt`` (``tinyllm sample --prompt``)."""
        from tinyllm.data import chat_prompt_ids

        if not prompt:
            raise ValueError("sample for a chat run needs --prompt (the user's message); for a "
                             "conversation use tinyllm chat")
        ids = np.asarray([chat_prompt_ids([{"role": "user", "content": prompt}],
                                          self.tokenizer)], dtype=np.int64)
        out = self.model.generate(ids, max_new_tokens, num_beams=num_beams,
                                  eos_token_id=self.tokenizer.end_token_id, **sampling)
        from tinyllm.train.replies import reply_text

        return [reply_text(self.tokenizer, row[ids.shape[1]:].tolist()) for row in out]
