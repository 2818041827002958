"""Task ``distill``: a GPT student trained against a frozen teacher run folder.

    tinyllm train --preset baby-distill --teacher runs/baby-shakespeare

The data, batches and model are those of task ``lm`` (``LMTask``); only the training loss
differs: ``tinyllm.distill.student_loss``, the teacher's logits computed under ``no_grad`` at
every step. Settings (``task_args``): ``teacher`` (the run folder), ``temperature`` (default 2),
``alpha`` (the teacher term's weight, default 0.5).

Rules:

* the teacher's tokenizer must be the student's (the same ids for the same tokens): the run is
  refused otherwise, naming both. The teacher is any GPT run (``lm`` or ``distill``) whose
  ``block_size`` covers the student's;
* evaluation (``train_loss``/``val_loss`` in the metrics, ``tinyllm eval``) reports the
  student's plain cross-entropy to the data, so a distilled run compares directly with the same
  student trained alone;
* the teacher is loaded only to train (``optimizer()`` is the trainer's first call that only
  training makes, before it writes anything): ``tinyllm sample`` and ``tinyllm eval`` of a
  distilled run do not need the teacher's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tinyllm.train.config import ConfigError
from tinyllm.train.tasks import LMTask

__all__ = ["DistillTask", "load_teacher"]


def _describe(tok) -> str:
    return f"{type(tok).__name__} with {tok.vocab_size} tokens (fingerprint {tok.fingerprint()[:12]})"


def load_teacher(path, tokenizer, block_size: int, device: str | None = None):
    """The frozen teacher model of run folder ``path`` (eval mode, no gradients), after
    checking that its tokenizer is ``tokenizer`` and that its context covers ``block_size``."""
    from tinyllm import backend
    from tinyllm.train.trainer import load_run

    # building the teacher draws initial weights from tinyllm's generator: put its state back,
    # so that the student's random stream (dropout) is the one it would be without a teacher
    state = backend.rng().bit_generator.state
    try:
        cfg, task, _ = load_run(path, device=device)
    finally:
        backend.rng().bit_generator.state = state
    if task.kind not in ("lm", "distill"):
        raise ConfigError(f"task_args.teacher: {path} holds a {task.kind} model; the teacher of "
                          "a distillation must be a GPT language model (task lm)")
    if task.tokenizer.fingerprint() != tokenizer.fingerprint():
        raise ConfigError(
            f"task_args.teacher: the teacher's tokenizer ({Path(path) / 'tokenizer.json'}: "
            f"{_describe(task.tokenizer)}) is not the student's ({_describe(tokenizer)}): "
            "distillation compares their distributions token by token, so both must use one "
            "tokenizer; train the student on the teacher's corpus and tokenizer")
    if cfg.block_size < block_size:
        raise ConfigError(f"task_args.teacher: the teacher ({path}) reads {cfg.block_size} "
                          f"positions, fewer than the student's block_size {block_size}")
    teacher = task.model
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad = False
    return teacher


class DistillTask(LMTask):
    """``lm`` with the distillation loss against ``task_args.teacher`` (see the module doc)."""

    kind = "distill"
    TASK_ARGS = {"teacher": (Optional[str], None), "temperature": (float, 2.0),
                 "alpha": (float, 0.5)}
    teacher = None  # loaded by optimizer(), only to train

    def load_data(self):
        if not self.args["teacher"]:
            raise ConfigError("task 'distill' needs a teacher run folder: --teacher DIR (or "
                              "--set task_args.teacher=DIR), e.g. runs/baby-shakespeare")
        self.temperature, self.alpha = self.args["temperature"], self.args["alpha"]
        if not self.temperature > 0 or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"task_args: temperature must be > 0 and alpha in [0, 1], got "
                              f"{self.temperature} and {self.alpha}")
        super().load_data()

    def optimizer(self):
        c = self.cfg
        self.teacher = load_teacher(self.args["teacher"], self.tokenizer, c.block_size,
                                    c.device)
        return super().optimizer()

    def loss(self, inputs):
        from tinyllm.autograd import is_grad_enabled
        from tinyllm.distill import student_loss

        if self.teacher is None or not self.model.training or not is_grad_enabled():
            return super().loss(inputs)  # evaluation: the student's own cross-entropy
        return student_loss(self.model, self.teacher, inputs["idx"], inputs["targets"],
                            self.temperature, self.alpha)
