"""The ``Task`` interface the trainer talks to, and what every task shares.

A task is one objective: its data, tokenizer, model and loss. The trainer only ever calls:

* ``model``, ``tokenizer`` (built from the corpus, or the run folder's when resuming);
* ``batch(split, rng)`` -> ``(inputs dict of int arrays, number of tokens)``;
* ``loss(inputs)`` -> the scalar loss Tensor;
* ``metrics(rng)`` -> task metrics on validation data (masked-token accuracy, exact match, ...);
* ``optimizer()`` -> AdamW, weight decay on the matrices only (nanoGPT's two groups);
* ``notes()`` -> lines printed when a run starts (e.g. a reference loss);
* ``end_sample(n, seed)`` -> a text sample printed when a run ends, or None.

Settings are checked before anything is built: ``TASK_ARGS`` declares the ``task_args`` keys a
task reads (name -> (type, default)); any other key is refused, and values are coerced to their
type. ``model_args`` are checked against the model's own settings by ``build(factory, **derived)``:
an unknown key or a value of the wrong type (``--set model_args.bias=maybe``) raises
``ConfigError`` naming ``model_args.<key>``, never trains with a wrong value.

A new task: subclass ``Task`` in a file of its own, and add it to ``TASK_CLASSES`` in
``tinyllm/train/tasks.py`` (and its name to ``TASKS`` in ``config.py``).
"""

from __future__ import annotations

import inspect
import typing

import numpy as np

from tinyllm.train.config import ConfigError, TrainConfig, coerce

__all__ = ["Task", "TextTask", "check_task_args", "IGNORE_INDEX"]

IGNORE_INDEX = -100


def check_task_args(task_cls, cfg: TrainConfig) -> dict:
    """``cfg.task_args`` coerced to the types ``task_cls.TASK_ARGS`` declares, defaults filled;
    ``ConfigError`` for a key the task does not read."""
    spec = task_cls.TASK_ARGS
    unknown = sorted(set(cfg.task_args) - set(spec) - {"prune"})  # prune: any task (prune_cmd)
    if unknown:
        known = f"it reads {', '.join(sorted(spec))}" if spec else "it reads none"
        raise ConfigError(f"config key 'task_args.{unknown[0]}': task {cfg.task!r} has no such "
                          f"setting ({known})")
    return {k: (coerce(f"task_args.{k}", cfg.task_args[k], tp) if k in cfg.task_args else default)
            for k, (tp, default) in spec.items()}


