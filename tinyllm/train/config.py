"""``TrainConfig``: every setting of a training run, a plain dataclass.

A run is described by one ``TrainConfig``: a preset gives the starting values
(``tinyllm.train.presets``), a JSON file (``--config``) and ``--set key=value`` override them,
``finalize()`` fills the derived defaults (``lr_decay_iters``, ``ckpt_interval``) and ``validate()``
checks every value, raising ``ConfigError`` that names the key and what is allowed.

The sizes of the model are the four common ones (``n_layer``, ``n_head``, ``n_embd``,
``block_size``) plus ``dropout``; the task builder maps them onto each model's own config
(GPT's ``n_embd`` is BERT's ``hidden_size``). Anything else goes in ``model_args``
(``--set model_args.intermediate_size=256``) and is passed to the model config unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TrainConfig", "ConfigError", "TASKS", "CORPORA", "TOKENIZERS", "DEVICES",
           "apply_overrides", "coerce", "load_json_config"]

TASKS = ("lm", "mlm", "seq2seq", "classify", "bigram", "mlp", "distill", "sft", "dpo")
CORPORA = ("tinyshakespeare", "tang_poems", "couplets", "digits-reverse", "digits-sort",
           "tang_authors")
TOKENIZERS = ("char", "digits")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("float32", "bfloat16", "float16")
# Settings that may change when a run is resumed: they do not alter the training trajectory.
RESUMABLE_KEYS = ("max_iters", "eval_interval", "eval_iters", "log_interval", "ckpt_interval",
                  "device", "sample_chars", "out", "divergence_factor", "verify_corpus",
                  "grad_accum_steps", "zero_stage", "threads")


class ConfigError(ValueError):
    """A setting that does not exist, has the wrong type or a value that is not allowed."""


@dataclass
class TrainConfig:
    # what to train
    task: str = "lm"                    # lm (GPT) | mlm (BERT) | seq2seq | classify | bigram | mlp
    #                                     | distill | sft | dpo
    corpus: str = "tinyshakespeare"     # see CORPORA
    corpus_path: str | None = None      # a file of your own in the corpus's format (unchecked)
    verify_corpus: bool = True          # check the corpus file's size and SHA-256
    tokenizer: str = "char"             # char | digits (the synthetic seq2seq vocabulary)
    val_fraction: float = 0.1
    # model sizes (mapped onto each model's config by the task builder)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64                # context length (max sequence length for mlm/classify)
    dropout: float = 0.0
    model_args: dict = field(default_factory=dict)   # extra model-config keywords
    task_args: dict = field(default_factory=dict)    # extra task settings (e.g. top_k authors)
    # optimisation (nanoGPT's names and schedule)
    batch_size: int = 12
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None   # None: max_iters
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.99)
    grad_clip: float = 1.0              # 0 turns clipping off
    # several batches, one update (tinyllm.train.data_parallel): under mpiexec batch_size is
    # each process's; its rows are split into grad_accum_steps micro-batches
    grad_accum_steps: int = 1
    zero_stage: int = 0                 # 1: AdamW's state sharded over the processes (ZeRO-1)
    threads: int = 1                    # CPU: each micro-batch in this many parts, computed at
                                        # once on threads (tinyllm.train.threads)
    divergence_factor: float = 10.0     # stop when the smoothed loss passes this many times its
                                        # lowest and its first value (0: never stop)
    precision: str = "float32"          # float32 | bfloat16 | float16 (tinyllm.precision)
    loss_scale: float | None = None     # None: dynamic loss scaling for float16; a number: fixed
    # bookkeeping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    ckpt_interval: int | None = None    # None: eval_interval
    sample_chars: int = 0               # a short sample printed at the end (LM tasks)
    seed: int = 1337
    device: str = "cpu"
    out: str | None = None
    preset: str | None = None           # the preset this config started from (for the record)
    init_from: str | None = None        # a run folder whose model weights start this run

    # ------------------------------------------------------------------ derived values
    def finalize(self) -> TrainConfig:
        """Fill the defaults that depend on other settings (recorded in config.json, so that a
        resumed run with more iterations keeps the same schedule)."""
        if self.lr_decay_iters is None:
            self.lr_decay_iters = self.max_iters
        if self.ckpt_interval is None:
            self.ckpt_interval = self.eval_interval
        self.betas = tuple(self.betas)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> TrainConfig:
        cfg = cls()
        apply_overrides(cfg, d, where)
        return cfg

    # ------------------------------------------------------------------ checks
    def validate(self) -> TrainConfig:
        hints = _hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _is_instance(value, hints[f.name]):
                raise ConfigError(f"config key {f.name!r} must be {_type_name(hints[f.name])}, "
                                  f"got {value!r} ({type(value).__name__})")
        _choice("task", self.task, TASKS)
        _choice("corpus", self.corpus, CORPORA)
        _choice("tokenizer", self.tokenizer, TOKENIZERS)
        _choice("precision", self.precision, PRECISIONS)
        if self.loss_scale is not None and not self.loss_scale > 0:
            raise ConfigError(f"config key 'loss_scale' must be a positive number or null "
                              f"(dynamic scaling for float16), got {self.loss_scale}")
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"config key 'device' must be one of {list(DEVICES)}, "
                              f"got {self.device!r}")
        for key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "eval_interval",
                    "eval_iters", "log_interval", "grad_accum_steps", "threads"):
            _positive(key, getattr(self, key))
        for key in ("max_iters", "warmup_iters", "sample_chars"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        for key in ("lr_decay_iters", "ckpt_interval"):
            if getattr(self, key) is not None:
                _positive(key, getattr(self, key))
        if 0 < self.divergence_factor <= 1:
            raise ConfigError(f"config key 'divergence_factor' must be 0 (off) or above 1, got "
                              f"{self.divergence_factor}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"config keys 'n_embd' ({self.n_embd}) and 'n_head' "
                              f"({self.n_head}): n_embd must be divisible by n_head")
        if self.batch_size % (self.grad_accum_steps * self.threads):
            raise ConfigError(f"config keys 'batch_size' ({self.batch_size}), "
                              f"'grad_accum_steps' ({self.grad_accum_steps}) and 'threads' "
                              f"({self.threads}): the batch must split into equal "
                              "micro-batches, grad_accum_steps x threads of them")
        if self.threads > 1:
            _check_threads(self)
        _choice("zero_stage", self.zero_stage, (0, 1))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config key 'dropout' must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"config key 'val_fraction' must be in (0, 1), got "
                              f"{self.val_fraction}")
        for key in ("lr", "min_lr", "weight_decay", "grad_clip", "divergence_factor"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"config key 'betas' must be two numbers in [0, 1), e.g. "
                              f"0.9,0.99; got {self.betas!r}")
        return self


# ---------------------------------------------------------------------------------- helpers
def _check_threads(cfg) -> None:
    """threads > 1 runs parts of a batch at once (tinyllm.train.threads), on the CPU."""
    if cfg.device != "cpu":
        raise ConfigError(f"config key 'threads' ({cfg.threads}) must be 1 here: it is for the "
                          f"CPU (device is {cfg.device!r}: the GPU runs the parts at once)")


def _hints() -> dict:
    return typing.get_type_hints(TrainConfig)


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"config key {key!r} must be one of {list(allowed)}, got {value!r}")


def _positive(key, value):
    if value <= 0:
        raise ConfigError(f"config key {key!r} must be a positive integer, got {value}")


def _args(tp):
    return typing.get_args(tp)


def _is_optional(tp) -> bool:
    return type(None) in _args(tp)


def _base(tp):
    if _is_optional(tp):
        return next(a for a in _args(tp) if a is not type(None))
    return tp


def _type_name(tp) -> str:
    base = _base(tp)
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a JSON object", tuple: "a list of numbers"}.get(base, str(base))
    return name + (" or null" if _is_optional(tp) else "")


def _is_instance(value, tp) -> bool:
    if value is None:
        return _is_optional(tp)
    base = _base(tp)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is tuple:
        return isinstance(value, (tuple, list)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return isinstance(value, base)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _to_bool(value, tp):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _to_int(value, tp):
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            f = float(value)  # 2e3; a ValueError here is the caller's "bad"
            if f.is_integer():
                return int(f)
    raise ValueError


def _to_float(value, tp):
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float, str)):
        return float(value)
    raise ValueError


def _to_str(value, tp):
    if isinstance(value, str):
        return value
    raise ValueError


def _to_tuple(value, tp):
    if isinstance(value, str):
        text = value.strip().strip("()[]")
        value = [float(v) for v in text.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and _is_instance(value, tp):
        return tuple(float(v) for v in value)
    raise ValueError


def _to_dict(value, tp):
    if isinstance(value, str):
        value = json.loads(value)  # JSONDecodeError is a ValueError
    if isinstance(value, dict):
        return dict(value)
    raise ValueError


_CONVERTERS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, tuple: _to_tuple,
               dict: _to_dict}


def coerce(key: str, value, tp):
    """Turn ``value`` (a string from ``--set`` or a JSON value) into the type ``tp`` of ``key``.

    Each base type has one converter above; any value it cannot take is a ConfigError naming the
    key, the type and the value."""
    if isinstance(value, str) and _is_optional(tp) and value.strip().lower() in ("none", "null"):
        return None
    if value is None:
        if _is_optional(tp):
            return None
        raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got null")
    convert = _CONVERTERS.get(_base(tp))
    try:
        if convert is None:
            raise ValueError
        return convert(value, tp)
    except ValueError:
        raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {value!r}") from None


def _parse_loose(text: str):
    """A ``--set model_args.x=...`` value: JSON when it parses (numbers, true, lists), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: TrainConfig, overrides: dict, where: str = "--set") -> TrainConfig:
    """Set ``key: value`` pairs on ``cfg`` with type coercion. ``model_args.NAME`` and
    ``task_args.NAME`` set one entry of those dicts. Unknown keys raise ``ConfigError``."""
    hints = _hints()
    for key, value in overrides.items():
        head, _, sub = key.partition(".")
        if head not in hints:
            raise ConfigError(f"{where}: unknown config key {head!r}; known keys: "
                              f"{', '.join(sorted(hints))}")
        if sub:
            if hints[head] is not dict:
                raise ConfigError(f"{where}: {key!r}: only model_args and task_args take dotted "
                                  "keys")
            getattr(cfg, head)[sub] = _parse_loose(value) if isinstance(value, str) else value
            continue
        setattr(cfg, head, coerce(head, value, hints[head]))
    return cfg


def parse_set(items) -> dict:
    """``["lr=3e-4", "n_layer=2"]`` -> ``{"lr": "3e-4", "n_layer": "2"}``."""
    out = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_json_config(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of config keys")
    return d
