"""One small builder per objective: the data, the tokenizer, the model and its loss.

``build_task(cfg, tokenizer=None, load_data=True)`` returns a ``Task`` (``tinyllm.train.task``
describes the interface). The trainer only ever talks to that interface, so one loop serves GPT,
BERT, the encoder-decoder Transformer, the classifier and the first models (bigram, MLP; in
``first_lm_tasks.py``). Every random draw of the data takes the ``rng`` it is given: the
trainer's batch generator, saved in each checkpoint.

A new task: a ``Task`` subclass (in a file of its own if it is large) and one line in
``TASK_CLASSES`` below; its name goes in ``TASKS`` of ``config.py``.
"""

from __future__ import annotations

import numpy as np

from tinyllm.train.config import ConfigError, TrainConfig
from tinyllm.train.first_lm_tasks import BigramTask, MLPTask
from tinyllm.train.task import IGNORE_INDEX, Task, TextTask, char_tokenizer, pad_rows

__all__ = ["Task", "build_task", "LMTask", "MLMTask", "Seq2SeqTask", "ClassifyTask",
           "BigramTask", "MLPTask", "TASK_CLASSES"]

BERT_SPECIALS = ["<pad>", "<unk>", "<mask>", "<bos>", "<eos>"]  # <bos> is [CLS], <eos> [SEP]
SEQ2SEQ_SPECIALS = ["<pad>", "<bos>", "<eos>"]


# ------------------------------------------------------------------------------ GPT, causal LM
class LMTask(TextTask):
    """Next-token prediction on a running text (nanoGPT): random windows of block_size + 1."""

    kind = "lm"
    can_sample = True

    def build_model(self):
        from tinyllm.models.gpt import GPT, GPTConfig
        from tinyllm.models.llama import Llama, LlamaConfig

        c = self.cfg
        arch = c.model_args.get("arch", "gpt")  # model_args.arch picks the decoder
        if arch not in ("gpt", "llama"):
            raise ConfigError(f"config key 'model_args.arch' must be 'gpt' or 'llama', got {arch!r}")
        config_cls, model_cls = (LlamaConfig, Llama) if arch == "llama" else (GPTConfig, GPT)
        return model_cls(self.build(config_cls, ignore=("arch",),
                                    vocab_size=self.tokenizer.vocab_size, block_size=c.block_size,
                                    n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                    dropout=c.dropout))

    def loss(self, inputs):
        return self.model(inputs["idx"], inputs["targets"])[1]

    def prompt_ids(self, prompt: str | None):
        tok = self.tokenizer
        if not prompt:
            prompt = "\n" if tok.token_to_id("\n") is not None else tok.decode([0])
        return np.asarray([tok.encode(prompt)], dtype=np.int64)

    def sample(self, prompt=None, max_new_tokens=200, **kwargs) -> list[str]:
        ids = self.prompt_ids(prompt)
        out = self.model.generate(ids, max_new_tokens, **kwargs)
        return [self.tokenizer.decode(row.tolist()) for row in out]

    def end_sample(self, n: int, seed: int) -> str:
        return self.sample(None, n, do_sample=True, temperature=0.8, top_k=200, seed=seed)[0]


