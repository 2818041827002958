"""The training loop: flat and honest, nanoGPT style.

    for step in range(start, max_iters):
        lr = cosine_with_warmup(step, ...)            # a function of the step, nothing stored
        x = task.batch("train", batch_rng)            # the only draw of the batch generator
        loss = task.loss(x); backward; clip; AdamW    # dropout draws from tinyllm's generator
        every eval_interval: train/val loss on fixed batches (their own generator)
        every ckpt_interval: checkpoint (weights, optimizer, both generators, step)

Step numbers count updates done: the checkpoint of step 100 holds the weights after 100 updates
and the generators as they were then, so a resumed run draws exactly the batches and dropout
masks that the uninterrupted run would have drawn, and ends with the same bits. Evaluation and
sampling never touch those two generators.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyllm import backend
from tinyllm.train import checkpoint as ckpt
from tinyllm.train import data_parallel
from tinyllm.train.config import RESUMABLE_KEYS, ConfigError, TrainConfig, apply_overrides
from tinyllm.train.logging import Progress, choose_mode, format_seconds
from tinyllm.train.tasks import Task, build_task

__all__ = ["train", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "estimate_loss",
           "load_run", "default_out"]


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) stopped being finite; the last good checkpoint is kept."""


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


# ----------------------------------------------------------------------------------- helpers
def setup_device(device: str) -> str:
    try:
        data_parallel.use_local_gpu(device)  # data parallel: each rank its own GPU
        backend.set_default_device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"config key 'device': {device!r} cannot be used here: {e}") from None
    return backend.get_default_device()


def to_device(inputs: dict, device: str) -> dict:
    if device == "cpu":
        return inputs
    return {k: backend.as_array(v, device=device) for k, v in inputs.items()}


def estimate_loss(task: Task, cfg: TrainConfig, iters: int | None = None) -> dict:
    """Mean loss over ``eval_iters`` batches of each split, in eval mode. The batches come from
    a generator seeded by the run's seed alone: the same batches at every evaluation (smoother
    curves), and the training generators are left alone."""
    from tinyllm.autograd import no_grad

    out = {}
    task.model.eval()
    with no_grad():
        for i, split in enumerate(("train", "val")):
            rng = np.random.default_rng([cfg.seed, 1, i])
            losses = [task.loss(to_device(task.batch(split, rng)[0], cfg.device)).item()
                      for _ in range(iters or cfg.eval_iters)]
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


def _all_finite(model) -> bool:
    for p in model.parameters():
        xp = backend.get_array_module(p.data)
        if not bool(xp.isfinite(p.data).all()):
            return False
    return True


def _read_metrics(path: Path, up_to: int) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and r.get("step", up_to + 1) <= up_to:
            records.append(r)
    return records


