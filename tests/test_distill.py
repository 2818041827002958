"""Distillation beyond the exercises: the loss's arguments, and the ``distill`` task end to end
(``tinyllm train --preset baby-distill --teacher RUN``) on a tiny teacher run folder."""

import json
import shutil

import numpy as np
import pytest
import test_prune
from test_trainer import TINY

import tinyllm as tl
from tinyllm import functional as F
from tinyllm.cli import main
from tinyllm.distill import distillation_loss, student_loss
from tinyllm.tokenizers import Tokenizer

dense_folder, dense_run = test_prune.dense_folder, test_prune.dense_run  # a tiny teacher run


def test_alpha_zero_is_cross_entropy_and_bad_arguments_are_named(rng):
    s = rng.standard_normal((2, 3, 5)).astype(np.float32)
    t = rng.standard_normal((2, 3, 5)).astype(np.float32)
    y = rng.integers(0, 5, (2, 3))
    got = distillation_loss(tl.tensor(s), t, y, temperature=4.0, alpha=0.0).item()
    assert got == pytest.approx(F.cross_entropy(tl.tensor(s), y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="same vocabulary"):
        distillation_loss(tl.tensor(s), t[..., :4], y)
    with pytest.raises(ValueError, match="temperature must be positive"):
        distillation_loss(tl.tensor(s), t, y, temperature=0)
    with pytest.raises(ValueError, match=r"alpha .* \[0, 1\]"):
        distillation_loss(tl.tensor(s), t, y, alpha=1.5)
    with pytest.raises(ValueError, match="targets of shape"):
        distillation_loss(tl.tensor(s), t, y[:, :2])
    x = tl.tensor(s.astype(np.float32), requires_grad=True)
    loss = distillation_loss(x, tl.tensor(t, requires_grad=True), y)
    assert loss.dtype == np.float32
    loss.backward()
    assert x.grad.dtype == np.float32


def _student_sets(**extra):
    sets = {**TINY, "n_embd": "16", "max_iters": "4", **extra}
    return [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


def test_distill_task_trains_a_student_and_evaluates_its_cross_entropy(dense_run, capsys):
    assert main(["train", "--preset", "baby-distill", *_student_sets(), "--teacher", "dense",
                 "--out", "student", "--quiet"]) == 0
    cfg = json.loads((dense_run / "student" / "config.json").read_text())
    assert cfg["task"] == "distill" and cfg["task_args"]["teacher"] == "dense"
    assert cfg["n_layer"] == 1 and cfg["task_args"]["temperature"] == 2.0

    from tinyllm.train.trainer import load_run

    _, task, _ = load_run("student", load_data=True)
    batch, _ = task.batch("train", np.random.default_rng(0))
    from tinyllm import backend

    before = backend.rng().bit_generator.state
    task.optimizer()  # loads the frozen teacher, as training does
    assert backend.rng().bit_generator.state == before  # the student's random stream untouched
    assert all(not p.requires_grad for p in task.teacher.parameters())
    assert not task.teacher.training
    task.model.train()
    want = student_loss(task.model, task.teacher, batch["idx"], batch["targets"], 2.0, 0.5)
    assert task.loss(batch).item() == pytest.approx(want.item(), rel=1e-6)
    task.model.eval()
    with tl.no_grad():
        assert task.loss(batch).item() == pytest.approx(
            task.model(batch["idx"], batch["targets"])[1].item(), rel=1e-6)

    # sample and eval do not need the teacher; resuming (training) does, and says so
    shutil.rmtree(dense_run / "dense")
    capsys.readouterr()
    assert main(["eval", "--ckpt", "student", "--eval-iters", "1"]) == 0
    assert main(["sample", "--ckpt", "student", "--max-new-tokens", "4"]) == 0
    assert main(["train", "--resume", "student", "--max-iters", "5", "--quiet"]) == 2
    assert "dense" in capsys.readouterr().err


def test_distill_refuses_a_teacher_with_another_tokenizer(dense_run, capsys):
    assert main(["train", "--preset", "baby-distill", *_student_sets(), "--out", "a"]) == 2
    assert "needs a teacher run folder" in capsys.readouterr().err
    tok = Tokenizer.load(dense_run / "dense" / "tokenizer.json")
    chars = [tok.decode([i]) for i in range(tok.vocab_size)]
    text = "".join(chars[1:]) * 40 + "~"  # other characters, so other ids
    assert "~" not in chars
    (dense_run / "other.txt").write_text(text, encoding="utf-8")
    assert main(["train", "--preset", "baby-distill", *_student_sets(corpus_path="other.txt"),
                 "--teacher", "dense", "--out", "b"]) == 2
    err = capsys.readouterr().err
    assert "teacher's tokenizer" in err and "dense/tokenizer.json" in err
    assert "is not the student's" in err and err.count("CharTokenizer with") == 2
    assert not (dense_run / "b").exists()  # refused before anything was written


def test_distill_on_two_threads_takes_the_one_thread_steps(dense_run):
    """`--set threads=2` with a teacher: each part runs the teacher under no_grad on its own
    thread (the autograd switch is per thread); the losses are threads=1's to rounding."""
    from tinyllm.train.presets import preset_config
    from tinyllm.train.trainer import train

    sets = {**TINY, "n_embd": "16", "max_iters": "4", "task_args.teacher": "dense"}
    runs = {n: train(preset_config("baby-distill"), overrides={**sets, "threads": str(n)},
                     out=f"student{n}", quiet=True) for n in (1, 2)}
    assert len(runs[2].losses) == 4
    np.testing.assert_allclose(runs[2].losses, runs[1].losses, rtol=0, atol=1e-4,
                               err_msg="threads=2 left the threads=1 trajectory")
