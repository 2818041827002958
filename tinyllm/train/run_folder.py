"""Preparing a run: a new run folder, or a resumed one, and the pieces the loop needs.

``new_run`` checks the settings, builds the task (nothing is written before the settings are
known to be good), then creates the folder and writes ``config.json`` and the tokenizer.
``resume_run`` finishes or discards a half-saved checkpoint, reads the folder back (every file
checked, the tokenizer against the weights' fingerprint) and restores the weights, the optimizer
and both random generators. Which of the two applies to a folder:

=========================================  ===============================================
the folder                                  new run (``--out``)       ``--resume``
=========================================  ===============================================
missing or empty                            trains into it            refused (no run)
config.json but no checkpoint yet (killed   starts afresh in it       starts that run again
before the first one, or its disk filled)                             from step 0
a checkpoint (state.json)                   refused: use --resume     continues it exactly
a regular file                              refused                   refused
=========================================  ===============================================
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import numpy as np

from tinyllm import backend
from tinyllm.precision import Precision
from tinyllm.train import checkpoint as ckpt
from tinyllm.train import data_parallel
from tinyllm.train.config import RESUMABLE_KEYS, ConfigError, TrainConfig, apply_overrides
from tinyllm.train.tasks import build_task

__all__ = ["new_run", "resume_run", "setup_device", "build_from_checkpoint", "StopFlag"]

STALE = ("metrics.jsonl", "train_loss.jsonl", "loss.png")  # a checkpoint-less run's leftovers


def setup_device(device: str) -> str:
    try:
        data_parallel.use_local_gpu(device)  # data parallel: each rank its own GPU
        backend.set_default_device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"config key 'device': {device!r} cannot be used here: {e}") from None
    return backend.get_default_device()


def read_jsonl(path: Path, up_to: int) -> list[dict]:
    """The records of ``path`` whose step is at most ``up_to`` (a resumed run drops the rest)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= up_to:
            records.append(r)
    return records


def build_from_checkpoint(cfg: TrainConfig, ck: ckpt.Checkpoint, load_data: bool = True):
    """The task of ``cfg`` with the run's tokenizer and the checkpoint's weights."""
    setup_device(cfg.device)
    task = build_task(cfg, tokenizer=ck.tokenizer, load_data=load_data)
    if "quantization" in ck.model_meta:  # a folder `tinyllm quantize` wrote: integer weights
        from tinyllm.train.quantize_cmd import apply_saved_quantization

        apply_saved_quantization(task.model, ck.model_meta, ck.run_dir / "model.safetensors")
    Precision(cfg.precision).apply(task.model)  # computes as it was trained (bfloat16, ...)
    try:
        task.model.load_state_dict(ck.model)
    except (KeyError, ValueError) as e:
        raise ckpt.CheckpointError(f"{ck.run_dir / 'model.safetensors'} does not fit the model "
                                   f"of config.json: {e.args[0] if e.args else e}") from None
    return task


def _folder_state(out: Path) -> str:
    if out.exists() and not out.is_dir():
        return "file"
    if (out / "state.json").exists():
        return "checkpoint"
    if (out / "config.json").exists():
        return "started"
    return "empty"


