"""Quantization of models: ``tinyllm.quant.quantize``, ``QuantizedLinear``/``QuantizedEmbedding``,
int4 packing, and ``tinyllm quantize`` writing a run folder that ``sample`` and ``eval`` read.

References: the float32 model (outputs close, within what the number of levels allows), the
dequantized weight through a plain ``F.linear`` (exact), NumPy integer sums, the file sizes.
"""

import json

import numpy as np
import pytest
from test_trainer import TINY, corpus  # noqa: F401  (the fixture)

import tinyllm as tl
from tinyllm import functional as F
from tinyllm.cli import main
from tinyllm.models import GPT, GPTConfig
from tinyllm.quant import (
    QuantizedEmbedding,
    QuantizedLinear,
    pack_int4,
    quantization_config,
    quantize,
    unpack_int4,
    weight_bytes,
)
from tinyllm.train.presets import preset_config
from tinyllm.train.trainer import train


def tiny_gpt(seed=0):
    tl.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32))


def test_pack_int4_round_trip(rng):
    q = rng.integers(0, 16, (3, 2 * int(rng.integers(1, 9)))).astype(np.uint8)
    packed = pack_int4(q)
    assert packed.dtype == np.uint8 and packed.shape == (3, q.shape[1] // 2)
    np.testing.assert_array_equal(packed & 15, q[:, 0::2])
    np.testing.assert_array_equal(unpack_int4(packed), q)
    with pytest.raises(ValueError, match="even"):
        pack_int4(q[:, :1])


@pytest.mark.parametrize("bits,group_size,tol", [(8, None, 0.02), (4, 8, 0.2), (4, None, 0.4)])
def test_quantized_gpt_is_close_to_the_float_one(rng, bits, group_size, tol):
    ids = rng.integers(0, 23, (2, 16))
    model = tiny_gpt()
    with tl.no_grad():
        want = model(ids).numpy()
    weights = {n: p.data.copy() for n, p in model.named_parameters()}
    before = weight_bytes(model)
    quantize(model, bits=bits, group_size=group_size)
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(linears) == 8 and not any(type(m) is tl.nn.Linear for m in model.modules())
    for name, m in model.named_modules():
        if isinstance(m, QuantizedLinear):  # each weight within a step of its value (half a
            # step, and half more where the rounded zero point clips the group's end)
            w = weights[f"{name}.weight"]
            step = np.repeat(m.scale.data.astype(np.float32), w.shape[1] // m.scale.data.shape[1],
                             axis=1) if m.scale.data.ndim == 2 else m.scale.data[:, None]
            bound = 0.5001 if m.symmetric else 1.01
            assert (np.abs(m.weight_array() - w) <= step * bound + 1e-7).all(), name
            assert m.qweight.data.dtype == (np.int8 if bits == 8 else np.uint8)
    with tl.no_grad():
        got = model(ids).numpy()
    assert np.abs(got - want).max() < tol * np.abs(want).max()
    ratio = before / weight_bytes(model)
    assert ratio > (1.5 if bits == 8 else 2.0), ratio  # the embeddings stay float32 here
    assert quantization_config(model)["bits"] == bits
    with pytest.raises(ValueError, match="already quantized"):
        quantize(model)


def test_weight_only_is_the_dequantized_linear_and_passes_gradients(rng):
    lin = tl.nn.Linear(16, 5)
    q = QuantizedLinear(lin, bits=4, group_size=8)
    x = tl.tensor(rng.standard_normal((3, 16)).astype(np.float32), requires_grad=True)
    y = q(x)
    want = F.linear(tl.tensor(x.numpy()), tl.tensor(q.weight_array()), lin.bias).numpy()
    np.testing.assert_array_equal(y.numpy(), want)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.broadcast_to(q.weight_array().sum(0), (3, 16)),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="last axis must be 16"):
        q(tl.tensor(np.zeros((2, 3), np.float32)))


def test_int8_activations_sum_in_integers(rng):
    lin = tl.nn.Linear(24, 6)
    q = QuantizedLinear(lin, bits=8, activations=True)
    x = rng.standard_normal((2, 3, 24)).astype(np.float32)
    xs = np.abs(x).max(-1, keepdims=True) / 127
    xq = np.rint(x / xs).astype(np.int64)
    acc = xq @ q.qweight.data.astype(np.int64).T
    want = acc * xs * q.scale.data[:, None].T + lin.bias.data
    np.testing.assert_allclose(q(tl.tensor(x)).numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="activations=True needs 8-bit"):
        QuantizedLinear(lin, bits=4, activations=True)


def test_embeddings_quantized_and_the_tied_head_reads_them(rng):
    model = tiny_gpt()
    quantize(model, bits=8, embeddings=True)
    assert isinstance(model.wte, QuantizedEmbedding)
    ids = rng.integers(0, 23, (1, 5))
    with tl.no_grad():
        assert np.isfinite(model(ids).numpy()).all()
    sd = model.state_dict()
    assert sd["wte.qweight"].dtype == np.int8 and "wte.weight" not in sd


@pytest.mark.parametrize("bad", [dict(bits=9), dict(bits=True), dict(group_size=0),
                                 dict(bits=4, group_size=5)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="bits|group_size"):
        quantize(tiny_gpt(), **bad)


def test_quantize_command_writes_a_run_folder_sample_and_eval_read(corpus, tmp_path,  # noqa: F811
                                                                   capsys):
    run = tmp_path / "run"
    train(preset_config("baby-shakespeare"), overrides={**TINY, "max_iters": "2",
                                                        "eval_interval": "2"},
          out=run, mode="quiet")
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run), "--eval-iters", "2", "--json"]) == 0
    base = json.loads(capsys.readouterr().out)
    q4 = tmp_path / "run-q4"
    assert main(["quantize", "--ckpt", str(run), "--bits", "4", "--group-size", "16",
                 "--out", str(q4)]) == 0
    assert "smaller" in capsys.readouterr().out
    for name in ("config.json", "tokenizer.json", "state.json", "model.safetensors"):
        assert (q4 / name).is_file(), name
    sd = tl.load(q4 / "model.safetensors")
    assert sd["blocks.0.mlp.fc.qweight"].dtype == np.uint8
    assert (q4 / "model.safetensors").stat().st_size < (run / "model.safetensors").stat().st_size
    assert main(["eval", "--ckpt", str(q4), "--eval-iters", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert abs(got["val_loss"] - base["val_loss"]) < 0.1
    assert main(["sample", "--ckpt", str(q4), "--prompt", "RO", "--max-new-tokens", "5",
                 "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("RO")
    # errors: one line, status 2
    assert main(["quantize", "--ckpt", str(q4), "--out", str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert main(["quantize", "--ckpt", str(run), "--bits", "4", "--group-size", "7",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "group_size=7" in capsys.readouterr().err
    assert main(["quantize", "--ckpt", str(run), "--out", str(q4)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
