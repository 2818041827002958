"""The run folder and its checkpoint: every file atomic, the set always consistent.

A run folder holds::

    config.json            the TrainConfig (written once, at the start)
    tokenizer.json         the tokenizer in Hugging Face's format, with tokenizer_config.json
                           (written once; folders of older versions hold tinyllm's own schema
                           under this name, which still loads)
    model.safetensors      the weights; __metadata__: step, model class and config, and the
                           tokenizer's fingerprint (checked against tokenizer.json on load)
    optimizer.safetensors  the optimizer's arrays as ``state.<i>.<name>`` (``state.12.exp_avg``);
                           __metadata__: step, the per-parameter counters and the param_groups
    state.json             step, best validation loss, RNG states, ... (written LAST: it names
                           the step that the other files must carry)
    metrics.jsonl          one line per evaluation; train_loss.jsonl the training loss every
                           log_interval steps; loss.png the curves of both

Saving is a small journal. The three checkpoint files are first written into
``.checkpoint-next/`` (each atomically: a temporary file, fsync, rename), ``state.json`` last,
and then renamed into the run folder one by one, ``state.json`` last. A process killed at any
moment leaves either the old complete checkpoint (nothing staged, or the staging folder lacks
``state.json``) or a complete staged one that ``recover()`` finishes moving. Loading checks that
every file exists, parses, and carries the step that ``state.json`` names, and refuses the
folder otherwise with a message naming the bad file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyllm import atomic, json_files, serialization

__all__ = ["CheckpointError", "RunFolderError", "Checkpoint", "save_checkpoint",
           "load_checkpoint", "recover", "atomic_write_text", "atomic_write_json",
           "flatten_optimizer_state", "unflatten_optimizer_state", "write_failure",
           "check_resumable", "FORMAT", "TOKENIZER_FILE"]

FORMAT = "tinyllm-run-1"
STAGING = ".checkpoint-next"
CKPT_FILES = ("model.safetensors", "optimizer.safetensors", "state.json")
TOKENIZER_FILE = "tokenizer.json"


class CheckpointError(ValueError):
    """A run folder that is missing a file, holds a damaged one, or mixes two checkpoints."""


class RunFolderError(CheckpointError):
    """A run folder that cannot be written: a full disk, a read-only folder, a file in the way.
    The message says which checkpoint is kept and what to run next."""


def write_failure(run_dir, what: str, e: OSError, kept: str, last_step) -> str:
    """The message for an ``OSError`` raised while writing ``what`` into ``run_dir``."""
    reason = e.strerror or str(e)
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    if e.errno == errno.ENOSPC:
        todo = "Free some space, then run"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        todo = "Make the folder writable (or copy it to one that is), then run"
    else:
        todo = "Fix that, then run"
    return (f"cannot write {what} in {run_dir}: {reason}{where}. {kept}. {todo}: tinyllm train "
            f"--resume {run_dir}")


def check_resumable(state: dict, where) -> None:
    """A resume needs the step and both generators' states: refuse a state.json without them."""
    for key, what in (("batch_rng", "the batch generator's state"),
                      ("tinyllm_rng", "the dropout generator's state")):
        if not isinstance(state.get(key), dict):
            raise CheckpointError(
                f"{where} has no {key!r} ({what}), so the run cannot continue exactly where it "
                f"stopped. Restore that file, or start a new run from these weights with --set "
                f"init_from={Path(where).parent} --out NEW_FOLDER")


# ----------------------------------------------------------------------------------- atomic files
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic.write_bytes(path, data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------- optimizer
def flatten_optimizer_state(sd: dict) -> tuple[dict, dict]:
    """``optimizer.state_dict()`` -> (arrays named ``state.<i>.<name>``, JSON-able rest)."""
    arrays, scalars = {}, {}
    for i, s in sd["state"].items():
        for k, v in s.items():
            if hasattr(v, "shape") and np.ndim(v) > 0:
                arrays[f"state.{i}.{k}"] = np.asarray(v)
            else:
                scalars.setdefault(str(i), {})[k] = v.item() if hasattr(v, "item") else v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return arrays, {"scalars": scalars, "param_groups": groups}


def unflatten_optimizer_state(arrays: dict, rest: dict) -> dict:
    state: dict = {}
    for name, arr in arrays.items():
        _, i, k = name.split(".", 2)
        state.setdefault(int(i), {})[k] = arr
    for i, s in rest["scalars"].items():
        state.setdefault(int(i), {}).update(s)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
              for g in rest["param_groups"]]
    return {"state": dict(sorted(state.items())), "param_groups": groups}


# ----------------------------------------------------------------------------------- saving
def save_checkpoint(run_dir, step: int, model_state: dict, optimizer_state: dict, state: dict,
                    model_meta: dict | None = None) -> None:
    """Write the checkpoint of ``step`` into ``run_dir`` (see the module doc for the journal).

    ``model_state``: name -> array; ``optimizer_state``: ``optimizer.state_dict()``;
    ``state``: JSON-able (step, RNG states, best loss, ...); ``model_meta``: strings for the
    weight file's header (model class, config)."""
    run_dir = Path(run_dir)
    stage = run_dir / STAGING
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    meta = {"format": FORMAT, "step": str(step), **(model_meta or {})}
    try:
        serialization.save(model_state, stage / "model.safetensors", metadata=meta)
        arrays, rest = flatten_optimizer_state(optimizer_state)
        serialization.save(arrays, stage / "optimizer.safetensors",
                           metadata={"format": FORMAT, "step": str(step),
                                     "optimizer": json.dumps(rest)})
        atomic_write_json(stage / "state.json", {**state, "format": FORMAT, "step": step})
        _fsync_dir(stage)
    except BaseException:  # a full disk, say: give back the space the half-staged set took
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _commit(run_dir)


