"""Training on several processes: ``mpiexec -n 2`` with batch 6 each takes the steps of one
process with batch 12 (per-step losses within 1e-5 for 50 steps, checkpoints within 1e-5),
ZeRO-1 and gradient accumulation compose with it, every rank resumes from rank 0's folder, and a
rank that fails (before the first collective, or while another waits in one) stops the run.
A tiny GPT on Tiny Shakespeare, so each run takes a second; the 2 processes share the 2 cores
with everything else (MPICH oversubscribes without complaint).

Skips without mpi4py and mpiexec (``pip install mpi4py mpich``) or without the corpus.
"""

import json
import textwrap

import numpy as np
import pytest
from helpers import require_tiny_shakespeare

from tinyllm.distributed.launch import mpi_available, run_mpi

STEPS = 50
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "max_iters": STEPS,
        "eval_interval": 50, "eval_iters": 2, "sample_chars": 0, "warmup_iters": 10,
        "weight_decay": 0.1, "grad_clip": 1.0}   # nanoGPT's decay and clipping, exercised

# Runs train() on every rank and prints rank 0's per-step losses (the trainer shows them to its
# progress display, which this wraps), then ZeRO's optimizer memory on each rank.
SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tinyllm.train.trainer as T
    from tinyllm import distributed as dist
    from tinyllm.train.presets import preset_config

    losses = []

    class Recording(T.Progress):
        def update(self, step, loss, lr, tokens_per_s):
            losses.append(loss)
            super().update(step, loss, lr, tokens_per_s)

    T.Progress = Recording
    for out, overrides in json.loads(sys.argv[1]):
        losses.clear()
        T.train(preset_config("baby-shakespeare"), overrides=overrides, out=out, quiet=True)
        if dist.rank() == 0:
            print(json.dumps({"out": out, "losses": losses}), flush=True)
    if len(sys.argv) > 2:   # ZeRO's share of AdamW's state on each rank
        import tinyllm as tl
        from tinyllm.models.gpt import GPT, GPTConfig
        from tinyllm.optim.zero import ZeroRedundancyOptimizer, optimizer_state_bytes
        tl.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32))
        opt = ZeroRedundancyOptimizer(model.configure_optimizers(0.1, 1e-3, (0.9, 0.99)))
        x = np.random.default_rng(0).integers(0, 65, (4, 16))
        model(x, x)[1].backward()
        opt.step()
        held = dist.all_gather(np.array([optimizer_state_bytes(opt)]))  # rank 0 prints
        if dist.rank() == 0:
            print(json.dumps({"zero_bytes": held.reshape(-1).tolist(),
                              "params": sum(p.size for p in model.parameters())}), flush=True)
