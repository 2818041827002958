"""BERT / RoBERTa: shapes, masks, positions, errors, gradients vs finite differences, the MLM
head and loss (exercise 11.2) against NumPy, and MLM training on Tang poems."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from helpers import check_param_grads
from test_exercises_bert import np_cross_entropy, np_layer_norm, np_mlm_head
from test_exercises_bert import tiny_config as exercise_tiny_config

import tinyllm as tl
from tinyllm import optim
from tinyllm.models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
    roberta_config,
)


def one_blas_thread():
    """Tiny matrices run fastest on one BLAS thread (and far faster on a busy machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def tiny_config(**kw):
    """The exercise tests' tiny BERT, with two layers unless ``kw`` says otherwise."""
    return exercise_tiny_config(**{"num_hidden_layers": 2, **kw})


def batch(rng, cfg, b=2, t=6):
    ids = rng.integers(1, cfg.vocab_size, size=(b, t))
    mask = np.ones((b, t), dtype=np.int64)
    mask[1, t - 2:] = 0
    ids[1, t - 2:] = cfg.pad_token_id
    tt = np.zeros((b, t), dtype=np.int64)
    tt[:, t // 2:] = 1 if cfg.type_vocab_size > 1 else 0
    return ids, mask, tt


# ------------------------------------------------------------------------------ numpy reference
def np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


# ------------------------------------------------------------------------------ forward
def test_shapes_hidden_states_and_pooler(rng):
    cfg = tiny_config()
    model = BertModel(cfg).eval()
    ids, mask, tt = batch(rng, cfg)
    h = model(ids, mask, tt)
    assert isinstance(h, tl.Tensor) and h.shape == (2, 6, 8) and h.dtype == np.float32
    last, hs = model(ids, mask, tt, output_hidden_states=True)
    assert len(hs) == cfg.num_hidden_layers + 1
    assert np.array_equal(hs[-1].numpy(), last.numpy())
    assert np.allclose(last.numpy(), h.numpy())
    pooled = model.pooler_output(last)
    assert pooled.shape == (2, 8)
    w, b = model.pooler.weight.numpy(), model.pooler.bias.numpy()
    assert np.allclose(pooled.numpy(), np.tanh(last.numpy()[:, 0] @ w.T + b), atol=1e-6)
    assert np.allclose(model.pool(last).numpy(), pooled.numpy())
    # Tensors as inputs work too, and no mask means "attend everywhere"
    h2 = model(tl.tensor(ids), tl.tensor(np.ones_like(mask)), tl.tensor(tt))
    assert np.allclose(h2.numpy(), model(ids, None, tt).numpy(), atol=1e-6)


def test_embeddings_output_is_layernorm_of_sum(rng):
    cfg = tiny_config()
    model = BertModel(cfg).eval()
    ids, mask, tt = batch(rng, cfg)
    _, hs = model(ids, mask, tt, output_hidden_states=True)
    e = model.embeddings
    x = (e.word_embeddings.weight.numpy()[ids] + e.position_embeddings.weight.numpy()[:6]
         + e.token_type_embeddings.weight.numpy()[tt])
    want = np_layer_norm(x, e.ln.weight.numpy(), e.ln.bias.numpy(), cfg.layer_norm_eps)
    assert np.allclose(hs[0].numpy(), want, atol=1e-5)


def test_padding_does_not_change_real_positions(rng, device):
    cfg = tiny_config()
    model = BertModel(cfg).to(device).eval()
    ids = rng.integers(1, cfg.vocab_size, size=(1, 5))
    alone = model(ids, np.ones((1, 5), dtype=np.int64)).numpy()
    padded = np.concatenate([ids, rng.integers(1, cfg.vocab_size, size=(1, 3))], axis=1)
    mask = np.array([[1] * 5 + [0] * 3])
    out = model(padded, mask).numpy()
    assert np.allclose(out[:, :5], alone, atol=1e-5)
    # and the mask matters: without it the padded tokens change the real ones
    assert not np.allclose(model(padded).numpy()[:, :5], alone, atol=1e-3)


def test_roberta_positions_follow_hf_rule(rng):
    cfg = roberta_config(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=12, max_position_embeddings=10,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert cfg.type_vocab_size == 1 and cfg.position_offset == 2 and cfg.pad_token_id == 1
    model = BertForMaskedLM(cfg).eval()
    assert not hasattr(model, "nsp")
    ids = np.array([[0, 5, 6, 7, 2, 1, 1], [0, 8, 9, 10, 11, 12, 2]])
    # HF create_position_ids_from_input_ids: cumsum(ids != pad) * (ids != pad) + pad
    real = (ids != 1).astype(np.int64)
    want = np.cumsum(real, axis=1) * real + 1
    got = model.bert.embeddings.position_ids(ids)
    assert np.array_equal(np.asarray(got), want)
    out = model(ids, attention_mask=real)
    assert out.prediction_logits.shape == (2, 7, 30) and out.seq_relationship_logits is None
    # 8 positions + offset 2 > 10
    with pytest.raises(ValueError, match="longer than"):
        model(np.full((1, 9), 5))
    with pytest.raises(ValueError, match="next-sentence"):
        model(ids, next_sentence_label=np.array([0, 1]))


def test_config_from_dict_ignores_unknown_keys(tmp_path):
    d = {"vocab_size": 50, "hidden_size": 16, "num_attention_heads": 4, "architectures": ["x"],
         "transformers_version": "5", "classifier_dropout": None, "num_hidden_layers": 1}
    cfg = BertConfig.from_dict(d)
    assert cfg.vocab_size == 50 and cfg.hidden_size == 16 and cfg.position_offset == 0
    rob = BertConfig.from_dict({**d, "model_type": "roberta", "pad_token_id": 1})
    assert rob.position_offset == 2
    (tmp_path / "config.json").write_text('{"vocab_size": 7, "hidden_size": 4, '
                                          '"num_attention_heads": 2, "foo": 1}')
    assert BertConfig.from_json(tmp_path).vocab_size == 7
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(vocab_size=5, hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(vocab_size=5, hidden_act="swish")


def test_clear_errors(rng):
    cfg = tiny_config()
    model = BertModel(cfg)
    ids, mask, tt = batch(rng, cfg)
    with pytest.raises(IndexError, match=r"input_ids holds 23, outside \[0, 23\)"):
        model(np.array([[1, 23]]))
    with pytest.raises(IndexError, match="token_type_ids"):
        model(ids, mask, tt * 2)
    with pytest.raises(ValueError, match="longer than"):
        model(np.ones((1, 13), dtype=np.int64))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 5\)"):
        model(ids, mask[:, :5])
    with pytest.raises(TypeError, match="integers"):
        model(ids.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(ids[0])


def test_dropout_only_in_training(rng):
    cfg = tiny_config(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.2)
    model = BertModel(cfg)
    assert model.layers[0].attn.dropout_p == 0.2
    assert model.layers[0].attn.resid_dropout.p == 0.3 and model.layers[0].mlp.dropout.p == 0.3
    ids, mask, tt = batch(rng, cfg)
    a, b = model(ids, mask).numpy(), model(ids, mask).numpy()
    assert not np.allclose(a, b)
    model.eval()
    assert np.array_equal(model(ids, mask).numpy(), model(ids, mask).numpy())


def test_decoder_is_tied_to_word_embeddings(rng):
    cfg = tiny_config()
    model = BertForPreTraining(cfg).eval()
    names = [n for n, _ in model.named_parameters()]
    assert "bert.embeddings.word_embeddings.weight" in names
    assert not any("decoder" in n for n in names)
    ids, mask, tt = batch(rng, cfg)
    labels = np.where(mask == 1, ids, -100)
    out = model(ids, mask, tt, labels=labels)
    out.loss.backward()
    # the word embeddings get gradient from the decoder even for ids not in the input
    unused = sorted(set(range(cfg.vocab_size)) - set(ids.ravel().tolist()))
    g = model.bert.embeddings.word_embeddings.weight.grad
    assert unused and np.abs(g[unused]).sum() > 0


# ------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_bert_model_gradients_match_finite_differences(rng, act):
    cfg = tiny_config(hidden_act=act)
    model = BertModel(cfg).eval().double()
    ids, mask, tt = batch(rng, cfg)
    w = rng.standard_normal((2, 6, 8))
    wp = rng.standard_normal((2, 8))

    def loss_fn():
        h = model(ids, mask, tt)
        return (h * tl.tensor(w)).sum() + (model.pooler_output(h) * tl.tensor(wp)).sum()

    assert loss_fn().dtype == np.float64
    # The exact GELU's erf is a 1.5e-7 approximation, so its derivative is good to ~1e-6.
    n = check_param_grads(model, loss_fn, rng, rtol=1e-4 if act == "gelu" else 1e-5,
                           atol=1e-6 if act == "gelu" else 1e-7)
    assert n > 40


def test_pretraining_gradients_match_finite_differences(rng):
    cfg = tiny_config(hidden_act="gelu_new")
    model = BertForPreTraining(cfg).eval().double()
    ids, mask, tt = batch(rng, cfg)
    labels = np.full_like(ids, -100)
    labels[0, 1], labels[0, 4], labels[1, 2] = 3, 7, 11
    nsp = np.array([0, 1])

    def loss_fn():
        return model(ids, mask, tt, labels=labels, next_sentence_label=nsp).loss

    check_param_grads(model, loss_fn, rng)


# The MLM head and the pre-training loss (exercise 11.2) are tested in test_exercises_bert.py.


def test_bert_for_pretraining_output_and_loss(rng, device):
    cfg = tiny_config()
    model = BertForPreTraining(cfg).to(device).eval()
    ids, mask, tt = batch(rng, cfg)
    labels = np.where(rng.random(ids.shape) < 0.4, ids, -100)
    labels[0, 0] = ids[0, 0]
    nsp = np.array([1, 0])
    out = model(ids, mask, tt, labels=labels, next_sentence_label=nsp)
    assert out.prediction_logits.shape == (2, 6, cfg.vocab_size)
    assert out.seq_relationship_logits.shape == (2, 2)
    h = model.bert(ids, mask, tt).numpy().astype(np.float64)
    emb = model.bert.embeddings.word_embeddings.weight.numpy().astype(np.float64)
    want = np_mlm_head(model.mlm, h, emb, cfg.hidden_act, cfg.layer_norm_eps)
    assert np.allclose(out.prediction_logits.numpy(), want, atol=1e-4)
    pooled = np.tanh(h[:, 0] @ model.bert.pooler.weight.numpy().T + model.bert.pooler.bias.numpy())
    nsp_logits = pooled @ model.nsp.weight.numpy().T + model.nsp.bias.numpy()
    assert np.allclose(out.seq_relationship_logits.numpy(), nsp_logits, atol=1e-5)
    want_loss = np_cross_entropy(want, labels) + np_cross_entropy(nsp_logits, nsp)
    assert np.isclose(out.loss.item(), want_loss, rtol=1e-4)


# ------------------------------------------------------------------------------ training
def _tang_poems():
    from tinyllm.data import load_tang_poems

    try:
        return load_tang_poems(download_missing=False)
    except FileNotFoundError as e:
        pytest.skip(f"tang_poems corpus not available (set TINYLLM_DATA_DIR): {e}")


def test_mlm_loss_falls_on_tang_poems():
    with one_blas_thread():
        _train_mlm_on_tang_poems()


def _train_mlm_on_tang_poems():
    from tinyllm.data import mask_tokens

    poems = _tang_poems()[:300]
    chars = sorted({c for p in poems for c in p.text})
    specials = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
    stoi = {c: i + len(specials) for i, c in enumerate(chars)}
    t = 24
    rows = []
    for p in poems:
        ids = [1] + [stoi[c] for c in p.text[: t - 2]] + [2]
        rows.append(ids + [0] * (t - len(ids)))
    data = np.array(rows, dtype=np.int64)
    cfg = BertConfig(vocab_size=len(stoi) + len(specials), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=t,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    tl.manual_seed(0)
    model = BertForMaskedLM(cfg)
    opt = optim.AdamW(model.parameters(), lr=6e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    eval_ids, eval_labels = mask_tokens(data[:64], cfg.vocab_size, 3, special_ids=(1, 2),
                                        rng=np.random.default_rng(1), pad_token_id=0)

    def eval_loss():
        model.eval()
        with tl.no_grad():
            out = model(eval_ids, (data[:64] != 0).astype(np.int64), labels=eval_labels)
        model.train()
        return out.loss.item()

    start = eval_loss()
    for _ in range(40):
        idx = rng.integers(0, len(data), 16)
        x, y = mask_tokens(data[idx], cfg.vocab_size, 3, special_ids=(1, 2), rng=rng,
                           pad_token_id=0)
        out = model(x, (data[idx] != 0).astype(np.int64), labels=y)
        model.zero_grad()
        out.loss.backward()
        opt.step()
    end = eval_loss()
    assert start > math.log(cfg.vocab_size) - 1.0  # starts near uniform
    assert end < start - 0.8, (start, end)  # deterministic here: about 7.66 -> 6.44