def _commit(run_dir: Path) -> None:
    stage = run_dir / STAGING
    for name in CKPT_FILES:  # state.json last: it is what makes the new set the checkpoint
        if (stage / name).exists():
            os.replace(stage / name, run_dir / name)
    _fsync_dir(run_dir)
    shutil.rmtree(stage, ignore_errors=True)


def recover(run_dir) -> str | None:
    """Finish or discard a checkpoint that a killed process left half-saved. Only the process
    that owns the run (a resume) should call this. Returns what was done, or None."""
    run_dir = Path(run_dir)
    stage = run_dir / STAGING
    if not stage.is_dir():
        return None
    if (stage / "state.json").is_file():
        _commit(run_dir)
        return "finished saving a checkpoint that was interrupted while being moved into place"
    shutil.rmtree(stage, ignore_errors=True)
    return "discarded a checkpoint that was interrupted while being written"


# ----------------------------------------------------------------------------------- loading
@dataclass
class Checkpoint:
    run_dir: Path
    step: int
    config: dict
    state: dict
    model: dict
    model_meta: dict
    optimizer: dict | None = None
    tokenizer: object = None
    notes: list = field(default_factory=list)


def damaged(path: Path, e: Exception) -> str:
    """"PATH is damaged: why", without naming the file twice when ``e`` already starts with it."""
    why = str(e)
    for prefix in (f"{path}: ", f"{path} "):
        if why.startswith(prefix):
            why = why[len(prefix):]
    return f"{path} is damaged: {why}"


def read_json(path: Path, what: str):
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run folder has no {what}")
    return json_files.read_json(path, CheckpointError, "is damaged: not valid JSON")


def _read_safetensors(path: Path, step: int):
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint of step {step} is incomplete")
    try:
        meta = serialization.load_metadata(path)
        arrays = serialization.load(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(damaged(path, e)) from None
    if meta.get("step") != str(step):
        raise CheckpointError(f"{path} belongs to step {meta.get('step')!r} but state.json names "
                              f"step {step}: the folder mixes two checkpoints (was it killed "
                              "while saving, or were files copied in by hand?)")
    return arrays, meta


def load_checkpoint(run_dir, optimizer: bool = True, tokenizer: bool = True) -> Checkpoint:
    """Read and check a run folder's checkpoint. Raises ``CheckpointError`` naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a folder: give the run folder that "
                              "`tinyllm train --out` wrote")
    config = read_json(run_dir / "config.json", "config.json (the run's settings)")
    state_path = run_dir / "state.json"
    if not state_path.is_file():
        raise CheckpointError(f"{state_path} is missing: the run folder holds no checkpoint yet "
                              "(the run stopped before its first checkpoint). tinyllm train "
                              f"--resume {run_dir} starts that run again from step 0")
    state = read_json(state_path, "state.json")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{state_path} is damaged: it has no integer 'step'")
    if not isinstance(config, dict):
        raise CheckpointError(f"{run_dir / 'config.json'} is damaged: not a JSON object")
    step = state["step"]
    model, meta = _read_safetensors(run_dir / "model.safetensors", step)
    opt = None
    if optimizer:
        arrays, ometa = _read_safetensors(run_dir / "optimizer.safetensors", step)
        try:
            opt = unflatten_optimizer_state(arrays, json.loads(ometa["optimizer"]))
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{run_dir / 'optimizer.safetensors'} is damaged: its "
                                  f"optimizer metadata cannot be read ({e})") from None
    tok = None
    if tokenizer:
        name = state.get("tokenizer")
        tok = _read_tokenizer(run_dir / (name if isinstance(name, str) else TOKENIZER_FILE),
                              meta, run_dir / "model.safetensors")
    return Checkpoint(run_dir, step, config, state, model, meta, opt, tok)


def _read_tokenizer(path: Path, meta: dict, weights: Path):
    """The run's tokenizer, checked to be the one the weights were trained with."""
    from tinyllm.tokenizers import Tokenizer

    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run folder has no tokenizer")
    try:
        tok = Tokenizer.load(path)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(damaged(path, e)) from None
    want = meta.get("tokenizer_fingerprint")  # absent in folders of older versions
    if want is not None and tok.fingerprint() != want:
        raise CheckpointError(
            f"{path} is not the tokenizer {weights.name} was trained with (fingerprint "
            f"{tok.fingerprint()[:12]}..., the weights name {want[:12]}...): with it the model "
            "would read other ids than it learned. Put back the run's own tokenizer files")
    return tok


def rng_state_to_json(generator: np.random.Generator) -> dict:
    return generator.bit_generator.state


def set_rng_state(generator: np.random.Generator, state: dict, where: str) -> None:
    try:
        generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: the saved random-generator state cannot be restored "
                              f"({e})") from None
