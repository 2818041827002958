"""One small builder per objective: the data, the tokenizer, the model and its loss.

``build_task(cfg, tokenizer=None, load_data=True)`` returns a ``Task``:

* ``model``, ``tokenizer`` (built from the corpus, or the run folder's when resuming);
* ``batch(split, rng)`` -> ``(inputs dict of int arrays, number of tokens)``;
* ``loss(inputs)`` -> the scalar loss Tensor;
* ``metrics(rng)`` -> task metrics on validation data (masked-token accuracy, exact match, ...);
* ``optimizer()`` -> AdamW, weight decay on the matrices only (nanoGPT's two groups).

The trainer only ever talks to this interface, so one loop serves GPT, BERT, the
encoder-decoder Transformer and the classifier. Every random draw of the data takes the
``rng`` it is given: the trainer's batch generator, saved in each checkpoint.
"""

from __future__ import annotations

import numpy as np

from tinyllm.train.config import ConfigError, TrainConfig

__all__ = ["Task", "build_task", "LMTask", "MLMTask", "Seq2SeqTask", "ClassifyTask"]

IGNORE_INDEX = -100
BERT_SPECIALS = ["<pad>", "<unk>", "<mask>", "<bos>", "<eos>"]  # <bos> is [CLS], <eos> [SEP]
SEQ2SEQ_SPECIALS = ["<pad>", "<bos>", "<eos>"]


class Task:
    kind = ""
    can_sample = False

    def __init__(self, cfg: TrainConfig, tokenizer=None, load_data: bool = True):
        self.cfg = cfg
        self.data_loaded = load_data
        self.tokenizer = tokenizer
        self.info: dict = {}  # extra facts recorded with the model (e.g. class names)
        if load_data:
            self.load_data()
        elif tokenizer is None:
            raise ValueError("a task without data needs its tokenizer (from the run folder)")
        self.model = self.build_model()

    # hooks --------------------------------------------------------------------------------
    def load_data(self) -> None:
        raise NotImplementedError

    def build_model(self):
        raise NotImplementedError

    def batch(self, split: str, rng):
        raise NotImplementedError

    def loss(self, inputs):
        raise NotImplementedError

    def metrics(self, rng) -> dict:
        return {}

    # shared -------------------------------------------------------------------------------
    def optimizer(self):
        from tinyllm.optim import AdamW, decay_groups

        cfg = self.cfg
        groups = decay_groups(self.model.parameters(), cfg.weight_decay)
        return AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    def model_config(self) -> dict:
        c = self.model.config
        return c.to_dict() if hasattr(c, "to_dict") else dict(vars(c))

    def _pick(self, split: str):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train_data if split == "train" else self.val_data


def _char_tokenizer(text, specials=(), unk=None):
    from tinyllm.tokenizers import CharTokenizer

    return CharTokenizer.from_text(text, unk_token=unk, special_tokens=specials)


def _pad(rows, pad_id, width=None):
    width = width or max(len(r) for r in rows)
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out


def _poems():
    from tinyllm.data import load_tang_poems

    return load_tang_poems()


