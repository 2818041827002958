"""The ``tinyllm`` command end to end in a subprocess: train, then sample, then eval."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_trainer import TINY, write_corpus

REPO = Path(__file__).resolve().parents[1]


def tinyllm(args, cwd, data, timeout=120):
    env = {**os.environ, "TINYLLM_DATA_DIR": str(data),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tinyllm", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def tiny_sets(**extra):
    out = []
    for k, v in {**TINY, **extra}.items():
        out += ["--set", f"{k}={v}"]
    return out


@pytest.mark.slow
def test_train_sample_eval(tmp_path):
    (tmp_path / "data").mkdir()
    write_corpus(tmp_path / "data")
    r = tinyllm(["train", "--preset", "baby-shakespeare", *tiny_sets(), "--max-iters", "6",
                 "--sample-chars", "30", "--out", "run"], tmp_path, tmp_path / "data")
    assert r.returncode == 0, r.stderr
    # not a terminal: plain lines, evaluations, the summary and a sample
    assert "step 0: train loss" in r.stdout and "step 6: train loss" in r.stdout
    assert "done: 6 steps" in r.stdout and "best val loss" in r.stdout
    assert "sample (30 characters" in r.stdout
    assert "\r" not in r.stdout  # no progress bar when stdout is not a terminal

    r = tinyllm(["sample", "--ckpt", "run", "--prompt", "ROMEO:", "--max-new-tokens", "20",
                 "--temperature", "0.8", "--top-k", "5", "--seed", "1",
                 "--num-return-sequences", "2"], tmp_path, tmp_path / "data")
    assert r.returncode == 0, r.stderr
    samples = [b.strip("\n") for b in r.stdout.split("--- sample ")[1:]]
    assert len(samples) == 2 and all(s.split("\n", 1)[1].startswith("ROMEO:") for s in samples)

    r = tinyllm(["sample", "--ckpt", "run", "--prompt", "JULIET:", "--greedy", "--num-beams", "2",
                 "--max-new-tokens", "5"], tmp_path, tmp_path / "data")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("JULIET:") and len(r.stdout.rstrip("\n")) == len("JULIET:") + 5

    r = tinyllm(["sample", "--ckpt", "run", "--top-p", "2"], tmp_path, tmp_path / "data")
    assert r.returncode == 2 and "top_p" in r.stderr and "Traceback" not in r.stderr

    r = tinyllm(["eval", "--ckpt", "run", "--json", "--eval-iters", "2"], tmp_path,
                tmp_path / "data")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["step"] == 6 and result["val_loss"] > 0 and result["train_loss"] > 0


@pytest.mark.slow
def test_errors_exit_2_without_traceback(tmp_path):
    (tmp_path / "data").mkdir()
    for args, words in [(["train", "--preset", "nope"], "unknown preset"),
                        (["train", "--set", "n_layer=two"], "'n_layer' must be an integer"),
                        (["train", "--device", "tpu"], "'device'")]:
        r = tinyllm(args, tmp_path, tmp_path / "data")
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = tinyllm(["train", "--preset", "nope", "--debug"], tmp_path, tmp_path / "data")
    assert "Traceback" in r.stderr and "ConfigError: unknown preset 'nope'" in r.stderr


@pytest.mark.slow
def test_sample_from_a_seq2seq_run_greedy_and_sampled(tmp_path):
    """``tinyllm sample`` on the encoder-decoder: greedy by flag, sampled (seeded) by default."""
    r = tinyllm(["train", "--preset", "digits-reverse", "--max-iters", "3", "--quiet",
                 "--set", "task_args.n_train=200", "--set", "task_args.n_val=20",
                 "--out", "run"], tmp_path, tmp_path)
    assert r.returncode == 0, r.stderr
    runs = {}
    for name, flags in {"greedy": ["--greedy"], "s1": ["--seed", "1", "--temperature", "3"],
                        "s1again": ["--seed", "1", "--temperature", "3"],
                        "s2": ["--seed", "2", "--temperature", "3"],
                        "beams": ["--num-beams", "2"]}.items():
        r = tinyllm(["sample", "--ckpt", "run", "--prompt", "3141592653", "--max-new-tokens", "10",
                     *flags], tmp_path, tmp_path)
        assert r.returncode == 0, r.stderr
        runs[name] = r.stdout
        assert set(r.stdout.strip()) <= set("0123456789"), r.stdout
    assert runs["s1"] == runs["s1again"]
    # three steps of training leave a nearly uniform model: hot samples differ between seeds
    assert runs["s1"] != runs["s2"] or runs["s1"] != runs["greedy"]
