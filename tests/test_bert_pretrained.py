"""BERT against Hugging Face: the tiny random BertForPreTraining fixture (tests/fixtures/bert_tiny,
made by transformers with make_bert_tiny.py), weight-name mapping, save/load round trips and
the errors of a checkpoint that does not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import serialization
from tinyllm.models.bert import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel
from tinyllm.models.hf_bert import HFCheckpointError, hf_to_tinyllm, tinyllm_to_hf

FIXTURE = Path(__file__).parent / "fixtures" / "bert_tiny"
ATOL = 2e-5


@pytest.fixture(scope="module")
def expected():
    if not (FIXTURE / "expected.safetensors").exists():
        pytest.skip("tests/fixtures/bert_tiny is missing (run make_bert_tiny.py)")
    return serialization.load(FIXTURE / "expected.safetensors")


def _inputs(e):
    return e["input_ids"], e["attention_mask"], e["token_type_ids"]


def assert_close(got, want, what, atol=ATOL):
    got = got.numpy() if isinstance(got, tl.Tensor) else got
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    diff = np.abs(got - want).max()
    assert diff <= atol, f"{what}: max abs difference {diff:.3g} > {atol}"


def test_pretraining_model_matches_transformers(expected):
    model = BertForPreTraining.from_pretrained(FIXTURE)
    assert not model.training
    with tl.no_grad():
        out = model(*_inputs(expected), output_hidden_states=True)
    assert_close(out.prediction_logits, expected["prediction_logits"], "prediction_logits")
    assert_close(out.seq_relationship_logits, expected["seq_relationship_logits"],
                 "seq_relationship_logits")
    assert len(out.hidden_states) == 3
    for i, h in enumerate(out.hidden_states):
        assert_close(h, expected[f"hidden_states.{i}"], f"hidden_states.{i}")


def test_bert_model_reads_prefixed_checkpoint(expected):
    model = BertModel.from_pretrained(FIXTURE)  # keys are "bert.*"; the cls.* heads are skipped
    with tl.no_grad():
        last, hs = model(*_inputs(expected), output_hidden_states=True)
        pooled = model.pooler_output(last)
    assert_close(last, expected["last_hidden_state"], "last_hidden_state")
    assert_close(pooled, expected["pooler_output"], "pooler_output")
    for i, h in enumerate(hs):
        assert_close(h, expected[f"hidden_states.{i}"], f"hidden_states.{i}")


def test_qkv_is_query_key_value_stacked():
    hf = serialization.load(FIXTURE / "model.safetensors")
    model = BertModel.from_pretrained(FIXTURE)
    w = model.layers[1].attn.qkv.weight.numpy()
    for j, n in enumerate(("query", "key", "value")):
        assert np.array_equal(w[32 * j:32 * (j + 1)],
                              hf[f"bert.encoder.layer.1.attention.self.{n}.weight"])


def test_save_pretrained_round_trip(tmp_path, expected):
    model = BertForPreTraining.from_pretrained(FIXTURE)
    model.save_pretrained(tmp_path)
    original = serialization.load(FIXTURE / "model.safetensors")
    saved = serialization.load(tmp_path / "model.safetensors")
    assert set(saved) == set(original)
    for k in original:
        assert np.array_equal(saved[k], original[k]), k
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["BertForPreTraining"] and cfg["hidden_size"] == 32
    again = BertForPreTraining.from_pretrained(tmp_path)
    with tl.no_grad():
        out = again(*_inputs(expected))
    assert_close(out.prediction_logits, expected["prediction_logits"], "after round trip")
    # a bare BertModel saves unprefixed names, as HF BertModel does
    body = BertModel.from_pretrained(FIXTURE)
    body.save_pretrained(tmp_path / "body")
    names = set(serialization.load(tmp_path / "body" / "model.safetensors"))
    assert names == {k[len("bert."):] for k in original if k.startswith("bert.")}


def test_old_gamma_beta_names_and_no_prefix(tmp_path, expected):
    hf = serialization.load(FIXTURE / "model.safetensors")
    renamed = {}
    for k, v in hf.items():
        k = k[len("bert."):] if k.startswith("bert.") else k
        if "LayerNorm" in k:
            k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
        renamed[k] = v
    renamed["cls.predictions.decoder.weight"] = hf["bert.embeddings.word_embeddings.weight"]
    serialization.save(renamed, tmp_path / "model.safetensors")
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    model = BertForPreTraining.from_pretrained(tmp_path)
    with tl.no_grad():
        out = model(*_inputs(expected))
    assert_close(out.prediction_logits, expected["prediction_logits"], "gamma/beta checkpoint")


def _broken_copy(tmp_path, edit):
    hf = serialization.load(FIXTURE / "model.safetensors")
    edit(hf)
    serialization.save(hf, tmp_path / "model.safetensors")
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    return tmp_path


def test_missing_key_is_named(tmp_path):
    d = _broken_copy(tmp_path, lambda hf: hf.pop("bert.encoder.layer.1.attention.self.key.bias"))
    with pytest.raises(HFCheckpointError) as e:
        BertModel.from_pretrained(d)
    msg = str(e.value)
    assert "encoder.layer.1.attention.self.key.bias" in msg and "model.safetensors" in msg
    assert "nothing was loaded" in msg


def test_wrong_shape_is_named(tmp_path):
    def edit(hf):
        hf["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((65, 32), np.float32)

    d = _broken_copy(tmp_path, edit)
    with pytest.raises(HFCheckpointError, match=r"intermediate\.dense\.weight.*\(65, 32\)"):
        BertForPreTraining.from_pretrained(d)


def test_unexpected_key_is_named(tmp_path):
    def edit(hf):
        hf["bert.encoder.layer.7.output.dense.weight"] = np.zeros((2, 2), np.float32)

    d = _broken_copy(tmp_path, edit)
    with pytest.raises(HFCheckpointError, match="unexpected keys.*layer.7.output.dense"):
        BertModel.from_pretrained(d)
    BertModel.from_pretrained(d, strict=False)  # ignores it


def test_heads_missing_from_an_encoder_checkpoint(tmp_path):
    body = BertModel.from_pretrained(FIXTURE)
    body.save_pretrained(tmp_path)
    with pytest.raises(HFCheckpointError, match="cls.predictions.bias"):
        BertForPreTraining.from_pretrained(tmp_path)
    model = BertForPreTraining.from_pretrained(tmp_path, strict=False)  # heads stay initialised
    assert np.array_equal(model.bert.pooler.weight.numpy(), body.pooler.weight.numpy())


def test_failed_mapping_leaves_model_unchanged():
    hf = serialization.load(FIXTURE / "model.safetensors")
    hf["bert.pooler.dense.bias"] = np.zeros(3, np.float32)
    model = BertForPreTraining(BertConfig.from_json(FIXTURE))
    before = model.state_dict()
    with pytest.raises(HFCheckpointError, match="pooler.dense.bias"):
        hf_to_tinyllm(hf, model, source="x.safetensors")
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k])


def _with_config(tmp_path, edit):
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    cfg = json.loads((FIXTURE / "config.json").read_text())
    cfg = edit(cfg) or cfg
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


@pytest.mark.parametrize("edit, match", [
    (lambda c: [c], r"config.json: holds a JSON list"),
    (lambda c: c.update(hidden_size="16"), r"'hidden_size' must be an integer, got '16' \(str\)"),
    (lambda c: c.update(layer_norm_eps="x"), r"'layer_norm_eps' must be a number, got 'x'"),
    (lambda c: c.update(is_decoder=True), r"is_decoder=True are not supported"),
    (lambda c: c.update(add_cross_attention=True), r"add_cross_attention=True"),
    (lambda c: c.update(position_embedding_type="relative_key"),
     r"position_embedding_type='relative_key'.*absolute"),
    (lambda c: c.update(chunk_size_feed_forward=4), r"chunk_size_feed_forward=4"),
    (lambda c: c.update(model_type="distilbert"), r"model_type='distilbert'"),
    (lambda c: c.update(hidden_act="swish"), r"hidden_act 'swish' is not supported"),
])
def test_a_bad_or_unsupported_config_is_refused_by_name(tmp_path, edit, match):
    d = _with_config(tmp_path, edit)
    with pytest.raises(HFCheckpointError, match=match) as info:
        BertForPreTraining.from_pretrained(d)
    assert str(d / "config.json") in str(info.value)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, KeyError)


def test_reads_a_real_hf_masked_lm_folder_without_a_pooler():
    """transformers' BertForMaskedLM has no pooler (fixtures/bert_mlm_tiny, made by
    make_bert_mlm_tiny.py): its folder loads, and the logits match transformers'."""
    d = Path(__file__).parent / "fixtures" / "bert_mlm_tiny"
    assert not any("pooler" in k for k in serialization.load(d / "model.safetensors"))
    e = serialization.load(d / "expected.safetensors")
    model = BertForMaskedLM.from_pretrained(d)
    out = model(e["input_ids"], e["attention_mask"])
    assert_close(out.prediction_logits, e["prediction_logits"], "prediction_logits")
    with pytest.raises(HFCheckpointError, match="pooler.dense"):  # NSP needs the pooler
        BertForPreTraining.from_pretrained(d)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        BertModel.from_pretrained(tmp_path / "nope")
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        BertModel.from_pretrained(tmp_path)


