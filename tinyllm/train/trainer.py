"""The training loop: flat and honest, nanoGPT style.

    for step in range(start, max_iters):
        lr = cosine_with_warmup(step, ...)            # a function of the step, nothing stored
        x = task.batch("train", batch_rng)            # the only draw of the batch generator
        loss = task.loss(x); backward; clip; AdamW    # dropout draws from tinyllm's generator
        stop if the loss is not finite, or diverges   # (its running mean grows tenfold)
        every log_interval: record the loss           # train_loss.jsonl, loss.png
        every eval_interval: train/val loss on fixed batches (their own generator)
        every ckpt_interval: checkpoint (weights, optimizer, both generators, step)

Step numbers count updates done: the checkpoint of step 100 holds the weights after 100 updates
and the generators as they were then, so a resumed run draws exactly the batches and dropout
masks that the uninterrupted run would have drawn, and ends with the same bits. Evaluation and
sampling never touch those two generators.

A run folder is never a dead end: ``--resume`` of a folder that holds no checkpoint yet (the run
was killed, or its disk filled, before the first one) starts that run again from step 0 with its
``config.json``, and a new run may be started into such a folder; a folder with a checkpoint
is refused to a new run (continue it with ``--resume``). A write that fails (full disk,
read-only folder) raises ``RunFolderError`` saying which checkpoint is kept and what to run.

Extending: the loop below reads top to bottom and calls small ``Run`` methods; a new hook is
one more method called at its place (``step_once`` is the update, ``record`` what follows it,
``evaluate`` and ``save`` the periodic work).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyllm import backend
from tinyllm.train import checkpoint as ckpt
from tinyllm.train import data_parallel
from tinyllm.train.config import ConfigError, TrainConfig
from tinyllm.train.logging import Progress, choose_mode, format_seconds
from tinyllm.train.mixed_precision import RunPrecision
from tinyllm.train.run_folder import StopFlag, new_run, resume_run
from tinyllm.train.task import Task

__all__ = ["train", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "estimate_loss",
           "load_run", "default_out"]


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) stopped being finite, or the loss grew by an order of
    magnitude; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: a checkpoint was saved, the run can be resumed."""


@dataclass
class TrainResult:
    out: Path
    step: int
    best_val_loss: float | None
    elapsed_s: float
    tokens_per_s: float
    metrics: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    losses: list = field(default_factory=list)  # the training loss of every step of this session
    task: Task | None = None                    # the task, with the trained model and tokenizer


def estimate_loss(task: Task, cfg: TrainConfig, iters: int | None = None) -> dict:
    """Mean loss over ``iters`` (default ``eval_iters``) batches of each split, in eval mode.
    The batches come from a generator seeded by the run's seed alone: the same batches at
    every evaluation (smoother curves), and the training generators are left alone."""
    from tinyllm.autograd import no_grad

    n = cfg.eval_iters if iters is None else iters
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"eval iterations (--eval-iters / eval_iters) must be a positive "
                          f"number of batches, got {n!r}")
    out = {}
    task.model.eval()
    with no_grad():
        for i, split in enumerate(("train", "val")):
            rng = np.random.default_rng([cfg.seed, 1, i])
            losses = [task.loss(task.batch(split, rng)[0]).item()
                      for _ in range(n)]
            out[f"{split}_loss"] = float(np.mean(losses))
    task.model.train()
    return out


def default_out(cfg: TrainConfig) -> Path:
    """``runs/<preset>``, or ``runs/<preset>-2``, ... : never an existing run folder."""
    base = Path("runs") / (cfg.preset or f"{cfg.task}-{cfg.corpus}")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