def _write_start(out: Path, cfg: TrainConfig, task) -> None:
    """Create the run folder and write what a run starts with; a failure names the folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in STALE:
            (out / name).unlink(missing_ok=True)
        ckpt.atomic_write_json(out / "config.json", cfg.to_dict())
        task.tokenizer.save_pretrained(out)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise ckpt.RunFolderError(f"cannot write the run folder {out}: {e.strerror or e}{where}; "
                                  "choose a writable --out folder (or free some space)") from None


def new_run(run_cls, cfg: TrainConfig | None, overrides: dict | None, out, default_out,
            restart_note: str | None = None):
    """A ``run_cls`` (the trainer's ``Run``) for a fresh run of ``cfg`` into ``out``."""
    from tinyllm import manual_seed

    cfg = apply_overrides(cfg or TrainConfig(), overrides or {})
    cfg.finalize().validate()
    out = Path(data_parallel.from_writer(out or cfg.out or default_out(cfg)))  # rank 0's
    state = data_parallel.from_writer(_folder_state(out))  # as rank 0 saw it, before writing
    if state == "file":
        raise ConfigError(f"--out {out} is a file, not a folder: give the path of a folder for "
                          "the run (it is created if missing)")
    if state == "checkpoint":
        raise ConfigError(f"{out} already holds a run with a checkpoint: continue it with "
                          f"--resume {out}, or choose another --out folder")
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
    if data_parallel.is_writer():  # data parallel: rank 0 alone writes
        _write_start(out, cfg, task)
    run = run_cls(cfg, out, task, opt, np.random.default_rng(cfg.seed), {}, [], [], None)
    if restart_note:
        run.notes.append(restart_note)
    elif state == "started":
        run.notes.append(f"{out} held a run that stopped before its first checkpoint: "
                         "starting a new run in it from step 0")
    return run


def _check_overrides(overrides: dict | None) -> None:
    changed = {k: v for k, v in (overrides or {}).items() if k not in RESUMABLE_KEYS}
    if changed:
        raise ConfigError(f"cannot change {', '.join(sorted(changed))} when resuming (it "
                          f"would not continue the same run); only "
                          f"{', '.join(RESUMABLE_KEYS)} may change")


def resume_run(run_cls, resume, overrides: dict | None):
    """A ``run_cls`` that continues the run in ``resume`` exactly (or, when the folder holds
    no checkpoint yet, starts that run again from step 0)."""
    from tinyllm import manual_seed

    resume = Path(resume)
    if not resume.is_dir():
        raise ckpt.CheckpointError(f"{resume} is not a folder: give the run folder that "
                                   "`tinyllm train --out` wrote")
    _check_overrides(overrides)
    note = data_parallel.on_writer(ckpt.recover, resume)  # the other ranks wait for rank 0
    if not (resume / "state.json").exists() and (resume / "config.json").is_file():
        config = ckpt.read_json(resume / "config.json", "config.json")
        if not isinstance(config, dict):
            raise ckpt.CheckpointError(f"{resume / 'config.json'} is damaged: not a JSON object")
        cfg = TrainConfig.from_dict(config, where=str(resume / "config.json"))
        return new_run(run_cls, cfg, overrides, resume, None, restart_note=(
            f"{resume} holds no checkpoint yet (the run stopped before its first one): "
            "starting that run again from step 0 with its config.json"))
    ck = ckpt.load_checkpoint(resume)
    ckpt.check_resumable(ck.state, resume / "state.json")
    cfg = TrainConfig.from_dict(ck.config, where=str(resume / "config.json"))
    apply_overrides(cfg, overrides or {})
    cfg.out = str(resume)
    cfg.validate()
    manual_seed(cfg.seed)
    task = build_from_checkpoint(cfg, ck)
    opt = task.optimizer()
    try:
        opt.load_state_dict(ck.optimizer)
    except (ValueError, KeyError, IndexError) as e:
        raise ckpt.CheckpointError(f"{resume / 'optimizer.safetensors'} does not fit the "
                                   f"model: {e}") from None
    batch_rng = np.random.default_rng(cfg.seed)
    ckpt.set_rng_state(batch_rng, ck.state["batch_rng"], str(resume / "state.json"))
    ckpt.set_rng_state(backend.rng(), ck.state["tinyllm_rng"], str(resume / "state.json"))
    try:
        if data_parallel.is_writer():
            ckpt.atomic_write_json(resume / "config.json", cfg.to_dict())
    except OSError as e:
        raise ckpt.RunFolderError(ckpt.write_failure(resume, "config.json", e,
                                                     "Nothing was changed", ck.step)) from None
    run = run_cls(cfg, resume, task, opt, batch_rng, ck.state,
                  read_jsonl(resume / "metrics.jsonl", ck.step),
                  read_jsonl(resume / "train_loss.jsonl", ck.step), ck.step)
    if note:
        run.notes.append(f"{resume}: {note}")
    return run


class StopFlag:
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