def test_roberta_names_round_trip(tmp_path, rng):
    from tinyllm.models.bert import roberta_config

    cfg = roberta_config(vocab_size=40, hidden_size=8, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=16, max_position_embeddings=20)
    model = BertForMaskedLM(cfg).eval()
    hf = tinyllm_to_hf(model)
    assert "roberta.encoder.layer.1.attention.self.value.weight" in hf
    assert {"lm_head.dense.weight", "lm_head.layer_norm.bias", "lm_head.bias"} <= set(hf)
    model.save_pretrained(tmp_path)
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["model_type"] == "roberta"
    again = BertForMaskedLM.from_pretrained(tmp_path)
    assert again.config.position_offset == 2
    ids = rng.integers(3, 40, size=(2, 7))
    ids[1, 5:] = 1
    with tl.no_grad():
        a = model(ids, (ids != 1).astype(np.int64)).prediction_logits.numpy()
        b = again(ids, (ids != 1).astype(np.int64)).prediction_logits.numpy()
    assert np.array_equal(a, b)


def test_untied_decoder_is_refused(tmp_path):
    def edit(hf):
        hf["cls.predictions.decoder.weight"] = hf["bert.embeddings.word_embeddings.weight"] + 1

    d = _broken_copy(tmp_path, edit)
    with pytest.raises(HFCheckpointError, match="decoder.weight.*untied"):
        BertForPreTraining.from_pretrained(d)


def test_masked_lm_skips_the_nsp_head(expected):
    model = BertForMaskedLM.from_pretrained(FIXTURE)
    with tl.no_grad():
        out = model(*_inputs(expected))
    assert out.seq_relationship_logits is None
    assert_close(out.prediction_logits, expected["prediction_logits"], "BertForMaskedLM")