# ----------------------------------------------------------------------------------- the run
class Run:
    """Everything one training run holds; ``train()`` drives it."""

    EMA = 0.1  # weight of the newest loss in the running mean the divergence check watches
    PLOT_EVERY_S = 15.0

    def __init__(self, cfg: TrainConfig, out: Path, task: Task, optimizer, batch_rng,
                 state: dict, metrics: list, loss_log: list, resumed_from: int | None):
        self.cfg, self.out, self.task, self.opt = cfg, out, task, optimizer
        self.batch_rng, self.metrics, self.loss_log = batch_rng, metrics, loss_log
        self.resumed_from = resumed_from
        self.step = state.get("step", 0)
        self.best_val_loss = state.get("best_val_loss")
        self.best_step = state.get("best_step")
        self.tokens = state.get("tokens_seen", 0)
        self.elapsed0 = state.get("elapsed_s", 0.0)
        self.last_loss = state.get("last_loss")
        self.first_loss = state.get("first_loss")
        self.loss_ema = state.get("loss_ema")
        self.low_ema = state.get("lowest_loss_ema")
        self.last_ckpt = resumed_from
        self.losses: list[float] = []
        self.notes: list[str] = []  # what preparing the folder did, said when the run starts
        self.params = [p for p in task.model.parameters() if p.requires_grad]
        self.precision = RunPrecision(cfg, task.model, state)  # --set precision=bfloat16
        self.dp = None  # data parallel: the DataParallel step, when a step has several batches
        self.writer = data_parallel.is_writer()  # data parallel: rank 0 alone writes and prints
        self.t0 = time.perf_counter()
        self.plotted = -math.inf

    @property
    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t0

    def lr(self, step: int) -> float:
        from tinyllm.optim import cosine_with_warmup

        c = self.cfg
        return cosine_with_warmup(step, c.lr, c.min_lr, c.warmup_iters, c.lr_decay_iters)

    def kept(self) -> str:
        if self.last_ckpt is None:
            return (f"No checkpoint was saved yet in {self.out}; tinyllm train --resume "
                    f"{self.out} starts the run again from step 0")
        return f"The last good checkpoint (step {self.last_ckpt}) in {self.out} is kept"

    # ------------------------------------------------------------------ one step
    def step_once(self, stop_requested: bool = False) -> float:
        """One update from one training batch; returns its loss (checked to be finite).
        ``stop_requested``: Ctrl-C was pressed (data parallel: told to the other ranks)."""
        cfg = self.cfg
        lr = self.lr(self.step)
        # overflow is checked explicitly (the loss, and the weights before each save)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.dp is None:
                inputs, ntok = self.task.batch("train", self.batch_rng)
                # host batches: the model checks the ids there and moves them itself, so a
                # step on the GPU copies back only the loss (and the clipping norm)
                loss = self.task.loss(inputs)
                value = loss.item()
            else:  # data parallel: micro-batches' and ranks' gradients, summed
                value, ntok = self.dp.forward_backward(self.batch_rng, self.step, stop_requested)
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"the loss became {value} at step {self.step + 1} (the last finite loss was "
                    f"{self.last_loss} at step {self.step}); stopping. {self.kept()}. Lower lr "
                    f"({cfg.lr}) or check grad_clip ({cfg.grad_clip})")
            if self.dp is None:
                self.precision.step(loss, self.opt, self.params, lr, cfg.grad_clip)
            else:
                self.dp.update(lr)
        self.step += 1
        self.tokens += ntok
        return value

    def record(self, value: float) -> None:
        """After an update: the loss log, and the divergence check on its running mean."""
        self.last_loss = value
        self.losses.append(value)
        if self.step % self.cfg.log_interval == 0 or self.step == self.cfg.max_iters:
            self.loss_log.append({"step": self.step, "loss": value,
                                  "lr": self.lr(self.step - 1)})
        if self.first_loss is None:
            self.first_loss = value
        ema = value if self.loss_ema is None else (1 - self.EMA) * self.loss_ema + self.EMA * value
        self.loss_ema = ema
        self.low_ema = ema if self.low_ema is None else min(self.low_ema, ema)
        f = self.cfg.divergence_factor
        if f and ema > f * self.low_ema and ema > self.first_loss:
            raise TrainingDiverged(
                f"the training loss diverged at step {self.step}: its running mean is {ema:.4g}, "
                f"more than {f:g}x its lowest ({self.low_ema:.4g}) and above the first step's "
                f"loss ({self.first_loss:.4g}); stopping. {self.kept()}. Lower lr "
                f"({self.cfg.lr}), or set divergence_factor higher (0 turns this check off)")

    # ------------------------------------------------------------------ periodic work
    def _write(self, what: str, fn) -> None:
        """Run ``fn`` (writes into the run folder); a failure becomes a RunFolderError."""
        if not self.writer:  # data parallel: rank 0 alone writes
            return
        try:
            fn()
        except OSError as e:
            raise ckpt.RunFolderError(ckpt.write_failure(self.out, what, e, self.kept(),
                                                         self.last_ckpt)) from None

    def write_logs(self) -> None:
        lines = lambda recs: "".join(json.dumps(r) + "\n" for r in recs)  # noqa: E731
        self._write("the metrics", lambda: (
            ckpt.atomic_write_text(self.out / "metrics.jsonl", lines(self.metrics)),
            ckpt.atomic_write_text(self.out / "train_loss.jsonl", lines(self.loss_log))))

    def evaluate(self, progress: Progress) -> dict:
        cfg = self.cfg
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            rec = {"step": self.step, **(estimate_loss(self.task, cfg) if self.dp is None
                                         else self.dp.estimate_loss())}
        if not all(math.isfinite(rec[k]) for k in ("train_loss", "val_loss")):
            raise TrainingDiverged(
                f"the evaluation loss is not finite at step {self.step} (train "
                f"{rec['train_loss']}, val {rec['val_loss']}; last finite training loss "
                f"{self.last_loss}). {self.kept()}")
        rec.update(self.task.metrics(np.random.default_rng([cfg.seed, 3])))
        rec.update(self.precision.metrics())
        self.task.model.train()
        rec.update(lr=self.lr(max(self.step - 1, 0)), elapsed_s=round(self.elapsed, 3),
                   tokens=self.tokens)
        self.metrics.append(rec)
        if self.best_val_loss is None or rec["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_step = rec["val_loss"], self.step
        self.write_logs()
        if self.step == cfg.max_iters or (self.step and self.PLOT_EVERY_S
                                          <= time.perf_counter() - self.plotted):
            self._write("loss.png", self.plot)  # a plot costs ~0.5 s: at most every 15 s
            self.plotted = time.perf_counter()
        extra = "".join(f" | {k} {v:.4f}" for k, v in rec.items()
                        if k not in ("step", "train_loss", "val_loss", "lr", "elapsed_s",
                                     "tokens"))
        progress.message(f"step {self.step}: train loss {rec['train_loss']:.4f}, "
                         f"val loss {rec['val_loss']:.4f}{extra}")
        return rec

    def plot(self) -> None:
        try:
            from tinyllm.train.plots import plot_losses
        except ImportError:  # matplotlib missing: the numbers are in the .jsonl files
            return
        plot_losses(self.metrics, self.out / "loss.png", title=self.cfg.preset or "",
                    train_log=self.loss_log)

    def save(self) -> None:
        if not _all_finite(self.task.model):
            raise TrainingDiverged(
                f"the weights are no longer finite at step {self.step} (the last finite loss "
                f"was {self.last_loss}); not saving them. {self.kept()}")
        state = {"step": self.step, "best_val_loss": self.best_val_loss,
                 "best_step": self.best_step, "last_loss": self.last_loss,
                 "first_loss": self.first_loss, "loss_ema": self.loss_ema,
                 "lowest_loss_ema": self.low_ema, "tokens_seen": self.tokens,
                 "elapsed_s": round(self.elapsed, 3),
                 "batch_rng": self.batch_rng.bit_generator.state,
                 "tinyllm_rng": backend.rng().bit_generator.state,
                 "tokenizer": ckpt.TOKENIZER_FILE, "config": "config.json",
                 "world_size": 1 if self.dp is None else self.dp.world,
                 **self.precision.state()}
        self.write_logs()
        opt_state = self.opt.state_dict()  # data parallel: under ZeRO every rank gathers
        self._write(f"the checkpoint of step {self.step}", lambda: ckpt.save_checkpoint(
            self.out, self.step, self.task.model.state_dict(), opt_state, state,
            model_meta(self.task)))
        self.last_ckpt = self.step


def model_meta(task: Task) -> dict:
    """The strings stored in model.safetensors' header: what the weights are and the tokenizer
    they were trained with (its fingerprint, checked when the folder is read)."""
    return {"task": task.kind, "model_class": type(task.model).__name__,
            "model_config": json.dumps(task.model_config()), "task_info": json.dumps(task.info),
            "tokenizer_fingerprint": task.tokenizer.fingerprint()}


def _all_finite(model) -> bool:
    for p in model.parameters():
        xp = backend.get_array_module(p.data)
        if not bool(xp.isfinite(p.data).all()):
            return False
    return True


# ----------------------------------------------------------------------------------- train()
@data_parallel.stop_all_on_error
def train(cfg: TrainConfig | None = None, resume=None, overrides: dict | None = None,
          out=None, quiet: bool = False, mode: str | None = None) -> TrainResult:
    """Train ``cfg`` into a new run folder, or continue the run in ``resume``.

    ``overrides``: config keys to set (when resuming only those that keep the trajectory:
    max_iters, intervals, device, ...). Raises ``ConfigError`` for bad settings,
    ``CheckpointError`` for a damaged run folder (``RunFolderError`` for one that cannot be
    written), ``TrainingDiverged`` when the loss stops being finite or diverges,
    ``TrainingInterrupted`` after Ctrl-C (a checkpoint is saved first)."""
    backend.tune_malloc()  # keep freed activations in the heap (TINYLLM_MALLOPT=0: off)
    run = (resume_run(Run, resume, overrides) if resume is not None
           else new_run(Run, cfg, overrides, out, default_out))
    run.dp = data_parallel.setup(run)  # None: plain steps in one process
    run.precision.attach(run.dp)
    cfg, task, model = run.cfg, run.task, run.task.model
    progress = Progress(cfg.max_iters, run.step, (mode or choose_mode(quiet)) if run.writer
                        else "silent", cfg.log_interval)  # data parallel: rank 0 prints
    for note in run.notes + task.notes():
        progress.message(note)
    nparams = sum(p.size for p in model.parameters())
    what = (f"resuming {run.out} at step {run.step}" if run.resumed_from is not None
            else f"training into {run.out}")
    progress.message(f"{what}: {type(model).__name__} ({nparams / 1e6:.2f}M parameters), task "
                     f"{task.kind}, corpus {cfg.corpus}, vocabulary {task.tokenizer.vocab_size}, "
                     f"{cfg.max_iters} steps on {cfg.device}")
    if run.dp is not None:
        progress.message(run.dp.describe())
    model.train()
    tok_s, t_last, tok_last = 0.0, time.perf_counter(), 0
    start_tokens, t_train = run.tokens, time.perf_counter()
    try:
        with StopFlag() as stop:
            if run.step == 0 and run.resumed_from is None and cfg.max_iters > 0:
                run.evaluate(progress)
            while run.step < cfg.max_iters:
                if stop.set if run.dp is None else run.dp.stop:  # data parallel: any rank's Ctrl-C
                    if run.step != run.last_ckpt:
                        run.save()
                    raise TrainingInterrupted(
                        f"interrupted at step {run.step}; checkpoint saved in {run.out}. "
                        f"Continue with: tinyllm train --resume {run.out}")
                value = run.step_once(stop.set)
                run.record(value)
                now = time.perf_counter()
                if now - t_last >= 1.0 or run.step == cfg.max_iters:
                    tok_s = (run.tokens - tok_last) / (now - t_last)
                    t_last, tok_last = now, run.tokens
                progress.update(run.step, value, run.lr(run.step - 1), tok_s)
                if run.step % cfg.eval_interval == 0 or run.step == cfg.max_iters:
                    run.evaluate(progress)
                if run.step % cfg.ckpt_interval == 0 or run.step == cfg.max_iters:
                    run.save()
    finally:
        progress.close()
    return _finish(run, progress, time.perf_counter() - t_train, start_tokens)


def _finish(run: Run, progress: Progress, train_s: float, start_tokens: int) -> TrainResult:
    cfg, task = run.cfg, run.task
    tps = (run.tokens - start_tokens) / max(train_s, 1e-9)  # this session, evaluations included
    result = TrainResult(run.out, run.step, run.best_val_loss, run.elapsed, tps, run.metrics,
                         losses=run.losses, task=task)
    best = (f"best val loss {run.best_val_loss:.4f} (step {run.best_step})"
            if run.best_val_loss is not None else "no evaluation")
    progress.always(f"done: {run.step} steps in {format_seconds(run.elapsed)} "
                    f"(this session {format_seconds(train_s)}), {best}, {tps:,.0f} tokens/s; "
                    f"run folder {run.out}")
    text = (task.end_sample(cfg.sample_chars, cfg.seed) if cfg.sample_chars and run.writer
            else None)  # data parallel: rank 0 alone samples
    if text is not None:
        result.samples.append(text)
        progress.always(f"sample ({cfg.sample_chars} characters, temperature 0.8):\n{text}")
    return result


# ----------------------------------------------------------------------------------- reading runs
def load_run(run_dir, load_data: bool = False, device: str | None = None):
    """The (config, task with trained weights, checkpoint) of a run folder, for sample/eval."""
    from tinyllm.train.run_folder import build_from_checkpoint

    ck = ckpt.load_checkpoint(run_dir, optimizer=False)
    cfg = TrainConfig.from_dict(ck.config, where=str(Path(run_dir) / "config.json"))
    if device:
        cfg.device = device
    cfg.validate()
    task = build_from_checkpoint(cfg, ck, load_data=load_data)
    task.model.eval()
    return cfg, task, ck