# ------------------------------------------------------------------------------ GPT, causal LM
class LMTask(Task):
    """Next-token prediction on a running text (nanoGPT): random windows of block_size + 1."""

    kind = "lm"
    can_sample = True

    def load_data(self):
        from tinyllm.data import load_corpus, train_val_split

        cfg = self.cfg
        if cfg.corpus == "tinyshakespeare":
            text = load_corpus("tinyshakespeare")
        elif cfg.corpus == "tang_poems":
            text = "\n".join(p.text for p in _poems()) + "\n"
        else:
            raise ConfigError(f"config key 'corpus': task 'lm' trains on 'tinyshakespeare' or "
                              f"'tang_poems', got {cfg.corpus!r}")
        if self.tokenizer is None:
            self.tokenizer = _char_tokenizer(text)
        train, val = train_val_split(text, cfg.val_fraction)
        dtype = np.uint16 if self.tokenizer.vocab_size <= 2**16 else np.int32
        self.train_data = np.asarray(self.tokenizer.encode(train), dtype=dtype)
        self.val_data = np.asarray(self.tokenizer.encode(val), dtype=dtype)
        for name, d in (("training", self.train_data), ("validation", self.val_data)):
            if len(d) <= cfg.block_size:
                raise ConfigError(f"config key 'block_size' ({cfg.block_size}) is longer than the "
                                  f"{name} text ({len(d)} tokens)")

    def build_model(self):
        from tinyllm.models.gpt import GPT, GPTConfig
        from tinyllm.models.llama import Llama, LlamaConfig

        c = self.cfg
        kwargs = dict(vocab_size=self.tokenizer.vocab_size, block_size=c.block_size,
                      n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, dropout=c.dropout)
        kwargs.update(c.model_args)
        arch = kwargs.pop("arch", "gpt")  # model_args.arch picks the decoder
        if arch not in ("gpt", "llama"):
            raise ConfigError(f"config key 'model_args.arch' must be 'gpt' or 'llama', got {arch!r}")
        return Llama(LlamaConfig(**kwargs)) if arch == "llama" else GPT(GPTConfig(**kwargs))

    def batch(self, split, rng):
        from tinyllm.data import get_batch

        x, y = get_batch(self._pick(split), self.cfg.batch_size, self.cfg.block_size, rng)
        return {"idx": x, "targets": y}, x.size

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