class _StopFlag:
    """Ctrl-C sets a flag that the loop checks between steps (so the checkpoint is never taken
    in the middle of an update); a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.set, self.old = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


# ----------------------------------------------------------------------------------- the run
class Run:
    """Everything one training run holds; ``train()`` drives it."""

    def __init__(self, cfg: TrainConfig, out: Path, task: Task, optimizer, batch_rng,
                 state: dict, metrics: list, resumed_from: int | None):
        self.cfg, self.out, self.task, self.opt = cfg, out, task, optimizer
        self.batch_rng, self.metrics, self.resumed_from = batch_rng, metrics, resumed_from
        self.step = state.get("step", 0)
        self.best_val_loss = state.get("best_val_loss")
        self.best_step = state.get("best_step")
        self.tokens = state.get("tokens_seen", 0)
        self.elapsed0 = state.get("elapsed_s", 0.0)
        self.last_loss = state.get("last_loss")
        self.last_ckpt = resumed_from
        self.note = None  # what recover() did to the folder, if anything
        self.dp = None  # data parallel: the DataParallel step, when a step has several batches
        self.writer = data_parallel.is_writer()  # data parallel: rank 0 alone writes and prints
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t0

    def model_meta(self) -> dict:
        t = self.task
        return {"task": t.kind, "model_class": type(t.model).__name__,
                "model_config": json.dumps(t.model_config()), "task_info": json.dumps(t.info)}

    def kept(self) -> str:
        if self.last_ckpt is None:
            return f"No checkpoint was saved yet in {self.out}"
        return f"The last good checkpoint (step {self.last_ckpt}) in {self.out} is kept"

    def save(self) -> None:
        if not _all_finite(self.task.model):
            raise TrainingDiverged(
                f"the weights are no longer finite at step {self.step} (the last finite loss "
                f"was {self.last_loss}); not saving them. {self.kept()}")
        state = {"step": self.step, "best_val_loss": self.best_val_loss,
                 "best_step": self.best_step, "last_loss": self.last_loss,
                 "tokens_seen": self.tokens, "elapsed_s": round(self.elapsed, 3),
                 "batch_rng": self.batch_rng.bit_generator.state,
                 "tinyllm_rng": backend.rng().bit_generator.state,
                 "tokenizer": "tokenizer.json", "config": "config.json",
                 "world_size": 1 if self.dp is None else self.dp.world}
        opt_state = self.opt.state_dict()  # data parallel: under ZeRO every rank gathers
        if self.writer:
            ckpt.save_checkpoint(self.out, self.step, self.task.model.state_dict(), opt_state,
                                 state, self.model_meta())
        self.last_ckpt = self.step

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
        self.task.model.train()
        rec.update(lr=self.lr(max(self.step - 1, 0)), elapsed_s=round(self.elapsed, 3),
                   tokens=self.tokens)
        self.metrics.append(rec)
        if self.best_val_loss is None or rec["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_step = rec["val_loss"], self.step
        if self.writer:
            ckpt.atomic_write_text(self.out / "metrics.jsonl",
                                   "".join(json.dumps(r) + "\n" for r in self.metrics))
            try:
                from tinyllm.train.plots import plot_losses

                plot_losses(self.metrics, self.out / "loss.png", title=cfg.preset or "")
            except ImportError:  # matplotlib missing: the numbers are in metrics.jsonl
                pass
        extra = "".join(f" | {k} {v:.4f}" for k, v in rec.items()
                        if k not in ("step", "train_loss", "val_loss", "lr", "elapsed_s",
                                     "tokens"))
        progress.message(f"step {self.step}: train loss {rec['train_loss']:.4f}, "
                         f"val loss {rec['val_loss']:.4f}{extra}")
        return rec

    def lr(self, step: int) -> float:
        from tinyllm.optim import cosine_with_warmup

        c = self.cfg
        return cosine_with_warmup(step, c.lr, c.min_lr, c.warmup_iters, c.lr_decay_iters)


def _prepare(cfg: TrainConfig | None, resume, overrides: dict | None, out) -> Run:
    from tinyllm import manual_seed

    if resume is not None:
        resume = Path(resume)
        note = data_parallel.on_writer(ckpt.recover, resume)  # the others wait for rank 0
        ck = ckpt.load_checkpoint(resume)
        cfg = TrainConfig.from_dict(ck.config, where=str(resume / "config.json"))
        changed = {k: v for k, v in (overrides or {}).items() if k not in RESUMABLE_KEYS}
        if changed:
            raise ConfigError(f"cannot change {', '.join(sorted(changed))} when resuming (it "
                              f"would not continue the same run); only "
                              f"{', '.join(RESUMABLE_KEYS)} may change")
        apply_overrides(cfg, overrides or {})
        cfg.out = str(resume)
        cfg.validate()
        setup_device(cfg.device)
        manual_seed(cfg.seed)
        task = build_task(cfg, tokenizer=ck.tokenizer)
        try:
            task.model.load_state_dict(ck.model)
        except KeyError as e:
            raise ckpt.CheckpointError(f"{resume / 'model.safetensors'} does not fit the model "
                                       f"of config.json: {e.args[0]}") from None
        opt = task.optimizer()
        try:
            opt.load_state_dict(ck.optimizer)
        except (ValueError, KeyError, IndexError) as e:
            raise ckpt.CheckpointError(f"{resume / 'optimizer.safetensors'} does not fit the "
                                       f"model: {e}") from None
        batch_rng = np.random.default_rng(cfg.seed)
        ckpt.set_rng_state(batch_rng, ck.state["batch_rng"], str(resume / "state.json"))
        ckpt.set_rng_state(backend.rng(), ck.state["tinyllm_rng"], str(resume / "state.json"))
        if data_parallel.is_writer():
            ckpt.atomic_write_json(resume / "config.json", cfg.to_dict())
        metrics = _read_metrics(resume / "metrics.jsonl", ck.step)
        run = Run(cfg, resume, task, opt, batch_rng, ck.state, metrics, ck.step)
        run.note = note
        return run

    cfg = apply_overrides(cfg or TrainConfig(), overrides or {})
    cfg.finalize().validate()
    out = Path(data_parallel.from_writer(out or cfg.out or default_out(cfg)))  # rank 0's
    writer = data_parallel.is_writer()
    if writer and ((out / "state.json").exists() or (out / "config.json").exists()):
        raise ConfigError(f"{out} already holds a run: continue it with --resume {out}, or "
                          "choose another --out folder")
    cfg.out = str(out)
    setup_device(cfg.device)
    manual_seed(cfg.seed)
    tokenizer, init = None, None
    if cfg.init_from:
        init = ckpt.load_checkpoint(cfg.init_from, optimizer=False)
        tokenizer = init.tokenizer
    task = build_task(cfg, tokenizer=tokenizer)
    if init is not None:
        if hasattr(task, "load_pretrained_body"):
            task.load_pretrained_body(init.model)
        else:
            task.model.load_state_dict(init.model)
    opt = task.optimizer()
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_json(out / "config.json", cfg.to_dict())
        task.tokenizer.save(out / "tokenizer.json")
        (out / "tokenizer.json").chmod(0o644)  # Tokenizer.save leaves mkstemp's 0600
    return Run(cfg, out, task, opt, np.random.default_rng(cfg.seed), {}, [], None)


@data_parallel.stop_all_on_error
def train(cfg: TrainConfig | None = None, resume=None, overrides: dict | None = None,
          out=None, quiet: bool = False, mode: str | None = None) -> TrainResult:
    """Train ``cfg`` into a new run folder, or continue the run in ``resume``.

    ``overrides``: config keys to set (when resuming only those that keep the trajectory:
    max_iters, intervals, device, ...). Raises ``ConfigError`` for bad settings,
    ``CheckpointError`` for a damaged run folder, ``TrainingDiverged`` when the loss stops being
    finite, ``TrainingInterrupted`` after Ctrl-C (a checkpoint is saved first)."""
    from tinyllm.train.step import train_step

    run = _prepare(cfg, resume, overrides, out)
    dp = run.dp = data_parallel.setup(run)  # None: plain steps in one process
    cfg, task, opt, model = run.cfg, run.task, run.opt, run.task.model
    progress = Progress(cfg.max_iters, run.step, (mode or choose_mode(quiet)) if run.writer
                        else "quiet", cfg.log_interval)  # data parallel: rank 0 prints
    if run.note:
        progress.message(f"{run.out}: {run.note}")
    nparams = sum(p.size for p in model.parameters())
    what = (f"resuming {run.out} at step {run.step}" if run.resumed_from is not None
            else f"training into {run.out}")
    progress.message(f"{what}: {type(model).__name__} ({nparams / 1e6:.2f}M parameters), task "
                     f"{task.kind}, corpus {cfg.corpus}, vocabulary {task.tokenizer.vocab_size}, "
                     f"{cfg.max_iters} steps on {cfg.device}")
    if dp is not None:
        progress.message(dp.describe())
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    tok_s, t_last, tok_last = 0.0, time.perf_counter(), 0
    start_tokens, t_train = run.tokens, time.perf_counter()
    try:
        with _StopFlag() as stop:
            if run.step == 0 and run.resumed_from is None and cfg.max_iters > 0:
                run.evaluate(progress)
            while run.step < cfg.max_iters:
                if stop.set if dp is None else dp.stop:  # data parallel: any rank's Ctrl-C
                    if run.step != run.last_ckpt:
                        run.save()
                    raise TrainingInterrupted(
                        f"interrupted at step {run.step}; checkpoint saved in {run.out}. "
                        f"Continue with: tinyllm train --resume {run.out}")
                lr = run.lr(run.step)
                # overflow is checked explicitly (the loss, and the weights before each save)
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    if dp is None:
                        inputs, ntok = task.batch("train", run.batch_rng)
                        loss = task.loss(to_device(inputs, cfg.device))
                        value = loss.item()
                    else:  # data parallel: micro-batches' and ranks' gradients, summed
                        value, ntok = dp.forward_backward(run.batch_rng, run.step, stop.set)
                    if not math.isfinite(value):
                        raise TrainingDiverged(
                            f"the loss became {value} at step {run.step + 1} (the last finite "
                            f"loss was {run.last_loss} at step {run.step}); stopping. "
                            f"{run.kept()}. Lower lr ({cfg.lr}) or check grad_clip "
                            f"({cfg.grad_clip})")
                    if dp is None:
                        train_step(loss, opt, params, lr, cfg.grad_clip)
                    else:
                        dp.update(lr)
                run.step += 1
                run.tokens += ntok
                run.last_loss = value
                now = time.perf_counter()
                if now - t_last >= 1.0 or run.step == cfg.max_iters:
                    tok_s = (run.tokens - tok_last) / (now - t_last) if tok_last or run.tokens \
                        else 0.0
                    t_last, tok_last = now, run.tokens
                progress.update(run.step, value, lr, tok_s)
                if run.step % cfg.eval_interval == 0 or run.step == cfg.max_iters:
                    run.evaluate(progress)
                if run.step % cfg.ckpt_interval == 0 or run.step == cfg.max_iters:
                    run.save()
    finally:
        progress.close()
    train_s = time.perf_counter() - t_train
    tps = (run.tokens - start_tokens) / max(train_s, 1e-9)  # this session, evaluations included
    result = TrainResult(run.out, run.step, run.best_val_loss, run.elapsed, tps, run.metrics)
    best = (f"best val loss {run.best_val_loss:.4f} (step {run.best_step})"
            if run.best_val_loss is not None else "no evaluation")
    if run.writer:  # data parallel: rank 0 alone prints and samples
        progress.always(f"done: {run.step} steps in {format_seconds(run.elapsed)} "
                        f"(this session {format_seconds(train_s)}), {best}, {tps:,.0f} "
                        f"tokens/s; run folder {run.out}")
    if run.writer and cfg.sample_chars and task.can_sample and task.kind == "lm":
        text = task.sample(None, cfg.sample_chars, do_sample=True, temperature=0.8, top_k=200,
                           seed=cfg.seed)[0]
        result.samples.append(text)
        progress.always(f"sample ({cfg.sample_chars} characters, temperature 0.8):\n{text}")
    return result


# ----------------------------------------------------------------------------------- reading runs
def load_run(run_dir, load_data: bool = False, device: str | None = None):
    """The (config, task with trained weights, checkpoint) of a run folder, for sample/eval."""
    ck = ckpt.load_checkpoint(run_dir, optimizer=False)
    cfg = TrainConfig.from_dict(ck.config, where=str(Path(run_dir) / "config.json"))
    if device:
        cfg.device = device
    cfg.validate()
    setup_device(cfg.device)
    task = build_task(cfg, tokenizer=ck.tokenizer, load_data=load_data)
    try:
        task.model.load_state_dict(ck.model)
    except KeyError as e:
        raise ckpt.CheckpointError(f"{Path(run_dir) / 'model.safetensors'} does not fit the "
                                   f"model of config.json: {e.args[0]}") from None
    task.model.eval()
    return cfg, task, ck
