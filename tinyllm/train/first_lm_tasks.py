"""The first language models as trainer tasks: the bigram table and Bengio et al.'s MLP.

    tinyllm train --preset bigram-shakespeare      # task "bigram": BigramLM, pairs of characters
    tinyllm train --preset mlp-shakespeare         # task "mlp": MLPLM, block_size characters of
                                                   # context -> the next one
    tinyllm demo --model mlp                       # the same runs, with the demo's flags

Both read the running text of ``TextTask`` (so the corpus, its checks and the train/validation
split are GPT's). The bigram model reads windows of ``block_size`` characters and predicts each
next one (``block_size=1``: single pairs); the MLP reads ``block_size`` characters and predicts
the one after them. A run starts by printing the loss of the *counting* bigram model (pair
counts with add-one smoothing, no training) and of uniform guessing, the two references the
trained models are measured against.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm.train.task import TextTask

__all__ = ["BigramTask", "MLPTask"]


class _FirstLM(TextTask):
    can_sample = True

    def loss(self, inputs):
        return self.model(inputs["idx"], inputs["targets"])[1]

    def notes(self) -> list[str]:
        from tinyllm.models.bigram import bigram_counts_loss

        v = self.tokenizer.vocab_size
        ref = bigram_counts_loss(self.train_data, self.val_data, v, smoothing=1.0)
        return [f"reference: the counting bigram model (add-one smoothing) has val loss "
                f"{ref:.4f} nats; uniform guessing has {math.log(v):.4f}"]

    def sample(self, prompt=None, max_new_tokens=200, do_sample=True, temperature=1.0,
               top_k=None, top_p=None, num_beams=1, seed=None,
               num_return_sequences=1) -> list[str]:
        """Text from the model's own sampler (``temperature``; 0 or ``do_sample=False`` is
        greedy). Top-k below the vocabulary, top-p and beams are not implemented here."""
        v = self.tokenizer.vocab_size
        unsupported = {"top_p": top_p, "num_beams": num_beams if num_beams != 1 else None,
                       "top_k": top_k if top_k is not None and top_k < v else None}
        bad = {k: x for k, x in unsupported.items() if x is not None}
        if bad:
            raise ValueError(f"{type(self.model).__name__} samples with a temperature only; "
                             f"{', '.join(f'{k}={x}' for k, x in bad.items())} is not supported "
                             "(leave it out)")
        t = temperature if do_sample else 0.0
        return [self.model.sample(self.tokenizer, max_new_tokens, prompt or None,
                                  seed=None if seed is None else seed + i, temperature=t)
                for i in range(num_return_sequences)]

    def end_sample(self, n: int, seed: int) -> str:
        return self.sample(None, n, temperature=0.8, seed=seed)[0]


class BigramTask(_FirstLM):
    """``BigramLM``: the (V, V) table of next-character logits."""

    kind = "bigram"

    def build_model(self):
        from tinyllm.models.bigram import BigramLM

        return self.build(BigramLM, vocab_size=self.tokenizer.vocab_size)

    def model_config(self) -> dict:
        return {"vocab_size": self.model.vocab_size}


class MLPTask(_FirstLM):
    """``MLPLM``: ``block_size`` characters of context -> the next one (``n_embd`` per
    character; ``model_args.n_hidden`` hidden units)."""

    kind = "mlp"

    def build_model(self):
        from tinyllm.models.mlp_lm import MLPLM

        c = self.cfg
        return self.build(MLPLM, vocab_size=self.tokenizer.vocab_size, context=c.block_size,
                          n_embd=c.n_embd)

    def batch(self, split, rng):
        inputs, _ = super().batch(split, rng)  # windows (B, T) and their shift by one
        x = inputs["idx"]
        return {"idx": x, "targets": np.ascontiguousarray(inputs["targets"][:, -1])}, x.shape[0]

    def model_config(self) -> dict:
        m = self.model
        return {"vocab_size": m.vocab_size, "context": m.context, "n_embd": m.n_embd,
                "n_hidden": m.n_hidden}
