"""Llama against transformers' LlamaForCausalLM, its Hugging Face files, generation and training.

The fixture tests/fixtures/llama_tiny was written by ``transformers`` (make_llama_tiny.py,
beside it): a grouped-query Llama with an untied head and RoPE base 500000, its logits for two
prompts and its greedy and beam-search continuations with the exact ``generate`` keywords, and
in ``mqa_tied/`` a multi-query Llama with tied embeddings. Only the round trip into
transformers itself needs transformers (skipped without it).
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_checkpoint, require_tiny_shakespeare
from helpers_pretrained import (
    check_generate,
    check_reloaded,
    check_saved_folder,
    generate_kwargs,
    reference_fixtures,
)

import tinyllm as tl
from tinyllm import backend
from tinyllm.models import GPT, HFCheckpointError, Llama, LlamaConfig

FIXTURE = Path(__file__).parent / "fixtures" / "llama_tiny"
MQA = FIXTURE / "mqa_tied"


expected, model = reference_fixtures(FIXTURE, Llama)


def _kwargs(record):
    return generate_kwargs(record["kwargs"])


# ---------------------------------------------------------------------------- against transformers
def test_config(model):
    cfg = json.loads((FIXTURE / "config.json").read_text())
    c = model.config
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_kv_head, c.n_embd,
            c.intermediate_size) == (cfg["vocab_size"], cfg["max_position_embeddings"],
                                     cfg["num_hidden_layers"], cfg["num_attention_heads"],
                                     cfg["num_key_value_heads"], cfg["hidden_size"],
                                     cfg["intermediate_size"])
    assert c.rope_base == cfg["rope_parameters"]["rope_theta"] == 500000.0
    assert c.rms_norm_eps == cfg["rms_norm_eps"] and not c.tie_word_embeddings
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_logits_match_transformers(model, expected):
    _, arrays = expected
    logits = model(arrays["input_ids"]).numpy()
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, arrays["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("search", ["greedy", "beam1", "beam2"])
def test_generate_matches_transformers(model, expected, search, use_cache):
    check_generate(model, *expected, search, use_cache, atol=1e-5)


def test_multi_query_tied_checkpoint(expected):
    meta, _ = expected
    m = Llama.from_pretrained(MQA)
    assert m.config.n_kv_head == 1 and m.config.tie_word_embeddings and m.lm_head is None
    arrays = tl.load(MQA / "expected.safetensors")
    np.testing.assert_allclose(m(arrays["input_ids"]).numpy(), arrays["logits"], atol=1e-5, rtol=0)
    max_new, kw = _kwargs(meta["mqa_tied"]["greedy"])
    np.testing.assert_array_equal(m.generate(arrays["input_ids"], max_new, **kw),
                                  arrays["greedy_sequences"])


def test_left_padded_batch_matches_transformers(model, expected):
    _, arrays = expected
    ids, mask = arrays["padded_input_ids"], arrays["padded_attention_mask"]
    logits = model(ids, attention_mask=mask).numpy()
    np.testing.assert_allclose(logits, arrays["padded_logits"], atol=1e-5, rtol=0)
    pad = int((mask[1] == 0).sum())  # and the padded row computes what it computes alone
    np.testing.assert_allclose(logits[1, pad:], model(ids[1:, pad:]).numpy()[0], atol=1e-5)
    caches = model.new_kv_caches()  # the mask also steers decoding with the cache
    with tl.no_grad():
        model.next_token_logits(ids[:, :6], caches, attention_mask=mask[:, :6])
        step = model.next_token_logits(ids[:, 6:], caches, attention_mask=mask).numpy()
    np.testing.assert_allclose(step, logits[:, -1], atol=1e-5)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, cached \+ T\)"):
        model(ids, attention_mask=mask[:, 1:])


def test_generate_with_attention_mask_matches_transformers(model, expected):
    import inspect

    from tinyllm.models import generate

    if "attention_mask" not in inspect.signature(generate).parameters:
        pytest.skip("generate() takes no attention_mask yet (the models engineer adds it)")
    meta, arrays = expected
    max_new, kw = _kwargs(meta["padded"])
    out = model.generate(arrays["padded_input_ids"], max_new,
                         attention_mask=arrays["padded_attention_mask"], **kw)
    np.testing.assert_array_equal(out, arrays["padded_greedy_sequences"])


# ---------------------------------------------------------------------------- saving
def test_save_round_trip(model, expected, tmp_path):
    check_saved_folder(model, expected[1], tmp_path / "out", FIXTURE, (
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
        "max_position_embeddings", "rms_norm_eps", "rope_parameters", "tie_word_embeddings",
        "attention_bias", "mlp_bias"))


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_fresh_model(tmp_path, tied):
    tl.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=20, block_size=9, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                          rope_base=321.0, tie_word_embeddings=tied))
    m.save_pretrained(tmp_path)
    assert ("lm_head.weight" in tl.load(tmp_path / "model.safetensors")) is not tied
    check_reloaded(m, tmp_path)


@pytest.mark.parametrize("tied", [False, True])
def test_saved_folder_loads_in_transformers(tmp_path, rng, tied):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tl.manual_seed(int(rng.integers(1000)))
    m = Llama(LlamaConfig(vocab_size=30, block_size=12, n_layer=2, n_head=4, n_kv_head=2,
                          n_embd=16, intermediate_size=24, rope_base=99.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=tied, initializer_range=0.3))
    m.save_pretrained(tmp_path)
    ref = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = rng.integers(0, 30, size=(2, 12))
    with torch.no_grad():
        want = ref(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(m(ids).numpy(), want, atol=1e-5)


# ---------------------------------------------------------------------------- refusing what we cannot run
def _copy(tmp_path, src=FIXTURE, edit_weights=None, edit_config=None):
    return copy_checkpoint(src, tmp_path, edit_weights, edit_config)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
    (lambda c: c.update(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}),
     "rope_parameters.*llama3"),
    (lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                         "partial_rotary_factor": 0.5}), "partial_rotary_factor"),
    (lambda c: c.update(sliding_window=16), "sliding_window"),
    (lambda c: c.update(attention_bias=True), "attention_bias"),
    (lambda c: c.update(mlp_bias=True), "mlp_bias"),
    (lambda c: c.update(head_dim=16), "head_dim=16"),
    (lambda c: c.update(hidden_act="gelu"), "hidden_act='gelu'"),
    (lambda c: c.update(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    (lambda c: c.update(layer_types=["sliding_attention", "full_attention"]), "layer_types"),
    (lambda c: c.update(model_type="mistral"), "model_type"),
    (lambda c: c.pop("num_attention_heads"), "num_attention_heads"),
    (lambda c: c.update(num_key_value_heads=3), "n_kv_head=3 must divide n_head=4"),
    (lambda c: c.update(num_hidden_layers=3), "missing keys.*model.layers.2"),
])
def test_bad_config_is_refused_by_name(tmp_path, edit, match):
    with pytest.raises((ValueError, KeyError), match=match) as info:
        Llama.from_pretrained(_copy(tmp_path, edit_config=edit))
    if "model.layers.2" not in match and "n_kv_head" not in match:
        assert "config.json" in str(info.value)


@pytest.mark.parametrize("edit, match", [
    (lambda w: w.pop("model.layers.1.mlp.up_proj.weight"), "missing keys.*layers.1.mlp.up_proj"),
    (lambda w: w.pop("lm_head.weight"), "lm_head.weight.*tie_word_embeddings is false"),
    (lambda w: w.update({"model.layers.0.mlp.gate_proj.bias": np.zeros(128, np.float32)}),
     "unexpected keys.*gate_proj.bias"),
    (lambda w: w.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((48, 48), np.float32)}),
     r"k_proj.weight: expected \(24, 48\), got \(48, 48\)"),
])
def test_bad_weights_are_refused(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match) as info:
        Llama.from_pretrained(_copy(tmp_path, edit_weights=edit))
    assert "model.safetensors" in str(info.value) and "nothing was loaded" in str(info.value)


def test_tied_checkpoint_with_a_different_head_is_refused(tmp_path):
    def edit(w):
        w["lm_head.weight"] = w["model.embed_tokens.weight"] + 1

    with pytest.raises(ValueError, match="lm_head.weight differs"):
        Llama.from_pretrained(_copy(tmp_path, MQA, edit_weights=edit))


def test_old_buffers_legacy_rope_theta_and_shards(tmp_path, model, expected):
    ids = expected[1]["input_ids"]

    def edit_w(w):
        w["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(6, np.float32)

    def edit_c(c):
        c["rope_theta"] = c.pop("rope_parameters")["rope_theta"]  # transformers 4's spelling
        c["rope_scaling"] = None

    d = _copy(tmp_path, edit_weights=edit_w, edit_config=edit_c)
    np.testing.assert_array_equal(Llama.from_pretrained(d)(ids).numpy(), model(ids).numpy())
    w = tl.load(d / "model.safetensors")
    names = sorted(w)
    shards = {"model-00001-of-00002.safetensors": names[:7], "model-00002-of-00002.safetensors": names[7:]}
    for fname, keys in shards.items():
        tl.save({k: w[k] for k in keys}, d / fname)
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    os.remove(d / "model.safetensors")
    np.testing.assert_array_equal(Llama.from_pretrained(d)(ids).numpy(), model(ids).numpy())


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(hidden_size="48"), r"'hidden_size' must be an integer, got '48' \(str\)"),
    (lambda c: c.update(num_hidden_layers=2.0), r"'num_hidden_layers' must be an integer"),
    (lambda c: c.update(rms_norm_eps="1e-6"), r"'rms_norm_eps' must be a number"),
    (lambda c: c.update(tie_word_embeddings="false"), r"'tie_word_embeddings' must be true or"),
    (lambda c: c.update(num_key_value_heads="2"), r"'num_key_value_heads' must be an integer"),
    (lambda c: c.update(layer_types=7), r"layer_types=7 \(not a value"),
    (lambda c: c.update(rope_parameters=[1e4]), r"'rope_parameters' must be an object"),
    (lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": "big"}),
     r"'rope_theta' must be a number"),
    (lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": 0}),
     r"rope_theta must be above 0"),
])
def test_wrongly_typed_config_values_are_refused_by_key(tmp_path, edit, match):
    with pytest.raises(HFCheckpointError, match=match) as info:
        Llama.from_pretrained(_copy(tmp_path, edit_config=edit))
    assert "config.json" in str(info.value)


@pytest.mark.parametrize("text, match", [
    ("{not json", "config.json: not valid JSON"),
    ("[1, 2]", "holds a JSON list"),
    ("\"llama\"", "holds a JSON str"),
])
def test_a_config_that_is_not_a_json_object_is_refused(tmp_path, text, match):
    d = _copy(tmp_path)
    (d / "config.json").write_text(text)
    with pytest.raises(HFCheckpointError, match=match):
        Llama.from_pretrained(d)


def _sharded(tmp_path):
    """The fixture as two shards and an index; returns the folder and the index dict."""
    d = _copy(tmp_path)
    w = tl.load(d / "model.safetensors")
    names = sorted(w)
    shards = {"model-00001-of-00002.safetensors": names[:5],
              "model-00002-of-00002.safetensors": names[5:]}
    for fname, keys in shards.items():
        tl.save({k: w[k] for k in keys}, d / fname)
    os.remove(d / "model.safetensors")
    return d, {"weight_map": {k: f for f, keys in shards.items() for k in keys}}


def test_a_damaged_shard_index_is_refused_by_name(tmp_path):
    d, index = _sharded(tmp_path)
    path = d / "model.safetensors.index.json"
    first = sorted(index["weight_map"])[0]
    cases = [
        ("{", "model.safetensors.index.json is not valid JSON"),
        ("[]", "no 'weight_map' object"),
        (json.dumps({"weight_map": {}}), "no 'weight_map' object"),
        (json.dumps({"weight_map": {**index["weight_map"], first: 3}}),
         rf"weight_map\['{re.escape(first)}'\] is 3"),
        (json.dumps({"weight_map": {**index["weight_map"], first: "../model.safetensors"}}),
         "must be the name of a shard file in the same folder"),
        (json.dumps({"weight_map": {**index["weight_map"], first: "gone.safetensors"}}),
         "lists the shard 'gone.safetensors'"),
        (json.dumps({"weight_map": {**index["weight_map"], "model.extra.weight":
                                    "model-00001-of-00002.safetensors"}}),
         r"maps \['model.extra.weight'\] to 'model-00001-of-00002.safetensors', which does not"),
    ]
    for text, match in cases:
        path.write_text(text)
        with pytest.raises((HFCheckpointError, FileNotFoundError), match=match) as info:
            Llama.from_pretrained(d)
        assert "model.safetensors.index.json" in str(info.value)
    path.write_text(json.dumps(index))
    Llama.from_pretrained(d)  # the intact index loads
    w = tl.load(d / "model-00002-of-00002.safetensors")
    w[first] = tl.load(d / "model-00001-of-00002.safetensors")[first]
    tl.save(w, d / "model-00002-of-00002.safetensors")
    with pytest.raises(HFCheckpointError, match=rf"\['{re.escape(first)}'\] are in more than one"):
        Llama.from_pretrained(d)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Llama.from_pretrained(tmp_path)
    shutil.copy(FIXTURE / "config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Llama.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- the model itself
def test_config_checks():
    c = LlamaConfig(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_embd=32)
    assert c.n_kv_head == 4 and c.intermediate_size == 96 and c.head_dim == 8
    for bad, match in [(dict(n_kv_head=3), "n_kv_head=3 must divide"),
                       (dict(n_embd=12, n_head=4), "even head size"),
                       (dict(n_layer=0), "n_layer"), (dict(rope_base=0), "rope_base"),
                       (dict(dropout=1.0), "dropout")]:
        kw = {**dict(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_embd=32), **bad}
        with pytest.raises(ValueError, match=match):
            LlamaConfig(**kw)
    m = Llama(c)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m(np.array([[1, 10]]))
    with pytest.raises(ValueError, match="longer than block_size=8"):
        m(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        m(np.zeros(3, dtype=np.int64))


def test_cache_stores_only_key_value_heads_and_bytes_per_token():
    tl.manual_seed(0)
    cfg = dict(vocab_size=11, block_size=16, n_layer=3, n_head=8, n_embd=32)
    mha, gqa = Llama(LlamaConfig(**cfg)), Llama(LlamaConfig(**cfg, n_kv_head=2))
    for m, heads in ((mha, 8), (gqa, 2)):
        caches = m.new_kv_caches()
        with tl.no_grad():
            m.next_token_logits(np.zeros((2, 5), dtype=np.int64), caches)
        assert caches[0].k.shape == (2, heads, 16, 4) and caches[0].length == 5
        held = sum(c.k[:, :, :5].nbytes + c.v[:, :, :5].nbytes for c in caches) / (2 * 5)
        assert held == m.kv_cache_bytes_per_token() == 2 * 3 * heads * 4 * 4
    assert mha.kv_cache_bytes_per_token() == 4 * gqa.kv_cache_bytes_per_token()


def test_generation_past_block_size_and_sampling():
    tl.manual_seed(1)
    m = Llama(LlamaConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_kv_head=1,
                          n_embd=8, initializer_range=0.5))
    ids = np.array([[1, 2, 3]])
    a, b = m.generate(ids, 10, use_cache=True), m.generate(ids, 10, use_cache=False)
    assert a.shape == (1, 13)
    np.testing.assert_array_equal(a, b)
    s1, s2 = (m.generate(ids, 5, do_sample=True, top_k=5, seed=3) for _ in range(2))
    np.testing.assert_array_equal(s1, s2)


def test_training_lowers_the_loss_and_gradients_flow_everywhere(rng):
    tl.manual_seed(int(rng.integers(1000)))
    m = Llama(LlamaConfig(vocab_size=12, block_size=8, n_layer=2, n_head=2, n_kv_head=1, n_embd=16))
    data = np.tile(np.arange(12), 10)
    opt = m.configure_optimizers(weight_decay=0.0, lr=1e-2)
    losses = []
    for step in range(60):
        starts = rng.integers(0, len(data) - 9, size=8)
        x = np.stack([data[s:s + 8] for s in starts])
        y = np.stack([data[s + 1:s + 9] for s in starts])
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert all(p.grad is not None and np.abs(p.grad).max() > 0 for p in m.parameters())
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.2 * losses[0]  # the next id is always the current + 1


def test_trainer_preset_matches_gpt_size_and_trains(tmp_path, monkeypatch):
    from tinyllm.train.config import ConfigError, apply_overrides
    from tinyllm.train.presets import preset_config
    from tinyllm.train.tasks import build_task
    from tinyllm.train.trainer import load_run, train

    data = tmp_path / "data"
    data.mkdir()
    (data / "tinyshakespeare.txt").write_text("To be, or not to be, that is the question.\n" * 80)
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(data))
    own = {"verify_corpus": False}  # a corpus of its own under the corpus's name
    llama, gpt = (build_task(apply_overrides(preset_config(n), own).finalize().validate()).model
                  for n in ("baby-llama", "baby-shakespeare"))
    assert isinstance(llama, Llama) and isinstance(gpt, GPT)
    assert abs(llama.num_parameters() / gpt.num_parameters() - 1) < 0.02  # same size, same run:
    for key in ("max_iters", "batch_size", "block_size", "lr", "betas", "n_layer", "n_embd"):
        assert getattr(preset_config("baby-llama"), key) == getattr(preset_config("baby-shakespeare"), key)
    tiny = {"n_layer": "1", "n_embd": "16", "block_size": "8", "batch_size": "2", "max_iters": "3",
            "eval_iters": "1", "eval_interval": "3", "log_interval": "1", "warmup_iters": "1",
            "sample_chars": "5", "model_args.intermediate_size": "24", "verify_corpus": "false"}
    result = train(preset_config("baby-llama"), overrides=tiny, out=tmp_path / "run", mode="quiet")
    assert result.step == 3 and np.isfinite(result.best_val_loss) and len(result.samples) == 1
    cfg, task, _ = load_run(tmp_path / "run")  # what `tinyllm eval` and `sample` rebuild
    assert isinstance(task.model, Llama) and task.model.config.n_kv_head == 2
    cfg.model_args["arch"] = "mamba"
    with pytest.raises(ConfigError, match="model_args.arch"):
        build_task(cfg)


def test_runs_on_the_test_device(rng, device):
    """Forward, backward and cached generation on ``device`` agree with the CPU (on a GPU, or the
    strict fake one, every array op must go through the backend seam)."""
    tl.manual_seed(int(rng.integers(1000)))
    cfg = LlamaConfig(vocab_size=17, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                      initializer_range=0.3)
    cpu = Llama(cfg)
    dev = Llama(cfg)
    dev.load_state_dict(cpu.state_dict())
    dev.to(device)
    x, y = rng.integers(0, 17, size=(2, 12)), rng.integers(0, 17, size=(2, 12))
    losses = []
    for m in (cpu, dev):
        _, loss = m(tl.tensor(x, device=device) if m is dev else x,
                    tl.tensor(y, device=device) if m is dev else y)
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    for (n, p), (_, q) in zip(cpu.named_parameters(), dev.named_parameters()):
        np.testing.assert_allclose(backend.to_device(q.grad, "cpu"), p.grad, atol=1e-5, err_msg=n)
    np.testing.assert_array_equal(dev.generate(x[:, :4], 6), cpu.generate(x[:, :4], 6))


def test_transformers_twin_of_baby_llama_runs(capsys):
    """docs/benchmarks.md's cross-check in transformers, a few steps (skipped without it)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    require_tiny_shakespeare()
    from tinyllm.bench.torch_llama_baby import main

    assert main(["--seed", "3", "--max-iters", "30", "--eval-iters", "2", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["seed"] == 3 and out["steps"] == 30 and 2.5 < out["val_loss_20"] < 3.9
