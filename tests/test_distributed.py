"""tinyllm.distributed in a world of one, the simulated world, and the data-parallel step in one
process: gradient accumulation against the one-batch step, ZeRO-1 against plain AdamW; the
collectives on three MPI processes.

The multi-process runs (mpiexec) are in test_distributed_train.py.
"""

import json
import sys
import textwrap

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import distributed as dist
from tinyllm.data import get_batch
from tinyllm.distributed.simulated import DeadlockError, run_world
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.optim import SGD, AdamW, decay_groups
from tinyllm.optim.zero import ZeroRedundancyOptimizer, optimizer_state_bytes
from tinyllm.train.config import ConfigError, TrainConfig
from tinyllm.train.data_parallel import DataParallel, loss_weight
from tinyllm.train.step import train_step

LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_RANK",
                 "SLURM_NTASKS")


# ----------------------------------------------------------------------------- the world
@pytest.fixture
def no_launcher(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env, size", [
    ({}, None), ({"PMI_SIZE": "3"}, 3), ({"OMPI_COMM_WORLD_SIZE": "4"}, 4),
    ({"MV2_COMM_WORLD_SIZE": "2"}, 2), ({"PMIX_RANK": "0", "SLURM_NTASKS": "8"}, 8),
    ({"PMIX_RANK": "1"}, 0), ({"PMI_SIZE": "1"}, 1)])
def test_the_launcher_is_recognised_from_its_environment(no_launcher, env, size):
    for k, v in env.items():
        no_launcher.setenv(k, v)
    assert dist.launcher_world_size() == size


def test_a_launcher_without_mpi4py_is_a_clear_error(no_launcher):
    no_launcher.setenv("PMI_SIZE", "2")
    no_launcher.setattr(dist, "_started", False)
    no_launcher.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    with pytest.raises(dist.DistributedError, match=r"mpi4py is not installed.*tinyllm\[dist\]"):
        dist.init()
    from tinyllm.train.data_parallel import is_writer

    with pytest.raises(ConfigError, match="2 processes"):
        is_writer()


def test_a_world_of_one_never_imports_mpi(no_launcher):
    no_launcher.setattr(dist, "_started", False)
    no_launcher.setitem(sys.modules, "mpi4py", None)
    assert dist.init() == (0, 1) and dist.rank() == 0 and dist.world_size() == 1
    assert not dist.is_distributed() and dist.local_rank() == 0


