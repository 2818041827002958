"""The training loop in-process on a tiny corpus: run folder, metrics, NaN stop, Ctrl-C."""

import contextlib
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


@contextlib.contextmanager
def own_corpus(root):
    """Inside the block, ``TINYLLM_DATA_DIR`` names ``root / "data"``, which holds a fresh corpus
    (for module-scoped fixtures, which cannot take ``monkeypatch``); yields the MonkeyPatch."""
    (root / "data").mkdir()
    write_corpus(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYLLM_DATA_DIR", str(root / "data"))
        yield mp


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


# --- what a user sees ---------------------------------------------------------------------------
def test_the_training_loss_of_every_logged_step_is_kept_and_drawn(corpus, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda self, f, **kw: drawn.append(self))
    result = run(tmp_path / "r", max_iters=8, log_interval=2)
    log = [json.loads(x) for x in (tmp_path / "r" / "train_loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8]
    assert [r["loss"] for r in log] == [result.losses[i - 1] for i in (2, 4, 6, 8)]
    assert len(result.losses) == 8 and result.task.model is not None
    lines = {ln.get_label(): ln for ln in drawn[-1].axes[0].get_lines()}
    raw = lines["training batch (logged steps)"]
    assert list(raw.get_xdata()) == [2, 4, 6, 8] and raw.get_alpha() < 0.5  # faint points
    assert list(lines["training, smoothed"].get_xdata()) == [2, 4, 6, 8]
    assert list(lines["validation (evaluation)"].get_xdata()) == [0, 4, 8]


def test_smoothing_is_a_debiased_moving_average():
    from tinyllm.train.plots import smoothed

    assert smoothed([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])
    s = 0.2
    m1, m2 = s * 1.0, (1 - s) * s * 1.0 + s * 5.0
    assert smoothed([1.0, 5.0], s) == pytest.approx([1.0, m2 / (1 - (1 - s) ** 2)])
    assert m1 / s == 1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal (POSIX)")
def test_the_progress_bar_shows_on_a_terminal_of_zero_columns():
    import fcntl
    import pty
    import struct
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    pid = os.fork()
    if pid == 0:  # the child writes a progress bar to the terminal, as `tinyllm train` does
        try:
            os.close(master)
            os.environ.pop("COLUMNS", None)
            from tinyllm.train.logging import Progress

            os.dup2(slave, 1)
            sys.stdout = sys.__stdout__ = os.fdopen(1, "w")  # what a terminal session has
            p = Progress(20, 0, "bar", 5)
            for i in range(1, 21):
                p.update(i, 1.0, 1e-3, 10.0)
            p.close()
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    assert b"20/20" in out, out


# --- old run folders keep loading ---------------------------------------------------------------
def test_a_run_folder_of_the_previous_format_still_loads(tmp_path, capsys):
    """fixtures/run_v1 was written by tinyllm before this milestone (tinyllm's own tokenizer
    schema in tokenizer.json, no tokenizer fingerprint, no train_loss.jsonl)."""
    import shutil
    from pathlib import Path

    from tinyllm.cli import main
    from tinyllm.train.trainer import load_run

    old = Path(__file__).parent / "fixtures" / "run_v1" / "run"
    assert "type" in json.loads((old / "tokenizer.json").read_text())
    cfg, task, ck = load_run(old)
    assert ck.step == 4 and task.tokenizer.vocab_size == 65
    assert main(["sample", "--ckpt", str(old), "--prompt", "ROMEO:", "--max-new-tokens", "5",
                 "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    shutil.copytree(old, tmp_path / "run")
    train(resume=tmp_path / "run", overrides={"max_iters": 6}, mode="quiet")  # needs the corpus
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 6


def test_the_weights_record_their_tokenizer(corpus, tmp_path):
    out = tmp_path / "r"
    result = run(out, max_iters=2)
    meta = load_metadata(out / "model.safetensors")
    assert meta["tokenizer_fingerprint"] == result.task.tokenizer.fingerprint()
    assert (out / "tokenizer_config.json").is_file()


# --- the first models are trainer tasks -------------------------------------------------------
@pytest.mark.parametrize("preset, model", [("bigram-shakespeare", "BigramLM"),
                                           ("mlp-shakespeare", "MLPLM")])
def test_bigram_and_mlp_train_as_tasks(corpus, tmp_path, preset, model):
    result = train(preset_config(preset), overrides={
        "max_iters": "30", "eval_interval": "30", "eval_iters": "2", "sample_chars": "20",
        "verify_corpus": "false", "warmup_iters": "3"}, out=tmp_path / "r", mode="quiet")
    assert type(result.task.model).__name__ == model
    assert result.metrics[-1]["val_loss"] < result.metrics[0]["val_loss"]
    assert len(result.samples[0].lstrip("\n")) == 20  # after the newline it starts from
    assert load_metadata(tmp_path / "r" / "model.safetensors")["model_class"] == model
    from tinyllm.train.trainer import load_run

    _, task, _ = load_run(tmp_path / "r")
    assert task.sample("RO", 5, seed=1) == task.sample("RO", 5, seed=1)
    with pytest.raises(ValueError, match="top_p=0.9 is not supported"):
        task.sample("RO", 5, top_p=0.9)


def test_the_trainer_has_one_loop():
    """The demo and the seq2seq helpers run the trainer; no module of theirs steps an optimizer."""
    import inspect

    import tinyllm.demo as demo
    import tinyllm.train.seq2seq as seq2seq

    for mod in (demo, seq2seq):
        src = inspect.getsource(mod)
        assert ".step()" not in src and "backward()" not in src, mod.__name__
