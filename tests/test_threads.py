"""Parts of a batch forward and backward at once on threads (tinyllm.train.threads), the BLAS
thread limit (tinyllm.blas), and the per-thread sinks and generators they rest on."""

import os
import threading

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import autograd, backend, blas
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.train.config import ConfigError, TrainConfig
from tinyllm.train.threads import backward_on_threads


def _gpt(seed, dropout=0.0, n_layer=2, **config):
    tl.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=n_layer, n_head=2, n_embd=16,
                         dropout=dropout, **config))


def _batch(rng, rows=8):
    return rng.integers(0, 13, (rows, 8)), rng.integers(0, 13, (rows, 8))


def _parts(model, x, y, n):
    rows = len(x) // n
    return [lambda i=i: model(x[i * rows:(i + 1) * rows], y[i * rows:(i + 1) * rows])[1] / n
            for i in range(n)]


@pytest.mark.parametrize("n", [2, 4])
def test_parts_on_threads_give_the_batch_gradient(n, rng):
    """The parts' gradients, added in order, are the whole batch's mean-loss gradient (to
    float32 rounding), and the parts' losses add up to the batch's."""
    seed = int(rng.integers(1 << 30))
    x, y = _batch(rng)
    ref = _gpt(seed)
    loss = ref(x, y)[1]
    loss.backward()
    model = _gpt(seed)
    values = backward_on_threads(_parts(model, x, y, n), threads=2)
    assert len(values) == n
    assert sum(values) == pytest.approx(loss.item(), rel=1e-5), "the parts' losses"
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        scale = float(np.abs(p.grad).max())
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-4, atol=1e-6 * scale,
                                   err_msg=f"the gradient of {name} from {n} parts")


def test_threaded_steps_repeat_bit_for_bit_with_dropout(rng):
    """Whichever thread finishes first, the sums and the dropout masks are the same: two runs
    of three AdamW steps from one seed end with equal weights (and dropout did draw masks)."""
    seed = int(rng.integers(1 << 30))
    x, y = _batch(rng)
    runs = []
    for _ in range(2):
        model = _gpt(seed, dropout=0.2)
        opt = tl.optim.AdamW(model.parameters(), lr=1e-2)
        tl.manual_seed(seed + 1)
        for _ in range(3):
            opt.zero_grad()
            backward_on_threads(_parts(model, x, y, 2), threads=2)
            opt.step()
        runs.append({k: v.data.copy() for k, v in model.named_parameters()})
    for name, w in runs[0].items():
        assert np.array_equal(w, runs[1][name]), f"{name} differs between two threaded runs"
    model = _gpt(seed, dropout=0.2)
    model.eval()
    still = model(x, y)[1].item()
    model.train()
    assert model(x, y)[1].item() != still, "dropout drew no masks: the test checks nothing"


def test_a_failing_part_raises_and_no_gradient_lands(rng):
    """An error in any part (on the calling thread or a worker) is raised once every part has
    finished, and no parameter has received a partial gradient."""
    model = _gpt(int(rng.integers(1 << 30)), n_layer=1)
    x, y = _batch(rng)
    ran = []

    def good():
        ran.append(threading.current_thread().name)
        return model(x[:4], y[:4])[1]

    def bad():
        raise ValueError("part 2 broke")

    for parts in ([good, bad], [bad, good]):
        ran.clear()
        with pytest.raises(ValueError, match="part 2 broke"):
            backward_on_threads(parts, threads=2)
        assert ran, "the other part did not run"
        assert all(p.grad is None for p in model.parameters()), "a partial gradient landed"


def test_leaf_gradients_into_a_sink_then_added_in_order(rng):
    x = tl.tensor(rng.standard_normal(5), requires_grad=True)
    sink = {}
    with autograd.leaf_gradients_into(sink):
        (x * x + x).sum().backward()  # x reached twice: the sink sums both
    assert x.grad is None, "inside the sink, .grad must stay untouched"
    ((leaf, g),) = sink.values()
    assert leaf is x
    np.testing.assert_allclose(g, 2 * x.data + 1)
    autograd.add_leaf_gradients(sink)
    np.testing.assert_allclose(x.grad, 2 * x.data + 1, err_msg="added once")
    autograd.add_leaf_gradients(sink, sink, sink)
    np.testing.assert_allclose(x.grad, 4 * (2 * x.data + 1), err_msg="then three more times")
    g = x.grad
    autograd.add_leaf_gradients(sink)
    assert x.grad is g, "a leaf's existing .grad is added into in place"


def test_thread_rng_is_this_threads_own():
    mine = np.random.default_rng(7)
    seen = {}
    with backend.thread_rng(mine):
        t = threading.Thread(target=lambda: seen.setdefault("other", backend.rng()))
        t.start()
        t.join()
        assert backend.rng() is mine
    assert seen["other"] is not mine, "another thread saw this thread's generator"
    assert backend.rng() is not mine, "the generator stayed after the block"


def test_blas_limit_sets_and_restores_the_thread_count():
    before = blas.threads()
    if before is None:
        pytest.skip("no OpenBLAS loaded (NumPy built on another BLAS)")
    with blas.limit(1):
        assert blas.threads() == 1
    assert blas.threads() == before
    with blas.limit(None):
        assert blas.threads() == before
    with pytest.raises(RuntimeError), blas.limit(1):
        raise RuntimeError("inside")
    assert blas.threads() == before, "an error inside the block left the limit on"