def test_collectives_in_a_world_of_one(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    keep = x.copy()
    assert dist.all_reduce(x) is x and np.array_equal(x, keep)   # in place, the identity
    assert dist.all_reduce(x, op="mean") is x and np.array_equal(x, keep)
    assert dist.broadcast(x) is x
    g = dist.all_gather(x)
    assert g.shape == (1, 3, 4) and np.array_equal(g[0], keep) and g is not x
    s = dist.reduce_scatter(x)
    assert np.array_equal(s, keep) and s is not x
    dist.barrier()
    assert dist.broadcast_object({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("call, error, words", [
    (lambda: dist.all_reduce(np.ones(3), op="avg"), ValueError, "op must be one of"),
    (lambda: dist.all_reduce(np.ones(3, dtype=np.int64), op="mean"), TypeError, "float"),
    (lambda: dist.all_reduce(np.ones((3, 4))[:, 1]), ValueError, "not C-contiguous"),
    (lambda: dist.all_reduce([1.0, 2.0]), TypeError, "NumPy or CuPy array"),
    (lambda: dist.broadcast(np.ones(2), src=3), ValueError, "src must be a rank"),
])
def test_bad_collective_calls_are_named(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ----------------------------------------------------------------------------- the simulated world
def test_the_simulated_world_reports_a_deadlock_instead_of_hanging():
    def everyone_receives_first(comm):
        buf = np.zeros(2)
        comm.Recv(buf, source=(comm.Get_rank() + 1) % comm.Get_size())

    with pytest.raises(DeadlockError, match="waited"):
        run_world(3, everyone_receives_first, timeout=0.3)


def test_the_simulated_world_reraises_the_failing_ranks_error():
    def rank_one_fails(comm):
        if comm.Get_rank() == 1:
            raise ValueError("rank one is broken")
        comm.Recv(np.zeros(1), source=1)

    with pytest.raises(ValueError, match="rank one is broken"):
        run_world(2, rank_one_fails, timeout=5)


def test_the_simulated_world_copies_messages_and_counts_bytes():
    def fn(comm):
        x = np.arange(4.0) * (comm.Get_rank() + 1)
        got = np.empty(4)
        other = 1 - comm.Get_rank()
        comm.Sendrecv(x, dest=other, recvbuf=got, source=other)
        x[:] = -1  # changing the sent buffer afterwards must not change the message
        return got, comm.bytes_sent

    (g0, b0), (g1, b1) = run_world(2, fn)
    assert np.array_equal(g0, np.arange(4.0) * 2) and np.array_equal(g1, np.arange(4.0))
    assert b0 == b1 == 32


# ----------------------------------------------------------------------------- loss weights
def test_loss_weight_counts_what_each_task_averages(rng):
    class Seq2Seq:
        class tokenizer:
            pad_token_id = 0

    t = rng.integers(0, 9, (4, 5))
    t[0, :2] = -100
    assert loss_weight(None, {"idx": t, "targets": t}) == 18                  # LM: tokens
    assert loss_weight(None, {"input_ids": t, "labels": t}) == 18             # MLM: masked ones
    assert loss_weight(None, {"input_ids": t, "labels": np.arange(4)}) == 4   # classify: rows
    out = np.array([[3, 4, 0, 0], [5, 0, 0, 0]])
    assert loss_weight(Seq2Seq(), {"src": out, "tgt_in": out, "tgt_out": out}) == 3

    class Own:
        def loss_weight(self, inputs):
            return 7

    assert loss_weight(Own(), {"x": t}) == 7


# ----------------------------------------------------------------------------- the step in one process
class _LM:
    """The trainer's LM task on a random token stream (the DataParallel interface)."""

    kind = "lm"

    def __init__(self, cfg, seed, ignore=0.0, optimizer="adamw"):
        tl.manual_seed(seed)
        self.cfg, self.ignore, self.kind_of_optimizer = cfg, ignore, optimizer
        self.model = GPT(GPTConfig(vocab_size=13, block_size=cfg.block_size, n_layer=1,
                                   n_head=2, n_embd=16))
        self.data = np.random.default_rng(seed).integers(0, 13, 500)

    def batch(self, split, rng):
        x, y = get_batch(self.data, self.cfg.batch_size, self.cfg.block_size, rng)
        if self.ignore:  # uneven numbers of ignored targets per row: the weights matter
            y = np.where(rng.random(y.shape) < self.ignore * np.arange(len(y))[:, None] / len(y),
                         -100, y)
        return {"idx": x, "targets": y}, x.size

    def loss(self, inputs):
        return self.model(inputs["idx"], inputs["targets"])[1]

    def optimizer(self):
        if self.kind_of_optimizer == "sgd":
            return SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        return AdamW(decay_groups(self.model.parameters(), 0.1), lr=1e-2, betas=(0.9, 0.99),
                     weight_decay=0.1)


def _plain_run(cfg, seed, steps, ignore=0.0, optimizer="adamw", lr=1e-2):
    task = _LM(cfg, seed, ignore, optimizer)
    opt, rng = task.optimizer(), np.random.default_rng(seed)
    params = [p for g in opt.param_groups for p in g["params"]]
    losses = []
    for _ in range(steps):
        loss = task.loss(task.batch("train", rng)[0])
        losses.append(loss.item())
        train_step(loss, opt, params, lr, cfg.grad_clip)
    return task, opt, losses


def _dp_run(cfg, seed, steps, ignore=0.0, optimizer="adamw", lr=1e-2):
    task = _LM(cfg, seed, ignore, optimizer)
    dp, rng = DataParallel(cfg, task, task.optimizer()), np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        value, ntok = dp.forward_backward(rng, step)
        assert ntok == cfg.batch_size * cfg.block_size
        losses.append(value)
        dp.update(lr)
    return task, dp, losses


def _params(task):
    return {k: v.data.copy() for k, v in task.model.named_parameters()}


@pytest.mark.parametrize("ignore", [0.0, 0.6])
def test_accumulated_gradients_are_the_batch_gradient(rng, ignore):
    """One step's loss and gradients: 4 micro-batches of 3 rows against the batch of 12 (with
    ignored targets spread unevenly over the rows, each micro-batch must weigh its own share)."""
    seed = int(rng.integers(1 << 30))
    ref = _LM(TrainConfig(batch_size=12, block_size=8), seed, ignore)
    loss = ref.loss(ref.batch("train", np.random.default_rng(seed))[0])
    loss.backward()
    cfg = TrainConfig(batch_size=12, block_size=8, grad_accum_steps=4)
    acc = _LM(cfg, seed, ignore)
    dp = DataParallel(cfg, acc, acc.optimizer())
    value, _ = dp.forward_backward(np.random.default_rng(seed), 0)
    assert value == pytest.approx(loss.item(), abs=1e-6), "the accumulated loss"
    for (name, p), q in zip(ref.model.named_parameters(), acc.model.parameters()):
        scale = float(np.abs(p.grad).max())
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-4, atol=1e-6 * scale,
                                   err_msg=f"the gradient of {name}")


def test_four_micro_batches_of_three_give_the_update_of_one_batch_of_twelve(rng):
    """Five SGD steps with momentum and clipping (linear in the gradient, so rounding stays
    rounding; Adam's normalisation is checked in the multi-process tests)."""
    seed = int(rng.integers(1 << 30))
    one = TrainConfig(batch_size=12, block_size=8, grad_clip=0.5)
    four = TrainConfig(batch_size=12, block_size=8, grad_clip=0.5, grad_accum_steps=4)
    ref, _, ref_losses = _plain_run(one, seed, 5, 0.3, "sgd", lr=0.1)
    acc, dp, losses = _dp_run(four, seed, 5, 0.3, "sgd", lr=0.1)
    np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-5, err_msg="the losses")
    want = _params(ref)
    for name, got in _params(acc).items():
        np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name} after 5 accumulated updates")
    assert dp.steps == 5


def test_zero_in_a_world_of_one_is_adamw_exactly(rng):
    """Same gradients (one micro-batch), AdamW on slices of the flat parameters: bit for bit."""
    seed = int(rng.integers(1 << 30))
    plain = TrainConfig(batch_size=6, block_size=8, grad_clip=0.0)
    zero = TrainConfig(batch_size=6, block_size=8, grad_clip=0.0, zero_stage=1)
    ref, ref_opt, _ = _plain_run(plain, seed, 3)
    acc, dp, _ = _dp_run(zero, seed, 3)
    assert isinstance(dp.opt, ZeroRedundancyOptimizer)
    want = _params(ref)
    for name, got in _params(acc).items():
        assert np.array_equal(got, want[name]), f"{name} after 3 ZeRO steps"
    sd, want = dp.opt.state_dict(), ref_opt.state_dict()
    assert sd["param_groups"] == want["param_groups"] and sd["state"].keys() == want["state"].keys()
    for i, s in want["state"].items():
        assert sd["state"][i]["step"] == s["step"] == 3
        for k in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(sd["state"][i][k], s[k]), f"state {i} {k}"
    assert optimizer_state_bytes(dp.opt) == optimizer_state_bytes(ref_opt)


def test_zero_state_dict_round_trip_continues_identically(rng):
    seed = int(rng.integers(1 << 30))
    cfg = TrainConfig(batch_size=4, block_size=8, grad_clip=0.0, zero_stage=1)
    task, dp, _ = _dp_run(cfg, seed, 2)
    saved, weights = dp.opt.state_dict(), _params(task)
    after = []
    for opt in (dp.opt, None):
        if opt is None:  # a fresh ZeRO optimizer, loaded from the saved (unsharded) state
            opt = ZeroRedundancyOptimizer(task.optimizer())
            opt.load_state_dict(saved)
            assert optimizer_state_bytes(opt.optimizer) == 0  # the wrapped one keeps nothing
        for name, p in task.model.named_parameters():
            p.data[...] = weights[name]
        dp.opt = opt
        dp.forward_backward(np.random.default_rng(seed + 1), 2)
        dp.update(1e-2)
        after.append(_params(task))
    for name, want in after[0].items():
        assert np.array_equal(after[1][name], want), f"{name} differs after the reload"


def _to(task, device):
    task.model.to(device)
    return task


def test_the_data_parallel_step_runs_on_the_test_device(rng, device):
    """Accumulation and ZeRO on ``device`` (the strict fake GPU under
    TINYLLM_TEST_DEVICE=fake-cuda: every array op through the backend seam) take the CPU's
    plain steps; the collectives of a world of one keep device arrays on the device."""
    from tinyllm import backend

    x = backend.as_array(rng.standard_normal(6).astype(np.float32), device=device)
    assert dist.all_reduce(x) is x and backend.get_device(dist.all_gather(x)) == device
    assert backend.get_device(dist.reduce_scatter(x)) == device
    seed = int(rng.integers(1 << 30))
    plain = TrainConfig(batch_size=12, block_size=8, grad_clip=0.5)
    ref, _, ref_losses = _plain_run(plain, seed, 3)
    for zero in (0, 1):
        cfg = TrainConfig(batch_size=12, block_size=8, grad_clip=0.5, grad_accum_steps=4,
                          zero_stage=zero)
        task = _to(_LM(cfg, seed), device)
        dp, batches = DataParallel(cfg, task, task.optimizer()), np.random.default_rng(seed)
        losses = []
        for step in range(3):
            losses.append(dp.forward_backward(batches, step)[0])
            dp.update(1e-2)
        np.testing.assert_allclose(losses, ref_losses, atol=1e-5, err_msg=f"zero={zero}")
        want = _params(ref)
        for name, p in task.model.named_parameters():
            assert backend.get_device(p.data) == device, f"{name} left the device"
            # AdamW divides by the gradient's own size: a weight whose gradient is rounding
            # noise moves by up to lr either way, so the weights agree to a share of lr (1e-2)
            # (2e-5 failed about one seed in twenty; 150 seeds stay under 2.3e-4)
            np.testing.assert_allclose(backend.to_device(p.data, "cpu"), want[name], atol=5e-4,
                                       err_msg=f"{name} after 3 steps, zero_stage={zero}")


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="equal micro-batches"):
        TrainConfig(batch_size=12, grad_accum_steps=5).finalize().validate()
    with pytest.raises(ConfigError, match="zero_stage"):
        TrainConfig(zero_stage=2).finalize().validate()
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        TrainConfig(grad_accum_steps=0).finalize().validate()