# ------------------------------------------------------------------------------ BERT, masked LM
class MLMTask(Task):
    """BERT's masked-LM on Tang poems: [CLS] poem [SEP], 15% of the characters masked."""

    kind = "mlm"
    TASK_ARGS = {"mlm_probability": (float, 0.15)}

    def load_data(self):
        from tinyllm.data import train_val_split

        cfg = self.cfg
        if cfg.corpus != "tang_poems":
            raise ConfigError(f"config key 'corpus': task 'mlm' trains on 'tang_poems', got "
                              f"{cfg.corpus!r}")
        texts = [p.text for p in self.read_poems()]
        if self.tokenizer is None:
            self.tokenizer = char_tokenizer("".join(texts), BERT_SPECIALS, unk="<unk>")
        tok, width = self.tokenizer, cfg.block_size - 2
        if width < 1:
            raise ConfigError("config key 'block_size' must be at least 3 for task 'mlm'")
        rows = [[tok.bos_token_id, *tok.encode(t)[:width], tok.eos_token_id] for t in texts]
        self.train_data, self.val_data = train_val_split(rows, cfg.val_fraction, cfg.seed)

    def build_model(self):
        from tinyllm.models.bert import BertConfig, BertForMaskedLM

        return BertForMaskedLM(self.build(BertConfig, **bert_kwargs(self.cfg, self.tokenizer)))

    def batch(self, split, rng):
        from tinyllm.data import mask_tokens

        data, tok = self._pick(split), self.tokenizer
        idx = rng.integers(0, len(data), size=self.cfg.batch_size)
        ids = pad_rows([data[i] for i in idx], tok.pad_token_id)
        masked, labels = mask_tokens(ids, tok.vocab_size, tok.mask_token_id,
                                     tok.all_special_ids, rng, self.args["mlm_probability"],
                                     pad_token_id=tok.pad_token_id)
        mask = (ids != tok.pad_token_id).astype(np.int64)
        return {"input_ids": masked, "attention_mask": mask, "labels": labels}, int(mask.sum())

    def loss(self, inputs):
        return self.model(inputs["input_ids"], inputs["attention_mask"],
                          labels=inputs["labels"]).loss

    def metrics(self, rng, n_batches=None) -> dict:
        """Masked-token accuracy: argmax at the chosen positions == the original character."""
        from tinyllm.autograd import no_grad

        hits = total = 0
        self.model.eval()
        with no_grad():
            for _ in range(n_batches or self.cfg.eval_iters):
                inputs, _ = self.batch("val", rng)
                out = self.model(inputs["input_ids"], inputs["attention_mask"])
                pred = np.asarray(out.prediction_logits.numpy()).argmax(-1)
                chosen = inputs["labels"] != IGNORE_INDEX
                hits += int((pred[chosen] == inputs["labels"][chosen]).sum())
                total += int(chosen.sum())
        return {"masked_accuracy": hits / max(total, 1)}


def bert_kwargs(cfg: TrainConfig, tok) -> dict:
    """BertConfig's sizes from the run's common keys (``model_args`` go on top, checked)."""
    return dict(vocab_size=tok.vocab_size, hidden_size=cfg.n_embd, num_hidden_layers=cfg.n_layer,
                num_attention_heads=cfg.n_head, intermediate_size=4 * cfg.n_embd,
                hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                max_position_embeddings=cfg.block_size, type_vocab_size=1,
                pad_token_id=tok.pad_token_id)