def _settings(factory) -> dict:
    """name -> type hint of the keyword arguments ``factory`` (a class or function) takes."""
    init = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(init)
    params = inspect.signature(factory).parameters
    return {n: hints.get(n) for n, p in params.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class Task:
    kind = ""
    can_sample = False
    TASK_ARGS: dict[str, tuple[type, object]] = {}

    def __init__(self, cfg: TrainConfig, tokenizer=None, load_data: bool = True):
        self.cfg = cfg
        self.args = check_task_args(type(self), cfg)
        self.data_loaded = load_data
        self.tokenizer = tokenizer
        self.info: dict = {}  # extra facts recorded with the model (e.g. class names)
        if load_data:
            self.load_data()
        elif tokenizer is None:
            raise ValueError("a task without data needs its tokenizer (from the run folder)")
        try:
            self.model = self.build_model()
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError) as e:  # a model_args value the model refuses
            raise ConfigError(f"config key 'model_args' ({cfg.model_args}): the model cannot be "
                              f"built: {e}") from None

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

    def notes(self) -> list[str]:
        return []

    def end_sample(self, n: int, seed: int) -> str | None:
        return None

    # shared -------------------------------------------------------------------------------
    def build(self, factory, ignore=(), **derived):
        """``factory(**derived, **model_args)`` with every ``model_args`` key checked: it must
        be a setting of ``factory`` and have its type (``ConfigError`` names the key). Keys in
        ``ignore`` are the task's own (``arch``: which model) and are not passed on."""
        settings = _settings(factory)
        kwargs = dict(derived)
        for key, value in self.cfg.model_args.items():
            if key in ignore:
                continue
            if key not in settings:
                raise ConfigError(f"config key 'model_args.{key}': {factory.__name__} has no "
                                  f"setting {key!r}; it has {', '.join(sorted(settings))}")
            hint = settings[key]
            kwargs[key] = value if hint is None else _coerce_hint(f"model_args.{key}", value,
                                                                    hint)
        return factory(**kwargs)

    def optimizer(self):
        from tinyllm.optim import AdamW, decay_groups

        cfg = self.cfg
        groups = decay_groups(self.model.parameters(), cfg.weight_decay)
        opt = AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        from tinyllm.train.prune_cmd import keep_pruned_zeros  # a pruned run keeps its zeros

        return keep_pruned_zeros(self, opt)

    def model_config(self) -> dict:
        c = self.model.config
        return c.to_dict() if hasattr(c, "to_dict") else dict(vars(c))

    def _pick(self, split: str):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train_data if split == "train" else self.val_data

    # data helpers -------------------------------------------------------------------------
    def read_text(self) -> str:
        """The run's text corpus: ``corpus_path`` if set, else ``corpus`` by name (checked
        unless ``verify_corpus`` is off)."""
        from tinyllm.data import load_corpus

        cfg = self.cfg
        return load_corpus(cfg.corpus, path=cfg.corpus_path, verify=cfg.verify_corpus)

    def read_poems(self) -> list:
        from tinyllm.data import load_tang_poems

        cfg = self.cfg
        return load_tang_poems(cfg.corpus_path, verify=cfg.verify_corpus)


class TextTask(Task):
    """A running text (Tiny Shakespeare, or the Tang poems joined by newlines) as a stream of
    character ids, split into training and validation text; batches of random windows of
    ``block_size + 1`` ids. The GPT, bigram and MLP tasks build on it."""

    def load_data(self):
        from tinyllm.data import train_val_split

        cfg = self.cfg
        if cfg.corpus == "tinyshakespeare":
            text = self.read_text()
        elif cfg.corpus == "tang_poems":
            text = "\n".join(p.text for p in self.read_poems()) + "\n"
        else:
            raise ConfigError(f"config key 'corpus': task {cfg.task!r} trains on "
                              f"'tinyshakespeare' or 'tang_poems', got {cfg.corpus!r}")
        if self.tokenizer is None:
            self.tokenizer = char_tokenizer(text)
        train, val = train_val_split(text, cfg.val_fraction)
        dtype = np.uint16 if self.tokenizer.vocab_size <= 2**16 else np.int32
        try:
            self.train_data = np.asarray(self.tokenizer.encode(train), dtype=dtype)
            self.val_data = np.asarray(self.tokenizer.encode(val), dtype=dtype)
        except ValueError as e:  # a resumed run whose text changed
            raise ConfigError(f"the corpus does not fit the run's tokenizer: {e}") from None
        for name, d in (("training", self.train_data), ("validation", self.val_data)):
            if len(d) <= cfg.block_size:
                raise ConfigError(f"config key 'block_size' ({cfg.block_size}) is longer than the "
                                  f"{name} text ({len(d)} tokens)")

    def batch(self, split, rng):
        from tinyllm.data import get_batch

        x, y = get_batch(self._pick(split), self.cfg.batch_size, self.cfg.block_size, rng)
        return {"idx": x, "targets": y}, x.size


def _coerce_hint(key: str, value, hint):
    """``coerce`` for the types it knows (int, float, bool, str, tuples, dicts, optionals);
    other hints (a Literal, a class) pass the value through to the model's own checks."""
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if base in (int, float, bool, str, tuple, dict):
        return coerce(key, value, hint)
    return value


def char_tokenizer(text, specials=(), unk=None):
    from tinyllm.tokenizers import CharTokenizer

    return CharTokenizer.from_text(text, unk_token=unk, special_tokens=specials)


def pad_rows(rows, pad_id, width=None):
    width = width or max(len(r) for r in rows)
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out
