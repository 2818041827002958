"""The training loop in-process on a tiny corpus: run folder, metrics, NaN stop, Ctrl-C."""

import json
import math
import os
import signal

import numpy as np
import pytest

from tinyllm.serialization import load, load_metadata
from tinyllm.train import checkpoint as ckpt
from tinyllm.train.presets import preset_config
from tinyllm.train.trainer import TrainingDiverged, TrainingInterrupted, train

LINES = ["ROMEO: But soft, what light through yonder window breaks?",
         "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
         "HAMLET: To be, or not to be, that is the question.",
         "MACBETH: Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace."]

TINY = {"n_layer": "1", "n_embd": "32", "n_head": "2", "block_size": "16", "batch_size": "4",
        "eval_iters": "2", "eval_interval": "4", "log_interval": "2", "sample_chars": "0",
        "warmup_iters": "2", "max_iters": "8", "verify_corpus": "false"}  # a corpus of its own


def write_corpus(folder, n=300, seed=0):
    rng = np.random.default_rng(seed)
    text = "\n".join(LINES[i] for i in rng.integers(0, len(LINES), size=n)) + "\n"
    (folder / "tinyshakespeare.txt").write_text(text, encoding="utf-8")


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    write_corpus(data)
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(data))
    return data


def run(out, **overrides):
    sets = {**TINY, **{k: str(v) for k, v in overrides.items()}}
    return train(preset_config("baby-shakespeare"), overrides=sets, out=out, mode="quiet")


@pytest.mark.slow
def test_run_folder_and_metrics(corpus, tmp_path):
    out = tmp_path / "run"
    result = run(out, dropout=0.1)
    for name in ("config.json", "tokenizer.json", "model.safetensors", "optimizer.safetensors",
                 "state.json", "metrics.jsonl", "loss.png"):
        assert (out / name).is_file(), name
    assert not (out / ckpt.STAGING).exists()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 4, 8]
    for r in records:
        assert {"step", "train_loss", "val_loss", "lr", "elapsed_s"} <= set(r)
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 8 and state["best_val_loss"] == min(r["val_loss"] for r in records)
    assert state["batch_rng"]["bit_generator"] == "PCG64"
    assert state["tinyllm_rng"]["bit_generator"] == "PCG64"
    assert load_metadata(out / "model.safetensors")["step"] == "8"
    assert load_metadata(out / "optimizer.safetensors")["step"] == "8"
    opt = load(out / "optimizer.safetensors")
    assert "state.0.exp_avg" in opt and "state.0.exp_avg_sq" in opt
    assert result.step == 8 and result.best_val_loss == state["best_val_loss"]
    assert json.loads((out / "config.json").read_text())["lr_decay_iters"] == 8


@pytest.mark.slow
def test_resume_in_process_is_bit_exact(corpus, tmp_path):
    run(tmp_path / "a", dropout=0.1)
    run(tmp_path / "b", dropout=0.1, max_iters=8, ckpt_interval=3)
    # pretend the run died after its step-6 checkpoint: rebuild that checkpoint by resuming a
    # copy that stopped at 3 (max_iters may grow on resume; the schedule stays in config.json)
    run(tmp_path / "c", dropout=0.1, ckpt_interval=3, max_iters=3, lr_decay_iters=8)
    train(resume=tmp_path / "c", overrides={"max_iters": 8}, mode="quiet")
    a, c = load(tmp_path / "a" / "model.safetensors"), load(tmp_path / "c" / "model.safetensors")
    assert a.keys() == c.keys()
    for k in a:
        assert a[k].tobytes() == c[k].tobytes(), k
    steps = [json.loads(x)["step"] for x in (tmp_path / "c" / "metrics.jsonl").read_text()
             .splitlines()]
    assert steps == [0, 3, 4, 8]


def test_resume_refuses_changes_that_alter_the_run(corpus, tmp_path):
    from tinyllm.train.config import ConfigError

    run(tmp_path / "a", max_iters=2)
    with pytest.raises(ConfigError, match="cannot change lr"):
        train(resume=tmp_path / "a", overrides={"lr": "1e-2"}, mode="quiet")


def test_a_new_run_refuses_an_existing_run_folder(corpus, tmp_path):
    from tinyllm.train.config import ConfigError

    run(tmp_path / "a", max_iters=2)
    with pytest.raises(ConfigError, match="--resume"):
        run(tmp_path / "a", max_iters=2)


def test_nan_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as e:
        run(out, lr=1e9, warmup_iters=0, grad_clip=0, ckpt_interval=1, max_iters=20)
    msg = str(e.value)
    state = json.loads((out / "state.json").read_text())
    assert f"at step {state['step'] + 1}" in msg and "last finite loss was" in msg
    assert f"checkpoint (step {state['step']})" in msg
    weights = load(out / "model.safetensors")
    assert all(np.isfinite(w).all() for w in weights.values())
    assert load_metadata(out / "model.safetensors")["step"] == str(state["step"])
    ckpt.load_checkpoint(out)  # consistent


def test_ctrl_c_saves_a_checkpoint_then_stops(corpus, tmp_path, monkeypatch):
    from tinyllm.train import tasks

    calls = {"n": 0}
    original = tasks.LMTask.batch

    def batch(self, split, rng):
        if split == "train":
            calls["n"] += 1
            # calls 1-2: the step-0 evaluation; call 3: the first update. The handler only
            # sets a flag, so the update finishes and the checkpoint holds step 1.
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, split, rng)

    monkeypatch.setattr(tasks.LMTask, "batch", batch)
    out = tmp_path / "int"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run(out, ckpt_interval=100)
    assert json.loads((out / "state.json").read_text())["step"] == 1
    ckpt.load_checkpoint(out)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