def test_the_bench_child_times_a_world_of_one():
    from tinyllm.bench.data_parallel import dp_child

    r = dp_child(rows=2, zero=1, rounds=2, quick=True)
    assert r["world"] == 1 and r["step_s"] > 0 and r["comm_s"] >= 0
    assert r["grad_bytes"] > 0 and r["opt_bytes"] == [2 * r["grad_bytes"]]  # two moments


def test_collectives_on_three_mpi_processes(tmp_path):
    """Each collective against the same reduction done by hand from every rank's input."""
    from tinyllm.distributed.launch import mpi_available, run_mpi

    ok, why = mpi_available()
    if not ok:
        pytest.skip(f"needs MPI: {why}")
    script = tmp_path / "collectives.py"
    script.write_text(textwrap.dedent('''
        import json
        import numpy as np
        from tinyllm import distributed as dist
        r, n = dist.init()
        mine = lambda k: np.random.default_rng([k, 7]).standard_normal((6, 2)).astype(np.float32)
        every = np.stack([mine(k) for k in range(n)])     # what each rank holds, known to all
        out = {"rank": r, "size": n, "distributed": dist.is_distributed()}
        x = mine(r)
        out["sum"] = bool(dist.all_reduce(x) is x and np.allclose(x, every.sum(0), atol=1e-6))
        x = mine(r)
        out["mean"] = bool(np.allclose(dist.all_reduce(x, op="mean"), every.mean(0), atol=1e-6))
        out["max"] = bool(np.array_equal(dist.all_reduce(mine(r), op="max"), every.max(0)))
        x = mine(r)
        out["broadcast"] = bool(np.array_equal(dist.broadcast(x, src=2), every[2]))
        out["all_gather"] = bool(np.array_equal(dist.all_gather(mine(r)), every))
        block = dist.reduce_scatter(mine(r))
        out["reduce_scatter"] = bool(np.allclose(block, every.sum(0)[2 * r:2 * r + 2], atol=1e-6))
        out["object"] = dist.broadcast_object({"from": r}) == {"from": 0}
        dist.barrier()
        from mpi4py import MPI
        every = MPI.COMM_WORLD.gather(out)   # rank 0 prints them all: lines never interleave
        if r == 0:
            print(json.dumps(every))
    '''))
    proc = run_mpi(3, [script], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [lines] = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("[")]
    assert sorted(d["rank"] for d in lines) == [0, 1, 2]
    for d in lines:
        wrong = [k for k, v in d.items() if v is False]
        assert not wrong and d["size"] == 3 and d["distributed"], f"rank {d['rank']}: {wrong}"
