"""Preference tuning with DPO: a fine-tuned chat model taught to prefer its own replies that keep
the requested form over those that break it.

    tinyllm train --preset tang-dpo --init runs/tang-sft

The task (``task: dpo``) starts from a chat run (``init_from``, an SFT run; required), which is
also the frozen **reference** model. Its data are preference pairs drawn from the reference's
own samples: for each of ``n_prompts`` poem requests of the training split it samples
``samples_per_prompt`` replies (at ``sample_temperature``), and when some keep the requested
form (``tinyllm.data.instructions.quatrain_form``) and some break it, the first of each becomes
the pair (chosen, rejected); with ``gold_chosen`` a request whose samples all break the form
takes its real poem as the chosen reply. The held-out requests give the validation pairs. The reference's
log-probabilities of every pair are computed once, when the pairs are drawn (they are
constants); the loss is ``tinyllm.dpo.dpo_loss`` with ``beta``.

Each evaluation reports the losses (DPO's, on fixed batches of pairs), ``reward_accuracy`` (the
share of validation pairs whose implied reward ranks the chosen reply first) and the SFT task's
``form_rate`` and ``reverse_accuracy``; at step 0 they are the reference model's.
"""

from __future__ import annotations

import numpy as np

from tinyllm.train.config import ConfigError
from tinyllm.train.sft import SFTTask

__all__ = ["DPOTask", "preference_pairs"]


def preference_pairs(model, tokenizer, examples, samples_per_prompt: int, temperature: float,
                     seed: int, gold_chosen: bool = False) -> list[tuple]:
    """(request, chosen reply, rejected reply) for each poem request of ``examples`` among whose
    ``samples_per_prompt`` sampled replies some keep the requested form and some do not. With
    ``gold_chosen`` a request whose samples all break the form gets its real poem as the chosen
    reply (for a model that rarely keeps the form yet)."""
    from tinyllm.data.instructions import quatrain_form
    from tinyllm.train.replies import POEM_TOKENS, generate_replies

    convs = [e.messages(False) for e in examples for _ in range(samples_per_prompt)]
    replies = generate_replies(model, tokenizer, convs, POEM_TOKENS, seed=seed, do_sample=True,
                               temperature=temperature)
    pairs = []
    for i, e in enumerate(examples):
        mine = replies[i * samples_per_prompt:(i + 1) * samples_per_prompt]
        good = [r for r in mine if quatrain_form(r) == e.form]
        bad = [r for r in mine if quatrain_form(r) != e.form]
        if not good and gold_chosen:
            good = [e.response]
        if good and bad:
            pairs.append((e, good[0], bad[0]))
    return pairs


