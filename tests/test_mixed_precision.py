"""Mixed precision: the formats' rounding, the policy on Linears, the loss-scaled step, and the
trainer's ``--set precision=...`` (the scaler's state in state.json, resume exact).

References: NumPy's float16 and ml_dtypes' bfloat16 conversions (independent of the code), the
plain float32 Linear, and an uninterrupted run for the resumed one.
"""

import json

import numpy as np
import pytest
from test_trainer import TINY, corpus  # noqa: F401  (the fixture)

import tinyllm as tl
from tinyllm.optim import SGD
from tinyllm.precision import Precision, Round, precision_policy, round_to
from tinyllm.train.config import ConfigError
from tinyllm.train.presets import preset_config
from tinyllm.train.trainer import train

ml_dtypes = pytest.importorskip("ml_dtypes")


def as_format(a, fmt):
    a = np.asarray(a, np.float32)
    with np.errstate(over="ignore"):  # float16 overflows to +-inf: the behaviour under test
        return a.astype(np.float16 if fmt == "float16" else ml_dtypes.bfloat16).astype(np.float32)


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
def test_round_to_and_the_round_function(rng, fmt):
    x = (rng.standard_normal((3, 7)) * 10.0 ** rng.integers(-9, 6, (3, 1))).astype(np.float32)
    np.testing.assert_array_equal(round_to(x, fmt), as_format(x, fmt))
    assert round_to(x, "float32") is x
    t = tl.tensor(x, requires_grad=True)
    gy = (rng.standard_normal((3, 7)) * 1e-6).astype(np.float32)  # below float16's normals
    y = Round(fmt)(t)
    with np.errstate(invalid="ignore"):  # y may hold +inf and -inf (float16): a NaN sum, whose
        (y * tl.tensor(gy)).sum().backward()  # gradient is still gy rounded, checked below
    np.testing.assert_array_equal(y.numpy(), as_format(x, fmt))
    np.testing.assert_array_equal(t.grad, as_format(gy, fmt))  # the gradient rounded too
    with pytest.raises(ValueError, match="unknown number format"):
        Round("int8")


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
def test_the_policy_rounds_the_linear_inputs_and_output(rng, fmt):
    lin = tl.nn.Linear(6, 5)
    model = tl.nn.Sequential(lin)
    keys = list(model.state_dict())
    x = rng.standard_normal((4, 6)).astype(np.float32)
    Precision(fmt).apply(model)
    assert precision_policy(model) == fmt and list(model.state_dict()) == keys
    w, b = lin.weight.data, lin.bias.data
    want = as_format(as_format(x, fmt) @ as_format(w, fmt).T + b, fmt)
    np.testing.assert_allclose(model(tl.tensor(x)).numpy(), want, rtol=1e-6, atol=0)
    assert lin.weight.data.dtype == np.float32 and lin.weight.data is w  # the master copy
    Precision.remove(model)
    assert precision_policy(model) == "float32"
    np.testing.assert_allclose(model(tl.tensor(x)).numpy(), x @ w.T + b, rtol=1e-6)
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision("fp8")


def test_the_scaled_step_skips_an_overflow_and_unscales(rng):
    from tinyllm.train.mixed_precision import RunPrecision

    class Cfg:
        precision, loss_scale = "float16", None

    lin = tl.nn.Linear(4, 3)
    model = tl.nn.Sequential(lin)
    run = RunPrecision(Cfg, model, {})
    opt = SGD(model.parameters(), lr=0.1)
    x = tl.tensor(rng.standard_normal((2, 4)).astype(np.float32))
    before = lin.weight.data.copy()
    run.scaler.scale = 1e30  # every scaled gradient overflows float16
    run.step((model(x) ** 2).sum(), opt, list(model.parameters()), 0.1, 0.0)
    np.testing.assert_array_equal(lin.weight.data, before)
    assert run.scaler.scale == 5e29 and run.scaler.skipped == 1
    run.scaler.scale = 1024.0  # a power of two: scaling and unscaling are exact
    bias = lin.bias.data.copy()
    run.step((model(x) ** 2).sum(), opt, list(model.parameters()), 0.1, 0.0)
    after = lin.weight.data.copy()
    lin.weight.data, lin.bias.data = before.copy(), bias  # the same update without scaling
    lin.zero_grad()
    (model(x) ** 2).sum().backward()
    np.testing.assert_allclose(after, before - 0.1 * lin.weight.grad, rtol=1e-6, atol=0)
    assert run.scaler.good_steps == 1 and run.scaler.scale == 1024.0


def tiny(out, **sets):
    return train(preset_config("baby-shakespeare"),
                 overrides={**TINY, "dropout": "0.1", **{k: str(v) for k, v in sets.items()}},
                 out=out, mode="quiet")


