"""GPT.from_pretrained / save_pretrained against a tiny Hugging Face GPT-2.

The fixture tests/fixtures/gpt2_tiny was written by ``transformers`` (make_gpt2_tiny.py, beside
it): its weights, the logits for two prompts and the greedy and beam-search continuations with
the exact ``generate`` keywords. These tests need neither PyTorch nor transformers.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_checkpoint
from helpers_pretrained import (
    check_generate,
    check_reloaded,
    check_saved_folder,
    reference_fixtures,
)

import tinyllm as tl
from tinyllm.models import GPT, GPTConfig

FIXTURE = Path(__file__).parent / "fixtures" / "gpt2_tiny"
NEEDED = ("config.json", "model.safetensors", "expected.json", "expected.safetensors")

pytestmark = pytest.mark.skipif(
    not all((FIXTURE / f).is_file() for f in NEEDED),
    reason=f"the gpt2_tiny fixture ({', '.join(NEEDED)} in {FIXTURE}) is missing; "
           "make it with tests/fixtures/gpt2_tiny/make_gpt2_tiny.py")


expected, model = reference_fixtures(FIXTURE, GPT)


def test_config(model):
    cfg = json.loads((FIXTURE / "config.json").read_text())
    c = model.config
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd) == (
        cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"])
    assert c.activation == "gelu_new" and c.layer_norm_eps == cfg["layer_norm_epsilon"]
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_logits(model, expected):
    _, arrays = expected
    logits = model(arrays["input_ids"]).numpy()
    np.testing.assert_allclose(logits, arrays["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("search", ["greedy", "beam1", "beam2"])
def test_generate(model, expected, search, use_cache):
    check_generate(model, *expected, search, use_cache, atol=1e-4)


def test_save_round_trip(model, expected, tmp_path):
    check_saved_folder(model, expected[1], tmp_path / "out", FIXTURE, (
        "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "activation_function",
        "layer_norm_epsilon", "model_type", "tie_word_embeddings"))


def test_round_trip_fresh_model(tmp_path, rng):
    tl.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, block_size=9, n_layer=3, n_head=2, n_embd=8, activation="gelu"))
    m.save_pretrained(tmp_path)
    check_reloaded(m, tmp_path)
    with pytest.raises(ValueError, match="bias=False"):
        GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4,
                      bias=False)).save_pretrained(tmp_path / "nobias")


def _copy_fixture(tmp_path, edit_weights=None, edit_config=None):
    return copy_checkpoint(FIXTURE, tmp_path, edit_weights, edit_config)


def test_loads_without_prefix_and_with_buffers_and_lm_head(tmp_path, model, expected):
    def edit(w):
        for k in list(w):
            w[k[len("transformer."):]] = w.pop(k)
        w["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), dtype=np.float32))
        w["h.0.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
        w["lm_head.weight"] = w["wte.weight"].copy()

    m = GPT.from_pretrained(_copy_fixture(tmp_path, edit))
    ids = expected[1]["input_ids"]
    np.testing.assert_array_equal(m(ids).numpy(), model(ids).numpy())


@pytest.mark.parametrize("edit, match", [
    (lambda w: w.pop("transformer.h.1.mlp.c_fc.bias"), "missing keys.*h.1.mlp.c_fc.bias"),
    (lambda w: w.update({"transformer.h.2.ln_1.weight": np.ones(48, np.float32)}),
     "unexpected keys.*h.2.ln_1.weight"),
    (lambda w: w.update({"transformer.h.0.attn.c_attn.weight": np.zeros((144, 48), np.float32)}),
     r"h.0.attn.c_attn.weight: expected \(48, 144\), got \(144, 48\)"),
    (lambda w: w.update({"lm_head.weight": w["transformer.wte.weight"] + 1}), "lm_head.weight"),
])
def test_bad_weights(tmp_path, edit, match):
    d = _copy_fixture(tmp_path, edit)
    with pytest.raises(ValueError, match=match) as info:
        GPT.from_pretrained(d)
    assert "model.safetensors" in str(info.value)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(activation_function="swish"), "activation_function"),
    (lambda c: c.update(n_inner=100), "n_inner"),
    (lambda c: c.update(model_type="bert"), "model_type"),
    (lambda c: c.pop("n_head"), "n_head"),
    (lambda c: c.update(n_layer=3), "missing keys.*h.2"),
])
def test_bad_config(tmp_path, edit, match):
    with pytest.raises((ValueError, KeyError), match=match):
        GPT.from_pretrained(_copy_fixture(tmp_path, edit_config=edit))


@pytest.mark.parametrize("edit, match", [
    (lambda c: [1, 2, 3], r"config.json: holds a JSON list"),
    (lambda c: {"n_layer": 2}, r"config.json: missing key 'vocab_size'"),
    (lambda c: "not json", r"config.json: not valid JSON"),
    (lambda c: {**c, "layer_norm_epsilon": "x"},
     r"config.json: 'layer_norm_epsilon' must be a number, got 'x'"),
    (lambda c: {**c, "n_embd": "48"}, r"config.json: 'n_embd' must be an integer, got '48' \(str\)"),
    (lambda c: {**c, "n_head": True}, r"'n_head' must be an integer, got True"),
    (lambda c: {**c, "add_cross_attention": True}, r"add_cross_attention=True are not supported"),
])
def test_a_bad_config_names_the_file_and_the_key(tmp_path, edit, match):
    """The loader's own error type, never an AttributeError/KeyError/bare ValueError."""
    from tinyllm.models.hf_config import HFCheckpointError

    d = _copy_fixture(tmp_path)
    new = edit(json.loads((d / "config.json").read_text()))
    (d / "config.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(HFCheckpointError, match=match) as info:
        GPT.from_pretrained(d)
    assert str(d / "config.json") in str(info.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)