@pytest.mark.parametrize("overrides, words", [
    ({"threads": 0}, "positive integer"),
    ({"threads": 5}, "equal micro-batches, grad_accum_steps x threads"),
    ({"threads": 2, "device": "cuda"}, "for the CPU"),
])
def test_threads_that_cannot_work_are_refused_with_the_reason(overrides, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(batch_size=12, **overrides).validate()


@pytest.mark.parametrize("overrides", [{"task": "distill"}, {"task": "dpo"},
                                       {"model_args": {"checkpoint_blocks": True}}])
def test_losses_that_switch_the_graph_off_inside_may_run_on_threads(overrides):
    """The autograd switch is per thread, so a teacher's or a reference model's forward under
    no_grad, and checkpointing's first forward, no longer keep threads at 1."""
    assert TrainConfig(batch_size=12, threads=2, **overrides).validate().threads == 2


def test_the_autograd_switch_is_per_thread():
    """As PyTorch's grad mode: no_grad on one thread leaves another recording, and a thread
    starts with recording on whatever the thread that started it does."""
    entered, leave, seen = threading.Event(), threading.Event(), {}

    def evaluate():
        with tl.no_grad():
            seen["inside"] = tl.is_grad_enabled()
            entered.set()
            leave.wait(10)
        seen["after"] = tl.is_grad_enabled()

    other = threading.Thread(target=evaluate)
    other.start()
    try:
        assert entered.wait(10)
        w = tl.tensor(np.ones(3), requires_grad=True)
        assert tl.is_grad_enabled(), "another thread's no_grad switched this one's recording off"
        assert (w * 2).requires_grad, "an op here while another thread is in no_grad"
    finally:
        leave.set()
        other.join()
    assert seen == {"inside": False, "after": True}
    started = []
    with tl.no_grad():
        t = threading.Thread(target=lambda: started.append(tl.is_grad_enabled()))
        t.start()
        t.join()
        assert not tl.is_grad_enabled()
    assert started == [True], "a new thread should start with recording on"


def _teacher_parts(model, teacher, x, y, n):
    """Parts whose loss runs a frozen teacher under no_grad first (as the distill task does)."""
    rows = len(x) // n

    def part(i):
        xi, yi = x[i * rows:(i + 1) * rows], y[i * rows:(i + 1) * rows]
        with tl.no_grad():
            soft = teacher(xi)[0]
        assert not soft.requires_grad and tl.is_grad_enabled()
        logits, loss = model(xi, yi)
        return (loss + ((logits - soft) ** 2).mean()) / n
    return [lambda i=i: part(i) for i in range(n)]


@pytest.mark.parametrize("kind", ["teacher", "checkpoint"])
def test_parts_that_switch_the_graph_off_inside_give_the_batch_gradient(kind, rng):
    """Parts on 2 threads whose losses use no_grad inside (a teacher's forward) or checkpoint
    every block (the recomputation's inputs read their gradients back while a sink collects
    the parameters'): the gradients of the plain one-thread loop over the same parts."""
    seed = int(rng.integers(1 << 30))
    x, y = _batch(rng)

    def build():
        if kind == "checkpoint":
            return _gpt(seed, checkpoint_blocks=True), None
        model = _gpt(seed)
        teacher = _gpt(seed + 1)
        for p in teacher.parameters():
            p.requires_grad = False
        return model, teacher

    grads = {}
    for threads in (1, 2):
        model, teacher = build()
        parts = (_parts(model, x, y, 2) if teacher is None
                 else _teacher_parts(model, teacher, x, y, 2))
        values = backward_on_threads(parts, threads=threads)
        missing = [name for name, p in model.named_parameters() if p.grad is None]
        assert not missing, f"threads={threads}: no gradient for {missing}"
        grads[threads] = (values, {name: p.grad for name, p in model.named_parameters()})
    assert grads[2][0] == pytest.approx(grads[1][0], rel=1e-6), "the parts' losses"
    for name, g in grads[1][1].items():
        np.testing.assert_allclose(grads[2][1][name], g, rtol=1e-5,
                                   atol=1e-6 * float(np.abs(g).max()),
                                   err_msg=f"{kind}: the gradient of {name} on 2 threads")


@pytest.mark.skipif(not os.path.exists(os.path.join(os.environ.get("TINYLLM_DATA_DIR", ""),
                                                    "tinyshakespeare.txt")),
                    reason="needs Tiny Shakespeare in TINYLLM_DATA_DIR")
def test_the_trainer_with_threads_takes_the_one_thread_steps(tmp_path):
    """`tinyllm train --set threads=2`: the same per-step losses as threads=1 (float32
    rounding apart) over 30 AdamW steps with clipping, and a resume keeps going."""
    from tinyllm.train.presets import preset_config
    from tinyllm.train.trainer import train

    tiny = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "max_iters": 30,
            "eval_interval": 30, "eval_iters": 2, "sample_chars": 0, "warmup_iters": 5}
    runs = {n: train(preset_config("baby-shakespeare"), overrides={**tiny, "threads": n},
                     out=tmp_path / f"t{n}", quiet=True) for n in (1, 2)}
    np.testing.assert_allclose(runs[2].losses, runs[1].losses, rtol=0, atol=1e-4,
                               err_msg="threads=2 left the threads=1 trajectory")
    more = train(resume=tmp_path / "t2", overrides={"max_iters": 35}, quiet=True)
    assert more.step == 35 and len(more.losses) == 5