class DPOTask(SFTTask):
    """DPO on preference pairs from the reference model's own samples (see the module doc)."""

    kind = "dpo"
    TASK_ARGS = {**SFTTask.TASK_ARGS, "beta": (float, 0.1), "n_prompts": (int, 1000),
                 "n_val_prompts": (int, 200), "samples_per_prompt": (int, 4),
                 "sample_temperature": (float, 1.0), "gold_chosen": (bool, False)}

    def load_data(self):
        cfg = self.cfg
        if not cfg.init_from:
            raise ConfigError("task 'dpo' starts from a chat run, which is also its reference "
                              "model: give it with --init RUN (e.g. a tang-sft run)")
        super().load_data()  # the instructions, for the form and reversal measurements
        self.reference = self._load_reference()
        a = self.args
        rng = np.random.default_rng([cfg.seed, 22])
        self.info["pairs"] = {}
        for split, examples, n in (("train", self.train_examples, a["n_prompts"]),
                                   ("val", self.val_examples, a["n_val_prompts"])):
            poems = [e for e in examples if e.form is not None]
            chosen = [poems[i] for i in rng.permutation(len(poems))[:n]]
            pairs = preference_pairs(self.reference, self.tokenizer, chosen,
                                     a["samples_per_prompt"], a["sample_temperature"],
                                     cfg.seed + (0 if split == "train" else 1),
                                     a["gold_chosen"])
            if not pairs:
                raise ConfigError(f"no {split} preference pairs: the reference model's samples "
                                  "all keep the form or all break it (raise n_prompts, "
                                  "samples_per_prompt or sample_temperature)")
            rows = self._pair_rows(pairs)
            if split == "train":
                self.train_pairs = rows
            else:
                self.val_pairs = rows
            self.info["pairs"][split] = len(rows)

    def _load_reference(self):
        """The init run's model, adapters merged, frozen, in eval mode."""
        from tinyllm.nn.lora import merge_lora
        from tinyllm.train import checkpoint as ckpt
        from tinyllm.train.config import TrainConfig
        from tinyllm.train.tasks import build_task

        init = ckpt.load_checkpoint(self.cfg.init_from, optimizer=False)
        if init.tokenizer.fingerprint() != self.tokenizer.fingerprint():
            raise ConfigError(f"config key 'init_from': {self.cfg.init_from} has another "
                              "tokenizer than this run")
        init_cfg = TrainConfig.from_dict(init.config, where=f"{self.cfg.init_from}/config.json")
        if init_cfg.task not in ("sft", "dpo"):
            raise ConfigError(f"config key 'init_from': {self.cfg.init_from} is a "
                              f"{init_cfg.task!r} run; DPO starts from a chat run (tang-sft)")
        ref = build_task(init_cfg, tokenizer=init.tokenizer, load_data=False).model
        ref.load_state_dict(init.model)
        merge_lora(ref)
        ref.requires_grad_(False)
        return ref.eval()

    def _pair_rows(self, pairs) -> list[tuple]:
        """(chosen (ids, labels), rejected (ids, labels), reference log-probs (2,)) per pair
        that fits in ``block_size + 1`` tokens."""
        from tinyllm.data import render_chat

        rows = []
        for e, good, bad in pairs:
            msgs = e.messages(False)
            try:
                chosen, rejected = (render_chat(msgs + [{"role": "assistant", "content": c}],
                                                self.tokenizer) for c in (good, bad))
            except ValueError:  # a reply the tokenizer cannot encode back: left out
                continue
            if max(len(chosen[0]), len(rejected[0])) <= self.cfg.block_size + 1:
                rows.append((chosen, rejected))
        refs = self._logprobs(self.reference, rows)
        return [(c, r, refs[i]) for i, (c, r) in enumerate(rows)]

    def _logprobs(self, model, rows, batch: int = 64):
        """The (chosen, rejected) log-probabilities (N, 2) of ``rows`` under ``model``."""
        from tinyllm import backend
        from tinyllm.autograd import no_grad
        from tinyllm.data import collate_chat
        from tinyllm.dpo import sequence_logprobs

        out, device = [], backend.get_device(model.wte.weight.data)
        with no_grad():
            for s in range(0, len(rows), batch):
                part = rows[s:s + batch]
                x, y = (backend.as_array(a, device=device) for a in collate_chat(
                    [c for c, _ in part] + [r for _, r in part], self.tokenizer.end_token_id,
                    self.cfg.block_size))
                lp = sequence_logprobs(model(x), y).numpy()
                out.append(np.stack([lp[:len(part)], lp[len(part):]], axis=1))
        return np.concatenate(out).astype(np.float32)

    def load_pretrained_body(self, arrays: dict) -> int:
        """The policy starts as the reference (its merged weights)."""
        self._adopt_base_sizes()
        missing, unexpected = self.model.load_state_dict(self.reference.state_dict(),
                                                         strict=False)
        if [k for k in missing if ".lora_" not in k] or unexpected:
            raise ConfigError(f"config key 'init_from': {self.cfg.init_from}'s model does not "
                              f"fit this run's (missing {missing[:4]}, unexpected {unexpected[:4]})")
        return len(arrays)

    # ---------------------------------------------------------------- batches and loss
    def batch(self, split, rng):
        from tinyllm.data import collate_chat

        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        pairs = self.train_pairs if split == "train" else self.val_pairs
        idx = rng.integers(0, len(pairs), size=self.cfg.batch_size)
        part = [pairs[i] for i in idx]
        x, y = collate_chat([c for c, _, _ in part] + [r for _, r, _ in part],
                            self.tokenizer.end_token_id, self.cfg.block_size)
        refs = np.stack([ref for _, _, ref in part])  # (B, 2)
        b = len(part)
        # every input has the B pairs on axis 0, so that a step's micro-batches, threads and
        # ranks (shard_batch) cut whole pairs, and the loss's mean is over pairs (loss_weight)
        return {"chosen": x[:b], "chosen_targets": y[:b], "rejected": x[b:],
                "rejected_targets": y[b:], "ref_logps": refs}, int(x.size)

    def loss(self, inputs):
        from tinyllm import backend
        from tinyllm.dpo import dpo_loss, sequence_logprobs

        xp = backend.get_array_module(inputs["chosen"])
        x = xp.concatenate([inputs["chosen"], inputs["rejected"]])  # one forward for both
        y = xp.concatenate([inputs["chosen_targets"], inputs["rejected_targets"]])
        logps = sequence_logprobs(self.model(x), y)  # (2B,)
        b = len(inputs["chosen"])
        refs = inputs["ref_logps"]
        return dpo_loss(logps[:b], logps[b:], refs[:, 0], refs[:, 1], self.args["beta"])

    def loss_weight(self, inputs) -> int:
        """The pairs: DPO's loss is a mean over them (not over tokens)."""
        return len(inputs["chosen"])

    def metrics(self, rng, n=None) -> dict:
        if not self.data_loaded:
            return {}
        out = super().metrics(rng, n)
        self.model.eval()  # the trainer puts it back in training mode
        lp = self._logprobs(self.model, [(c, r) for c, r, _ in self.val_pairs])
        refs = np.stack([ref for _, _, ref in self.val_pairs])
        margin = (lp[:, 0] - refs[:, 0]) - (lp[:, 1] - refs[:, 1])
        out["reward_accuracy"] = float(np.mean(margin > 0))
        out["reward_margin"] = float(self.args["beta"] * margin.mean())
        return out