''')


@pytest.fixture(scope="module")
def ready():
    ok, why = mpi_available()
    if not ok:
        pytest.skip(f"data-parallel runs need MPI: {why}")
    require_tiny_shakespeare()


def _lines(stdout):
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


def _launch(n, tmp, runs, memory=False, timeout=240):
    script = tmp / "runs.py"
    script.write_text(SCRIPT)
    proc = run_mpi(n, [script, json.dumps(runs)] + (["memory"] if memory else []),
                   timeout=timeout)
    assert proc.returncode == 0, f"mpiexec -n {n} failed:\n{proc.stderr[-4000:]}"
    return _lines(proc.stdout)


def _one_process_run(tmp_path_factory, **sets):
    """One process, batch 12 (run here, recording the per-step losses)."""
    import tinyllm.train.trainer as T
    from tinyllm.train.presets import preset_config

    losses, out = [], tmp_path_factory.mktemp("one") / "run"

    class Recording(T.Progress):
        def update(self, step, loss, lr, tokens_per_s):
            losses.append(loss)
            super().update(step, loss, lr, tokens_per_s)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "Progress", Recording)
        T.train(preset_config("baby-shakespeare"), overrides={**TINY, "batch_size": 12, **sets},
                out=out, quiet=True)
    return {"out": out, "losses": losses}


@pytest.fixture(scope="module")
def one_process(ready, tmp_path_factory):
    """The reference: one process, batch 12."""
    return _one_process_run(tmp_path_factory)


@pytest.fixture(scope="module")
def one_process_float16(ready, tmp_path_factory):
    """The reference of the float16 runs: one process, batch 12, the plain scaled step."""
    return _one_process_run(tmp_path_factory, precision="float16")


@pytest.fixture(scope="module")
def two_processes(ready, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    runs = [(str(tmp / "dp"), {**TINY, "batch_size": 6}),
            (str(tmp / "zero"), {**TINY, "batch_size": 6, "zero_stage": 1,
                                 "grad_accum_steps": 2}),
            (str(tmp / "fp16"), {**TINY, "batch_size": 6, "precision": "float16"}),
            (str(tmp / "fp16-zero"), {**TINY, "batch_size": 6, "precision": "float16",
                                      "zero_stage": 1, "grad_accum_steps": 2})]
    lines = _launch(2, tmp, runs, memory=True)
    return {"runs": {d["out"]: d for d in lines if "out" in d}, "tmp": tmp,
            "memory": [d for d in lines if "zero_bytes" in d]}


def _assert_same_checkpoint(got_dir, want_dir, tol=1e-5):
    from tinyllm.train.checkpoint import load_checkpoint

    got, want = load_checkpoint(got_dir), load_checkpoint(want_dir)
    assert got.step == want.step
    for name, w in want.model.items():
        diff = float(np.abs(got.model[name] - w).max())
        assert diff <= tol, f"{got_dir}: weight {name} differs from one process's by {diff}"
    assert got.optimizer["param_groups"] == want.optimizer["param_groups"]
    for i, s in want.optimizer["state"].items():
        assert got.optimizer["state"][i]["step"] == s["step"]
        for k in ("exp_avg", "exp_avg_sq"):
            diff = float(np.abs(got.optimizer["state"][i][k] - s[k]).max())
            assert diff <= tol, f"{got_dir}: optimizer state {i}.{k} differs by {diff}"
    assert got.state["batch_rng"] == want.state["batch_rng"]
    assert got.state["tokens_seen"] == want.state["tokens_seen"]
    got_m, want_m = _metrics(got_dir), _metrics(want_dir)  # a resumed run evaluated more often
    assert set(want_m) <= set(got_m) and STEPS in want_m
    for step, b in want_m.items():
        a = got_m[step]
        for k in ("train_loss", "val_loss"):
            assert abs(a[k] - b[k]) <= tol, f"{got_dir}: {k} at step {step}: {a[k]} vs {b[k]}"


def _metrics(run_dir) -> dict:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records}


def _assert_same_losses(got, want, tol=1e-5):
    assert len(got) == len(want) == STEPS
    diff = np.abs(np.array(got) - np.array(want))
    assert diff.max() <= tol, (f"per-step losses differ from one process's by up to "
                                f"{diff.max():.2e} (first at step {int(diff.argmax()) + 1})")


def test_two_processes_of_batch_6_take_the_steps_of_one_of_batch_12(one_process, two_processes):
    run = two_processes["runs"][str(two_processes["tmp"] / "dp")]
    _assert_same_losses(run["losses"], one_process["losses"])
    _assert_same_checkpoint(two_processes["tmp"] / "dp", one_process["out"])
    state = json.loads((two_processes["tmp"] / "dp" / "state.json").read_text())
    assert state["world_size"] == 2


def test_zero_and_accumulation_compose_with_data_parallelism(one_process, two_processes):
    """2 processes x 2 micro-batches of 3 rows, AdamW sharded: still one process's steps, and
    the checkpoint holds the whole (gathered) optimizer state."""
    run = two_processes["runs"][str(two_processes["tmp"] / "zero")]
    _assert_same_losses(run["losses"], one_process["losses"])
    _assert_same_checkpoint(two_processes["tmp"] / "zero", one_process["out"])


@pytest.mark.parametrize("name", ["fp16", "fp16-zero"])
def test_float16_loss_scaling_on_two_ranks_takes_the_one_process_steps(
        one_process_float16, two_processes, name):
    """float16 with its loss scaler on 2 ranks (and with ZeRO and 2 micro-batches): each part's
    scaled loss, the summed gradients unscaled on every rank alike: one process's scaled steps
    and the same scaler state. To float16's rounding (its epsilon is 2^-10): a float32
    difference in a sum's order moves an activation to the next float16 value now and then, and
    over 50 steps the losses drift apart by up to 5e-5. (The weights are not compared: AdamW's
    m / sqrt(v) turns the rounding in the key bias's gradient, 0 in exact arithmetic, into
    steps of up to lr either way.)"""
    got_dir, want_dir = two_processes["tmp"] / name, one_process_float16["out"]
    run = two_processes["runs"][str(got_dir)]
    _assert_same_losses(run["losses"], one_process_float16["losses"], tol=2**-10)
    got, want = (json.loads((d / "state.json").read_text()) for d in (got_dir, want_dir))
    assert got["loss_scaler"] == want["loss_scaler"] and got["loss_scaler"]["good_steps"] == STEPS
    assert got["batch_rng"] == want["batch_rng"] and got["tokens_seen"] == want["tokens_seen"]
    for k in ("train_loss", "val_loss"):
        a, b = _metrics(got_dir)[STEPS][k], _metrics(want_dir)[STEPS][k]
        assert abs(a - b) <= 2**-10, f"{name}: {k} at step {STEPS}: {a} vs {b}"


def test_zero_keeps_half_of_adams_state_on_each_of_two_ranks(two_processes):
    [mem] = two_processes["memory"]
    p, held = mem["params"], mem["zero_bytes"]
    full = 2 * 4 * p  # two float32 moments per parameter
    assert len(held) == 2 and sum(held) == full, held
    for r, nbytes in enumerate(held):
        assert nbytes <= 8 * -(-p // 2), (
            f"rank {r} keeps {nbytes} bytes of optimizer state; its share of {full} is at "
            f"most {8 * -(-p // 2)}")


def test_the_command_line_run_resumes_on_every_rank(one_process, tmp_path):
    """``mpiexec -n 2 tinyllm train`` for 25 steps, then ``--resume`` to 50: one process's
    checkpoint; rank 0 alone prints; one process may not resume a two-process run."""
    out = tmp_path / "cli"
    sets = [a for k, v in {**TINY, "batch_size": 6, "lr_decay_iters": STEPS}.items()
            for a in ("--set", f"{k}={v}")]
    first = run_mpi(2, ["-m", "tinyllm", "train", "--preset", "baby-shakespeare", *sets,
                        "--max-iters", "25", "--out", out], timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("done: 25 steps") == 1, first.stdout  # rank 0 alone prints
    assert "data parallel: 2 process(es) x 6 rows = 12 rows a step" in first.stdout
    from tinyllm.train.config import ConfigError
    from tinyllm.train.trainer import train

    with pytest.raises(ConfigError, match=r"trained by 2 process\(es\).*mpiexec -n 2"):
        train(resume=out, overrides={"max_iters": STEPS}, quiet=True)
    second = run_mpi(2, ["-m", "tinyllm", "train", "--resume", out, "--max-iters", str(STEPS)],
                     timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    _assert_same_checkpoint(out, one_process["out"])


def test_a_failing_rank_stops_every_rank_with_its_message(ready, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(f'''
        import sys
        from tinyllm import distributed as dist
        from tinyllm.cli import main
        layers = "0" if dist.rank() == 1 else "1"   # rank 1 alone has a bad setting
        sys.exit(main(["train", "--preset", "baby-shakespeare", "--set", f"n_layer={{layers}}",
                       "--max-iters", "5", "--out", {str(tmp_path / "run")!r}]))
    '''))
    proc = run_mpi(2, [script], timeout=120)  # a hang would end in TimeoutExpired
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "tinyllm: error on rank 1 of 2: config key 'n_layer'" in proc.stderr
    assert "stopping all 2 processes" in proc.stderr


def test_a_rank_that_fails_mid_run_stops_the_rank_waiting_in_the_all_reduce(ready, tmp_path):
    """Rank 1 fails in its fourth step, while rank 0 already waits in that step's all-reduce:
    without the abort rank 0 would wait forever."""
    script = tmp_path / "fail_later.py"
    script.write_text(textwrap.dedent(f'''
        import sys
        from tinyllm import distributed as dist
        from tinyllm.cli import main
        from tinyllm.train.data_parallel import DataParallel
        real = DataParallel.forward_backward

        def failing(self, *args):
            if dist.rank() == 1 and self.steps == 3:
                raise RuntimeError("rank 1 ran out of luck")
            return real(self, *args)

        DataParallel.forward_backward = failing
        sets = ["--set", "n_layer=1", "--set", "n_embd=32", "--set", "block_size=16",
                "--set", "batch_size=6", "--set", "eval_iters=1"]
        sys.exit(main(["train", "--preset", "baby-shakespeare", *sets, "--max-iters", "10",
                       "--out", {str(tmp_path / "run")!r}]))
    '''))
    proc = run_mpi(2, [script], timeout=120)  # a hang would end in TimeoutExpired
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "tinyllm: error on rank 1 of 2: rank 1 ran out of luck" in proc.stderr
    assert "stopping all 2 processes" in proc.stderr
