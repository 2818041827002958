"""The benchmark suite's correctness (never its timings): the hand-written NumPy reference and the
PyTorch reference compute what tinyllm computes, and ``tinyllm.bench.main`` runs end to end."""

import json

import numpy as np
import pytest
from helpers import require_tiny_shakespeare

import tinyllm as tl
from tinyllm.bench.numpy_gpt import NumpyGPT, NumpyMLP
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.optim import clip_grad_norm_


def _tiny_gpt(seed, activation="gelu_tanh"):
    tl.manual_seed(seed)
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16,
                    activation=activation)
    model = GPT(cfg)
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    return cfg, model, state


def _close(a, b, rtol=2e-4):
    scale = max(float(np.abs(b).max()), 1e-6)
    assert float(np.abs(a - b).max()) <= rtol * scale


def test_numpy_gpt_matches_tinyllm_loss_and_gradients(rng):
    cfg, model, state = _tiny_gpt(int(rng.integers(1 << 30)))
    ref = NumpyGPT.from_config(cfg)
    ref.load_state(state)
    t = int(rng.integers(1, 9))  # shorter than block_size too
    x, y = rng.integers(0, 11, (3, t)), rng.integers(0, 11, (3, t))
    _, loss = model(x, y)
    loss.backward()
    ref_loss = ref.loss_and_grads(x, y)
    assert abs(ref_loss - loss.item()) < 1e-5 * max(1.0, abs(loss.item()))
    for name, p in model.named_parameters():
        assert ref.grads[name].dtype == np.float32
        _close(ref.grads[name], p.grad)


def test_numpy_gpt_optimizer_step_matches_tinyllm_adamw(rng):
    cfg, model, state = _tiny_gpt(int(rng.integers(1 << 30)))
    ref = NumpyGPT.from_config(cfg, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=0.5)
    ref.load_state(state)
    opt = model.configure_optimizers(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99))
    params = list(model.parameters())
    for _ in range(3):
        x, y = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))
        opt.zero_grad()
        model(x, y)[1].backward()
        norm = clip_grad_norm_(params, 0.5)
        ref.loss_and_grads(x, y)
        assert abs(ref.opt.clip() - norm) < 1e-4 * norm
        opt.step()
        ref.opt.step()
    for name, p in model.named_parameters():
        assert ref.params[name].dtype == np.float32
        np.testing.assert_allclose(ref.params[name], p.data, atol=2e-5)


def test_numpy_gpt_refuses_exact_gelu():
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    with pytest.raises(ValueError, match="gelu_tanh"):
        NumpyGPT.from_config(cfg)


def test_numpy_mlp_matches_tinyllm(rng):
    from tinyllm.bench.suites import make_mlp

    sizes = (12, 20, 16, 5)
    model, state, (x, y), _ = make_mlp(sizes, 7, seed=int(rng.integers(1 << 30)))
    ref = NumpyMLP(sizes)
    ref.load_state(state)
    loss = tl.functional.cross_entropy(model(tl.tensor(x)), tl.tensor(y))
    loss.backward()
    assert abs(ref.loss_and_grads(x, y) - loss.item()) < 1e-5
    for name, p in model.named_parameters():
        _close(ref.grads[name], p.grad)


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])  # the bench's, the presets'
def test_torch_reference_matches_tinyllm(rng, activation):
    torch = pytest.importorskip("torch")
    from tinyllm.bench.torch_ref import TorchGPT, torch_state

    cfg, model, state = _tiny_gpt(int(rng.integers(1 << 30)), activation)
    tm = TorchGPT.from_config(cfg)
    tm.load_state_dict(torch_state(state))
    x, y = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    _, loss = model(x, y)
    loss.backward()
    _, tloss = tm(torch.tensor(x), torch.tensor(y))
    tloss.backward()
    assert abs(tloss.item() - loss.item()) < 1e-5
    grads = dict(tm.named_parameters())
    for name, p in model.named_parameters():
        _close(grads[name].grad.numpy(), p.grad)


