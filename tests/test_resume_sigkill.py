"""A run killed with SIGKILL at an arbitrary step and resumed ends with the very same bits as
a run that was never interrupted (batches, dropout masks, AdamW moments, the schedule)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli import REPO, tiny_sets
from test_trainer import write_corpus

from tinyllm.serialization import load

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

MAX_ITERS = 80


def start(args, cwd, data):
    env = {**os.environ, "TINYLLM_DATA_DIR": str(data),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "tinyllm", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint_step(run):
    try:
        return json.loads((run / "state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_exact(tmp_path):
    (tmp_path / "data").mkdir()
    write_corpus(tmp_path / "data")
    sets = tiny_sets(max_iters=MAX_ITERS, dropout=0.1, ckpt_interval=3, eval_interval=10)
    common = ["train", "--preset", "baby-shakespeare", *sets, "--quiet"]
    full = start([*common, "--out", "full"], tmp_path, tmp_path / "data")
    victim = start([*common, "--out", "killed"], tmp_path, tmp_path / "data")

    deadline = time.monotonic() + 120
    while (checkpoint_step(tmp_path / "killed") or 0) < 6:  # a checkpoint, and moving on
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline, "the run never reached its second checkpoint"
        time.sleep(0.005)
    time.sleep(random.uniform(0.0, 0.05))  # somewhere inside a step, or inside a save
    assert victim.poll() is None, "the run finished before it could be killed: raise MAX_ITERS"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(tmp_path / "killed")
    assert killed_at is not None and killed_at < MAX_ITERS

    resumed = start(["train", "--resume", "killed", "--quiet"], tmp_path, tmp_path / "data")
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    out, err = full.communicate(timeout=180)
    assert full.returncode == 0, err

    a = load(tmp_path / "full" / "model.safetensors")
    b = load(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k].view(np.uint32),
                                                           b[k].view(np.uint32)), k
    oa = load(tmp_path / "full" / "optimizer.safetensors")
    ob = load(tmp_path / "killed" / "optimizer.safetensors")
    assert all(oa[k].tobytes() == ob[k].tobytes() for k in oa)
    sa = json.loads((tmp_path / "full" / "state.json").read_text())
    sb = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert sa["step"] == sb["step"] == MAX_ITERS
    assert sa["batch_rng"] == sb["batch_rng"] and sa["tinyllm_rng"] == sb["tinyllm_rng"]
    ma = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val_loss"]) for r in ma] == [(r["step"], r["val_loss"]) for r in mb]