# ------------------------------------------------------------------------------ BERT, masked LM
class MLMTask(Task):
    """BERT's masked-LM on Tang poems: [CLS] poem [SEP], 15% of the characters masked."""

    kind = "mlm"

    def load_data(self):
        from tinyllm.data import train_val_split

        cfg = self.cfg
        if cfg.corpus != "tang_poems":
            raise ConfigError(f"config key 'corpus': task 'mlm' trains on 'tang_poems', got "
                              f"{cfg.corpus!r}")
        texts = [p.text for p in _poems()]
        if self.tokenizer is None:
            self.tokenizer = _char_tokenizer("".join(texts), BERT_SPECIALS, unk="<unk>")
        tok, width = self.tokenizer, cfg.block_size - 2
        if width < 1:
            raise ConfigError("config key 'block_size' must be at least 3 for task 'mlm'")
        rows = [[tok.bos_token_id, *tok.encode(t)[:width], tok.eos_token_id] for t in texts]
        self.train_data, self.val_data = train_val_split(rows, cfg.val_fraction, cfg.seed)

    def build_model(self):
        from tinyllm.models.bert import BertConfig, BertForMaskedLM

        return BertForMaskedLM(BertConfig(**bert_kwargs(self.cfg, self.tokenizer)))

    def batch(self, split, rng):
        from tinyllm.data import mask_tokens

        data, tok = self._pick(split), self.tokenizer
        idx = rng.integers(0, len(data), size=self.cfg.batch_size)
        ids = _pad([data[i] for i in idx], tok.pad_token_id)
        masked, labels = mask_tokens(ids, tok.vocab_size, tok.mask_token_id,
                                     tok.all_special_ids, rng,
                                     float(self.cfg.task_args.get("mlm_probability", 0.15)),
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
    kw = dict(vocab_size=tok.vocab_size, hidden_size=cfg.n_embd, num_hidden_layers=cfg.n_layer,
              num_attention_heads=cfg.n_head, intermediate_size=4 * cfg.n_embd,
              hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
              max_position_embeddings=cfg.block_size, type_vocab_size=1,
              pad_token_id=tok.pad_token_id)
    kw.update(cfg.model_args)
    return kw


# ------------------------------------------------------------------------------ encoder-decoder
class Seq2SeqTask(Task):
    """Source -> target with the encoder-decoder Transformer: digit reversal or Tang couplets.
    The source ends with <eos>; teacher forcing (tgt_in = <bos> y, tgt_out = y <eos>)."""

    kind = "seq2seq"
    can_sample = True

    def load_data(self):
        cfg, ta = self.cfg, self.cfg.task_args
        if cfg.corpus in ("digits-reverse", "digits-sort"):
            from tinyllm.data import synthetic_seq2seq

            if self.tokenizer is None:
                from tinyllm.tokenizers import CharTokenizer

                self.tokenizer = CharTokenizer("0123456789", special_tokens=SEQ2SEQ_SPECIALS)
            rng = np.random.default_rng([cfg.seed, 2])
            task = cfg.corpus.split("-")[1]
            lo, hi = int(ta.get("min_len", 3)), int(ta.get("max_len", 10))
            val = synthetic_seq2seq(int(ta.get("n_val", 500)), task, lo, hi, rng)
            held = {tuple(s) for s, _ in val}
            train = [p for p in synthetic_seq2seq(int(ta.get("n_train", 20000)), task, lo, hi, rng)
                     if tuple(p[0]) not in held]
            # DigitVocab ids are the CharTokenizer's: 0 pad, 1 bos, 2 eos, 3..12 the digits
            pairs_train, pairs_val = train, val
        elif cfg.corpus == "couplets":
            from tinyllm.data import couplet_pairs, train_val_split

            pairs = [(a, b) for a, b in couplet_pairs(_poems()) if len(a) == len(b)]
            if self.tokenizer is None:
                self.tokenizer = _char_tokenizer("".join(a + b for a, b in pairs),
                                                 SEQ2SEQ_SPECIALS, unk="<unk>")
            tr, va = train_val_split(pairs, cfg.val_fraction, cfg.seed)
            enc = self.tokenizer.encode
            pairs_train = [(enc(a), enc(b)) for a, b in tr]
            pairs_val = [(enc(a), enc(b)) for a, b in va]
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

    def build_model(self):
        from tinyllm.models.transformer import Transformer, TransformerConfig

        c, tok = self.cfg, self.tokenizer
        kw = dict(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, d_model=c.n_embd,
                  n_head=c.n_head, num_encoder_layers=c.n_layer, num_decoder_layers=c.n_layer,
                  dropout=c.dropout, max_len=c.block_size + 1, share_embeddings=True,
                  pad_id=tok.pad_token_id, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id)
        kw.update(c.model_args)
        return Transformer(TransformerConfig(**kw))

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

        n = n or int(self.cfg.task_args.get("n_exact_match", 200))
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

    def load_data(self):
        from tinyllm.data import author_classification, stratified_split

        cfg = self.cfg
        if cfg.corpus != "tang_authors":
            raise ConfigError(f"config key 'corpus': task 'classify' uses 'tang_authors', got "
                              f"{cfg.corpus!r}")
        poems = _poems()
        texts, labels, names = author_classification(poems, int(cfg.task_args.get("top_k", 12)))
        if self.tokenizer is None:  # the same vocabulary as bert-tang, so its weights fit
            self.tokenizer = _char_tokenizer("".join(p.text for p in poems), BERT_SPECIALS,
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
        return BertForSequenceClassification(BertConfig(**bert_kwargs(c, self.tokenizer)),
                                             num_labels=int(c.task_args.get("top_k", 12)),
                                             pooling=str(c.task_args.get("pooling", "pooler")),
                                             dropout=c.dropout)

    def model_config(self) -> dict:
        return {**self.model.body.config.to_dict(), "num_labels": self.model.num_labels}

    def _inputs(self, rows, labels):
        ids = _pad(rows, self.tokenizer.pad_token_id)
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


TASK_CLASSES = {"lm": LMTask, "mlm": MLMTask, "seq2seq": Seq2SeqTask, "classify": ClassifyTask}


def chat_tasks() -> dict:
    """The chat tasks (tinyllm/train/sft.py, preference.py) build on LMTask: imported lazily."""
    from tinyllm.train.preference import DPOTask
    from tinyllm.train.sft import SFTTask

    return {"sft": SFTTask, "dpo": DPOTask}


def build_task(cfg: TrainConfig, tokenizer=None, load_data: bool = True) -> Task:
    """The task of ``cfg.task``; the model is freshly initialised from tinyllm's generator."""
    classes = TASK_CLASSES if cfg.task in TASK_CLASSES else chat_tasks()
    return classes[cfg.task](cfg, tokenizer=tokenizer, load_data=load_data)