def test_torch_twin_of_baby_shakespeare_runs(capsys):
    """The quality comparison's PyTorch run, a few steps: it trains and reports both estimates."""
    pytest.importorskip("torch")
    require_tiny_shakespeare()
    from tinyllm.bench.torch_baby import main

    assert main(["--seed", "3", "--max-iters", "40", "--eval-iters", "2", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["seed"] == 3 and out["steps"] == 40
    # from log(65) = 4.17 at N(0, 0.02) weights, 40 warm-up steps must already have learnt the
    # character frequencies (a twin whose updates vanish, e.g. clipped to norm 0, stays at 4.17)
    assert 2.5 < out["val_loss_20"] < 3.8 and 2.5 < out["val_loss_2"] < 3.8


def test_gpt_flops_estimate_for_the_baby_config():
    from tinyllm.bench.suites import BABY, gpt_flops

    # nanoGPT: N = 801,664 parameters without wpe; (6N + 12*4*4*32*64) * 64 * 12
    assert gpt_flops(BABY) == (6 * 801_664 + 12 * 4 * 4 * 32 * 64) * 64 * 12


def test_bench_main_quick_writes_a_table(tmp_path, capsys):
    from tinyllm.bench import main

    out = tmp_path / "bench.md"
    assert main(["--quick", "--suite", "gpt,mlp,generate,matmul", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| tinyllm |" in text and "numpy by hand" in text and "## Machine" in text
    assert "same tokens" in text and "| yes |" in text
    assert "GPT training step" in capsys.readouterr().out


def test_bench_main_rejects_unknown_suites(capsys):
    from tinyllm.bench import main

    assert main(["--suite", "nope", "--no-write"]) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_dezero_gpt_matches_tinyllm_loss_at_init(rng):
    dz = pytest.importorskip("tinyllm.bench.dezero_gpt")  # skips without DeZero

    cfg, model, state = _tiny_gpt(int(rng.integers(1 << 30)))
    ref = dz.DezeroGPT.from_config(cfg)
    ref.load_state(state)
    x, y = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    _, loss = model(x, y)
    dloss = ref(x, y)
    assert dloss.data.dtype == np.float32  # the forward stays float32 on float32 weights
    assert abs(float(dloss.data) - loss.item()) < 1e-5 * max(1.0, abs(loss.item()))
    # and DeZero's autograd gives tinyllm's gradients (its backward runs in float64)
    loss.backward()
    ref.cleargrads()
    dloss.backward()
    named = ref.named_params()
    for name, p in model.named_parameters():
        param, transposed = named[name]
        _close(param.grad.data.T if transposed else param.grad.data, p.grad)


def test_the_fast_paths_suite_times_each_fast_path_off():
    from tinyllm.bench.fast_paths import functions_with_fast_paths, suite_fast_paths
    from tinyllm.bench.suites import Options

    names = {c.__name__ for c in functions_with_fast_paths()}
    assert {"ScaledDotProductAttention", "GELU", "LayerNorm"} <= names
    tanh, exact = suite_fast_paths(Options(rounds=1, warmup=0, quick=True))
    for table in (tanh, exact):
        rows = [r[0] for r in table.rows]
        assert rows[:2] == ["all fast paths on", "all off (plain forms)"]
        assert {f"{n} off" for n in names} | {"Adam's update plain"} <= set(rows)
    assert "tanh" in tanh.title and "exact" in exact.title
    assert [r[0] for r in tanh.rows][-1] == "numpy by hand", "the NumPy step (tanh GELU only)"


def test_the_fast_paths_suite_with_threads_times_the_threaded_loops_apart():
    from tinyllm.bench.fast_paths import suite_fast_paths
    from tinyllm.bench.suites import Options

    tables = suite_fast_paths(Options(rounds=1, warmup=0, quick=True, threads=2))
    titles = [t.title for t in tables]
    assert len(tables) == 4 and "threaded" in titles[1] and "threaded" in titles[3], titles
    for t in (tables[1], tables[3]):
        assert [r[0] for r in t.rows] == ["2 parts on 2 threads",
                                          "the same, the sum, clipping and AdamW on one thread"]
        assert all(float(r[1]) > 0 for r in t.rows), t.rows


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_the_threaded_bench_step_is_the_one_thread_step(activation, rng):
    """make_gpt's step with the batch in 2 parts on threads (gpt-solo's 'tinyllm, threads=2')
    takes the one-thread step: the same losses, and weights within a share of lr (AdamW moves
    a weight whose gradient is rounding noise by up to lr), over 3 steps."""
    from tinyllm.bench.suites import QUICK, make_gpt

    seed, runs = int(rng.integers(1 << 30)), []
    for threads in (1, 2):
        _, model, _, _, step = make_gpt(QUICK, seed=seed, activation=activation, threads=threads)
        losses = [float(step()) for _ in range(3)]
        runs.append((losses, {k: v.data.copy() for k, v in model.named_parameters()}))
    (l1, w1), (l2, w2) = runs
    np.testing.assert_allclose(l2, l1, rtol=1e-5, err_msg="losses, threads=2 vs 1")
    for name, w in w1.items():
        np.testing.assert_allclose(w2[name], w, atol=5e-4, err_msg=f"{name} after 3 steps")