# ------------------------------------------------------------------------------ encoder-decoder
class Seq2SeqTask(Task):
    """Source -> target with the encoder-decoder Transformer: digit reversal or Tang couplets.
    The source ends with <eos>; teacher forcing (tgt_in = <bos> y, tgt_out = y <eos>)."""

    kind = "seq2seq"
    can_sample = True
    TASK_ARGS = {"n_train": (int, 20000), "n_val": (int, 500), "min_len": (int, 3),
                 "max_len": (int, 10), "n_exact_match": (int, 200), "vocab_chars": (int, 0),
                 "max_poems": (int, 0)}

    def load_data(self):
        cfg = self.cfg
        if cfg.corpus in ("digits-reverse", "digits-sort"):
            pairs_train, pairs_val = self._digit_pairs()
        elif cfg.corpus == "couplets":
            pairs_train, pairs_val = self._couplet_pairs()
        else:
            raise ConfigError(f"config key 'corpus': task 'seq2seq' uses 'digits-reverse', "
                              f"'digits-sort' or 'couplets', got {cfg.corpus!r}")
        eos, limit = self.tokenizer.eos_token_id, cfg.block_size - 1
        keep = lambda ps: [(list(s) + [eos], list(t)) for s, t in ps
                           if len(s) <= limit and len(t) <= limit]
        self.train_data, self.val_data = keep(pairs_train), keep(pairs_val)
        if not self.train_data or not self.val_data:
            raise ConfigError(f"config key 'block_size' ({cfg.block_size}) leaves no pairs short "
                              "enough to train on")

    def _digit_pairs(self):
        """Random digit strings and their reversal (or sorting); held-out sources never train.
        DigitVocab's ids are this CharTokenizer's: 0 pad, 1 bos, 2 eos, 3..12 the digits."""
        from tinyllm.data import synthetic_seq2seq

        cfg, a = self.cfg, self.args
        if self.tokenizer is None:
            from tinyllm.tokenizers import CharTokenizer

            self.tokenizer = CharTokenizer("0123456789", special_tokens=SEQ2SEQ_SPECIALS)
        rng = np.random.default_rng([cfg.seed, 2])
        task, lo, hi = cfg.corpus.split("-")[1], a["min_len"], a["max_len"]
        val = synthetic_seq2seq(a["n_val"], task, lo, hi, rng)
        held = {tuple(s) for s, _ in val}
        train = [p for p in synthetic_seq2seq(a["n_train"], task, lo, hi, rng)
                 if tuple(p[0]) not in held]
        return train, val

    def _couplet_pairs(self):
        """Tang couplets (first line -> second line of equal length). ``vocab_chars`` > 0 keeps
        only the couplets written with the that many most frequent characters; ``max_poems`` >
        0 reads only the first poems."""
        from collections import Counter

        from tinyllm.data import couplet_pairs, train_val_split

        cfg, a = self.cfg, self.args
        poems = self.read_poems()
        poems = poems[:a["max_poems"]] if a["max_poems"] > 0 else poems
        pairs = [(x, y) for x, y in couplet_pairs(poems) if len(x) == len(y)]
        if a["vocab_chars"] > 0:
            counts = Counter(c for x, y in pairs for c in x + y)
            keep = {c for c, _ in counts.most_common(a["vocab_chars"])}
            pairs = [(x, y) for x, y in pairs if set(x + y) <= keep]
        if self.tokenizer is None:
            self.tokenizer = char_tokenizer("".join(x + y for x, y in pairs), SEQ2SEQ_SPECIALS,
                                            unk="<unk>")
        tr, va = train_val_split(pairs, cfg.val_fraction, cfg.seed)
        enc = self.tokenizer.encode
        return [(enc(x), enc(y)) for x, y in tr], [(enc(x), enc(y)) for x, y in va]

    def build_model(self):
        from tinyllm.models.transformer import Transformer, TransformerConfig

        c, tok = self.cfg, self.tokenizer
        return Transformer(self.build(
            TransformerConfig, src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size,
            d_model=c.n_embd, n_head=c.n_head, num_encoder_layers=c.n_layer,
            num_decoder_layers=c.n_layer, dropout=c.dropout, max_len=c.block_size + 1,
            share_embeddings=True, pad_id=tok.pad_token_id, bos_id=tok.bos_token_id,
            eos_id=tok.eos_token_id))

    def batch(self, split, rng):
        from tinyllm.data import collate_seq2seq

        data, tok = self._pick(split), self.tokenizer
        idx = rng.integers(0, len(data), size=self.cfg.batch_size)
        b = collate_seq2seq([data[i] for i in idx], tok.pad_token_id, tok.bos_token_id,
                            tok.eos_token_id)
        return ({"src": b["src"], "tgt_in": b["tgt_in"], "tgt_out": b["tgt_out"]},
                int(b["src_mask"].sum() + b["tgt_mask"].sum()))

    def loss(self, inputs):
        return self.model(inputs["src"], inputs["tgt_in"], inputs["tgt_out"])[1]

    def metrics(self, rng, n=None) -> dict:
        """Exact match of greedy decoding on (up to ``n``, default 200) validation pairs."""
        from tinyllm.train.seq2seq import exact_match

        n = n or self.args["n_exact_match"]
        pairs = self.val_data[:n]
        self.model.eval()
        return {"exact_match": exact_match(self.model, pairs, batch_size=64)}

    def sample(self, prompt=None, max_new_tokens=None, num_beams=1, **sampling) -> list[str]:
        """The decoded target for source ``prompt``: greedy, beams, or sampled (``do_sample``,
        ``temperature``, ``top_k``, ``top_p``, ``seed``, as ``Transformer.generate`` takes them)."""
        tok = self.tokenizer
        if not prompt:
            raise ValueError("sample for a seq2seq run needs --prompt (the source sequence)")
        src = np.asarray([tok.encode(prompt) + [tok.eos_token_id]], dtype=np.int64)
        limit = self.cfg.block_size  # the decoder's positions (max_len = block_size + 1)
        out = self.model.generate(src, min(max_new_tokens or limit, limit), num_beams=num_beams,
                                  **sampling)
        special = set(tok.all_special_ids)
        return [tok.decode([i for i in row.tolist() if i not in special]) for row in out]