def test_float16_training_resumes_exactly_with_the_scaler(corpus, tmp_path):  # noqa: F811
    tiny(tmp_path / "a", precision="float16", max_iters=6, eval_interval=3)
    tiny(tmp_path / "b", precision="float16", max_iters=3, eval_interval=3, lr_decay_iters=6)
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["loss_scaler"]["good_steps"] == 3 and state["loss_scaler"]["scale"] == 2 ** 16
    train(resume=tmp_path / "b", overrides={"max_iters": 6}, mode="quiet")
    a, b = tl.load(tmp_path / "a" / "model.safetensors"), tl.load(tmp_path / "b" /
                                                                  "model.safetensors")
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert json.loads((tmp_path / "b" / "state.json").read_text())["loss_scaler"] == \
        json.loads((tmp_path / "a" / "state.json").read_text())["loss_scaler"]
    rec = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["loss_scale"] == 2 ** 16 and rec["skipped_steps"] == 0
    assert 0 <= rec["grad_underflow"] < 1


@pytest.mark.parametrize("sets", [{"grad_accum_steps": 2}, {"threads": 2}, {"zero_stage": 1}],
                         ids=["micro-batches", "threads", "zero"])
def test_float16_loss_scaling_in_the_data_parallel_step(corpus, tmp_path, sets):  # noqa: F811
    """Micro-batches, threads and ZeRO (here in one process) scale each part's loss and
    unscale the summed gradients: the plain scaled step's losses and scaler state. A scale
    that overflows every step skips them all, as the plain step does: the weights stay the
    initial ones, bit for bit."""
    runs = {name: tiny(tmp_path / name, precision="float16", max_iters=4, eval_interval=4,
                       dropout=0.0, **kw) for name, kw in (("plain", {}), ("dp", sets))}
    np.testing.assert_allclose(runs["dp"].losses, runs["plain"].losses, rtol=0, atol=1e-4,
                               err_msg=f"float16 with {sets} left the plain scaled steps")

    def scaler(name):
        return json.loads((tmp_path / name / "state.json").read_text())["loss_scaler"]

    assert scaler("dp") == scaler("plain") and scaler("dp")["good_steps"] == 4
    for name, kw in (("plain-skip", {}), ("dp-skip", sets)):
        tiny(tmp_path / name, precision="float16", loss_scale=1e30, max_iters=2,
             eval_interval=2, dropout=0.0, **kw)
        assert scaler(name)["skipped"] == 2, f"{name}: every step overflows"
    skipped, plain_skipped, trained = (tl.load(tmp_path / n / "model.safetensors")
                                       for n in ("dp-skip", "plain-skip", "dp"))
    for k in skipped:
        assert skipped[k].tobytes() == plain_skipped[k].tobytes(), f"{k} changed in a skip"
    assert any(not np.array_equal(skipped[k], trained[k]) for k in skipped)


def test_precision_settings_are_checked(corpus, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="precision"):
        tiny(tmp_path / "a", precision="fp8")
    with pytest.raises(ConfigError, match="loss_scale"):
        tiny(tmp_path / "b", precision="float16", loss_scale=-1)


def test_a_bfloat16_run_is_read_back_in_bfloat16(corpus, tmp_path):  # noqa: F811
    from tinyllm.train.trainer import load_run

    tiny(tmp_path / "a", precision="bfloat16", max_iters=2, eval_interval=2)
    _, task, _ = load_run(tmp_path / "a")
    assert precision_policy(task.model) == "bfloat16"


def test_precision_checkpointing_and_quantization_on_the_fake_gpu(fake_cuda, rng):
    """The three ideas run on the strict fake GPU: every array stays on the device (the
    bit-level bfloat16 rounding, not ml_dtypes; CuPy's generator re-seeded for dropout)."""
    from tinyllm.models import GPT, GPTConfig
    from tinyllm.quant import quantize

    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16,
                          dropout=0.1, checkpoint_blocks=True)).to("cuda")
    ids = rng.integers(0, 11, (2, 8))
    for fmt in ("bfloat16", "float16"):
        Precision(fmt).apply(model)
        model.zero_grad()
        _, loss = model(ids, ids)
        loss.backward()
        g = model.blocks[0].mlp.fc.weight.grad
        assert tl.backend.get_device(g) == "cuda" and bool(fake_cuda.isfinite(g).all())
        x = fake_cuda.asarray(rng.standard_normal(5).astype(np.float32))
        np.testing.assert_array_equal(round_to(x, fmt).get(), as_format(x.get(), fmt))
    Precision.remove(model)
    model.eval()
    quantize(model, bits=4, group_size=8)
    with tl.no_grad():
        assert tl.backend.get_device(model(ids).data) == "cuda"