# ------------------------------------------------------------------------------ classification
class ClassifyTask(Task):
    """Who wrote this poem? The ``top_k`` most prolific Tang poets; a BERT encoder with a
    classifier on its pooled [CLS] vector. ``init_from`` a ``bert-tang`` run fine-tunes it."""

    kind = "classify"
    TASK_ARGS = {"top_k": (int, 12), "pooling": (str, "pooler")}

    def load_data(self):
        from tinyllm.data import author_classification, stratified_split

        cfg = self.cfg
        if cfg.corpus != "tang_authors":
            raise ConfigError(f"config key 'corpus': task 'classify' uses 'tang_authors', got "
                              f"{cfg.corpus!r}")
        poems = self.read_poems()
        texts, labels, names = author_classification(poems, self.args["top_k"])
        if self.tokenizer is None:  # the same vocabulary as bert-tang, so its weights fit
            self.tokenizer = char_tokenizer("".join(p.text for p in poems), BERT_SPECIALS,
                                             unk="<unk>")
        tok, width = self.tokenizer, cfg.block_size - 2
        rows = [[tok.bos_token_id, *tok.encode(t)[:width], tok.eos_token_id] for t in texts]
        tr, va = stratified_split(labels, cfg.val_fraction, cfg.seed)
        self.train_data = ([rows[i] for i in tr], labels[tr])
        self.val_data = ([rows[i] for i in va], labels[va])
        self.info["label_names"] = names

    def build_model(self):
        from tinyllm.models.bert import BertConfig
        from tinyllm.models.classification import BertForSequenceClassification

        c = self.cfg
        return BertForSequenceClassification(self.build(BertConfig, **bert_kwargs(c, self.tokenizer)),
                                             num_labels=self.args["top_k"],
                                             pooling=self.args["pooling"], dropout=c.dropout)

    def model_config(self) -> dict:
        return {**self.model.body.config.to_dict(), "num_labels": self.model.num_labels}

    def _inputs(self, rows, labels):
        ids = pad_rows(rows, self.tokenizer.pad_token_id)
        mask = (ids != self.tokenizer.pad_token_id).astype(np.int64)
        return {"input_ids": ids, "attention_mask": mask, "labels": np.asarray(labels)}, \
            int(mask.sum())

    def batch(self, split, rng):
        rows, labels = self._pick(split)
        idx = rng.integers(0, len(rows), size=self.cfg.batch_size)
        return self._inputs([rows[i] for i in idx], labels[idx])

    def loss(self, inputs):
        return self.model(inputs["input_ids"], inputs["attention_mask"],
                          labels=inputs["labels"]).loss

    def metrics(self, rng, n=None) -> dict:
        """Accuracy on the whole validation split (or its first ``n`` poems)."""
        from tinyllm.autograd import no_grad

        rows, labels = self.val_data
        n = min(n or len(rows), len(rows))
        hits = 0
        self.model.eval()
        with no_grad():
            for s in range(0, n, 64):
                inputs, _ = self._inputs(rows[s:min(s + 64, n)], labels[s:min(s + 64, n)])
                logits = self.model(inputs["input_ids"], inputs["attention_mask"]).logits
                hits += int((np.asarray(logits.numpy()).argmax(-1) == inputs["labels"]).sum())
        return {"accuracy": hits / max(n, 1)}

    def load_pretrained_body(self, arrays: dict) -> int:
        """Copy a BERT masked-LM run's encoder weights (``bert.*``) into the body."""
        body = {k[len("bert."):]: v for k, v in arrays.items() if k.startswith("bert.")}
        if not body:
            raise ConfigError("config key 'init_from': that run has no BERT encoder weights "
                              "(bert.*); start from a 'bert-tang' run")
        self.model.body.load_state_dict(body, strict=True)
        return len(body)


TASK_CLASSES = {"lm": LMTask, "mlm": MLMTask, "seq2seq": Seq2SeqTask, "classify": ClassifyTask,
                "bigram": BigramTask, "mlp": MLPTask}


def build_task(cfg: TrainConfig, tokenizer=None, load_data: bool = True) -> Task:
    """The task of ``cfg.task``; the model is freshly initialised from tinyllm's generator."""
    from tinyllm.train.distill_task import DistillTask  # its own file (it subclasses LMTask)

    classes = {**TASK_CLASSES, "distill": DistillTask}
    return classes[cfg.task](cfg, tokenizer=tokenizer, load_data=load_data)
