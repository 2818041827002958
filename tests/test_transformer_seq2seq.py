"""The encoder-decoder Transformer: masks, cross-attention, gradients, decoding, PyTorch parity."""


import numpy as np
import pytest
from helpers import check_param_grads

import tinyllm as tl
from tinyllm.models.generation import beam_search
from tinyllm.models.transformer import (
    Transformer,
    TransformerConfig,
)

PAD, BOS, EOS = 0, 1, 2


def tiny(seed=0, src_vocab_size=11, tgt_vocab_size=11, device="cpu", **kw):
    tl.manual_seed(seed)
    args = dict(d_model=16, n_head=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=32,
                dropout=0.0, max_len=32)
    args.update(kw)
    return Transformer(TransformerConfig(src_vocab_size, tgt_vocab_size, **args)).to(device).eval()


def batch(rng, b=3, s=6, t=5, vocab=11, min_len=1):
    """Right-padded random source and target ids (no special ids inside)."""
    src = np.full((b, s), PAD, dtype=np.int64)
    tgt = np.full((b, t), PAD, dtype=np.int64)
    for i in range(b):
        ls, lt = rng.integers(min_len, s + 1), rng.integers(min_len, t + 1)
        src[i, :ls] = rng.integers(3, vocab, size=ls)
        tgt[i, 0] = BOS
        tgt[i, 1:lt] = rng.integers(3, vocab, size=lt - 1)
    src[0, :] = rng.integers(3, vocab, size=s)  # one full row
    return src, tgt


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, words", [
    (dict(d_model=30, n_head=4), "divisible"),
    (dict(dropout=1.0), "dropout"),
    (dict(activation="swish"), "activation"),
    (dict(share_embeddings=True, src_vocab_size=12), "share_embeddings"),
    (dict(eos_id=11), "eos_id"),
    (dict(bos_id=0), "differ"),
    (dict(n_head=0), "n_head"),
])
def test_config_rejects_bad_values(kw, words):
    args = dict(src_vocab_size=11, tgt_vocab_size=11)
    args.update(kw)
    with pytest.raises(ValueError, match=words):
        TransformerConfig(**args)


def test_bad_inputs_get_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match="batch size"):
        m(np.ones((2, 3), dtype=np.int64), np.ones((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="integer"):
        m.encode(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="src_mask must be boolean"):
        m.encode(np.ones((2, 3), dtype=np.int64), src_mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match="max_len"):
        m.generate(np.ones((1, 3), dtype=np.int64), 100)


# The masks (exercise 12.2) and cross-attention (12.1) are tested against NumPy references in
# test_exercises_seq2seq.py; this file tests the model built from them.


# ---------------------------------------------------------------------------- the model
def test_loss_ignores_padding(rng):
    m = tiny()
    src, tgt_in = batch(rng)
    tgt_out = np.where(tgt_in != PAD, rng.integers(3, 11, size=tgt_in.shape), PAD)
    logits, loss = m(src, tgt_in, tgt_out)
    lg = logits.numpy().astype(np.float64)
    lp = lg - lg.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    keep = tgt_out != PAD
    picked = np.take_along_axis(lp, tgt_out[..., None], -1)[..., 0]
    assert loss.item() == pytest.approx(-picked[keep].mean(), rel=1e-5)


@pytest.mark.parametrize("variant", [
    dict(norm_first=False), dict(norm_first=True),
    dict(share_embeddings=True, tie_output=False, activation="gelu"),
])
def test_gradients_match_finite_differences(rng, variant):
    m = tiny(seed=3, d_model=8, n_head=2, num_encoder_layers=1,
             num_decoder_layers=1, d_ff=12, **variant).double()
    src, tgt_in = batch(rng, b=2, s=4, t=4)
    tgt_out = np.where(tgt_in != PAD, rng.integers(2, 11, size=tgt_in.shape), PAD)
    check_param_grads(m, lambda: m(src, tgt_in, tgt_out)[1], rng, rtol=1e-4, atol=1e-7)


def test_decoder_is_causal_and_source_padding_is_ignored(rng):
    m = tiny(seed=4)
    src, tgt_in = batch(rng, b=3, s=6, t=6, min_len=2)
    tgt_in[:, :] = rng.integers(3, 11, size=tgt_in.shape)
    tgt_in[:, 0] = BOS
    base = m(src, tgt_in).numpy()
    for pos in range(1, 6):
        changed = tgt_in.copy()
        changed[:, pos] = 3 + (changed[:, pos] - 2) % 8
        out = m(src, changed).numpy()
        np.testing.assert_allclose(out[:, :pos], base[:, :pos], atol=1e-5)
        assert not np.allclose(out[:, pos:], base[:, pos:])
    # a padded source position: whatever id it holds (with its mask), nothing changes
    src[2, -1] = PAD  # row 0 is full; make sure one row has padding whatever the seed
    base = m(src, tgt_in).numpy()
    row = next(i for i in range(3) if (src[i] == PAD).any())
    j = int(np.flatnonzero(src[row] == PAD)[0])
    mask = src != PAD
    other = src.copy()
    other[row, j] = 7
    a = m.decode(tgt_in, m.encode(src, mask), mask).numpy()
    b = m.decode(tgt_in, m.encode(other, mask), mask).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, base, atol=1e-5)
    # and adding padding at the end changes nothing either
    padded = np.concatenate([src, np.zeros((3, 2), dtype=src.dtype)], axis=1)
    np.testing.assert_allclose(m(padded, tgt_in).numpy(), base, atol=1e-5)


def test_incremental_decoding_matches_full_decoding(rng, device):
    m = tiny(seed=5, norm_first=True, device=device)
    src, _ = batch(rng, b=2, s=5)
    tgt = np.concatenate([np.full((2, 1), BOS), rng.integers(3, 11, size=(2, 5))], axis=1)
    mask = src != PAD
    memory = m.encode(src, mask)
    full = m.decode(tgt, memory, mask).numpy()
    cache = m.new_cache(8)
    steps = [m.decode(tgt[:, :2], memory, mask, cache=cache).numpy()]  # a two-token prefix
    steps += [m.decode(tgt[:, i:i + 1], memory, mask, cache=cache).numpy() for i in range(2, 6)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    assert cache.length == 6


@pytest.fixture(scope="module")
def half_trained():
    """Models trained for 40 steps on reversing digits (under a second each): unlike random
    ones, their outputs depend on the source and end at different steps."""
    from tinyllm.data.seq2seq import DigitVocab, collate_seq2seq, synthetic_seq2seq
    from tinyllm.optim import AdamW

    models = {}
    for norm_first in (False, True):
        tl.manual_seed(0)
        rng = np.random.default_rng(0)
        m = Transformer(TransformerConfig(DigitVocab.size, DigitVocab.size, d_model=16, n_head=2,
                                          d_ff=32, dropout=0.0, max_len=32, norm_first=norm_first))
        opt = AdamW(m.parameters(), lr=1e-2)
        for _ in range(40):
            b = collate_seq2seq(synthetic_seq2seq(32, "reverse", 2, 6, rng), PAD, BOS, EOS)
            _, loss = m(b["src"], b["tgt_in"], b["tgt_out"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        models[norm_first] = m.eval()
    src = collate_seq2seq(synthetic_seq2seq(12, "reverse", 2, 7, np.random.default_rng(5)),
                          PAD, BOS, EOS)["src"]
    return models, src


@pytest.mark.parametrize("norm_first", [False, True])
def test_generation_with_and_without_cache_is_identical(half_trained, norm_first):
    models, src = half_trained
    m = models[norm_first]
    for beams in (1, 3):
        a = m.generate(src, 10, num_beams=beams, use_cache=True)
        b = m.generate(src, 10, num_beams=beams, use_cache=False)
        assert isinstance(a, np.ndarray) and a.dtype == np.int64
        assert (a == EOS).any(axis=1).mean() > 0.5, a  # the test needs rows that finish
        np.testing.assert_array_equal(a, b)
    tiny_random = tiny(seed=6, norm_first=norm_first)
    for beams in (1, 3):
        np.testing.assert_array_equal(tiny_random.generate(src % 11, 6, num_beams=beams),
                                      tiny_random.generate(src % 11, 6, num_beams=beams,
                                                           use_cache=False))


def seq2seq_beam_search(m, src, max_new_tokens, num_beams, length_penalty):
    """The decoding engine's beam search on the encoder-decoder's hooks, as generate runs it."""
    mask = (src != PAD)[:, None, None, :]
    with tl.no_grad():
        memory = m.encode(src, mask)
        bos = np.full((len(src), 1), BOS)
        seqs, _ = beam_search(m, bos, max_new_tokens, num_beams, length_penalty=length_penalty,
                              eos=[EOS], pad=PAD, suppress_tokens=[PAD, BOS],
                              model_kwargs={"memory": memory, "src_mask": mask})
    return seqs[:, 1:]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_search_with_one_beam_is_greedy(half_trained, length_penalty):
    models, src = half_trained
    for m in models.values():
        greedy = m.generate(src, 9)
        assert len({int(np.argmax(r == EOS)) for r in greedy}) > 1  # rows end at different steps
        np.testing.assert_array_equal(
            seq2seq_beam_search(m, src, 9, num_beams=1, length_penalty=length_penalty), greedy)


def test_sampling_first_token_follows_the_softmax(rng):
    """Sampled first tokens, counted over many copies of one source, match softmax(logits / T)
    after top-k (an independent check of temperature, top-k and the draw itself)."""
    m = tiny(seed=int(rng.integers(1 << 20)))
    src = np.repeat(rng.integers(3, 11, (1, 5)), 4000, axis=0)
    temperature, k = float(rng.uniform(0.5, 2.0)), 5
    first = m.generate(src, 1, do_sample=True, temperature=temperature, top_k=k, seed=1)[:, 0]
    lg = m(src[:1], np.array([[BOS]])).numpy()[0, -1].astype(np.float64)
    lg[[PAD, BOS]] = -np.inf
    lg /= temperature
    keep = np.argsort(lg)[-k:]
    p = np.zeros_like(lg)
    p[keep] = np.exp(lg[keep] - lg[keep].max())
    p /= p.sum()
    freq = np.bincount(first, minlength=len(p)) / len(first)
    assert set(np.flatnonzero(freq)) <= set(keep.tolist())
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / len(first)))  # 4 sigma


def test_sampling_is_seeded_and_top_k_one_is_greedy(half_trained):
    models, src = half_trained
    m = models[True]
    a = m.generate(src, 9, do_sample=True, temperature=1.5, seed=3)
    np.testing.assert_array_equal(a, m.generate(src, 9, do_sample=True, temperature=1.5, seed=3))
    assert (a != m.generate(src, 9, do_sample=True, temperature=1.5, seed=4)).any()
    np.testing.assert_array_equal(m.generate(src, 9, do_sample=True, top_k=1, seed=5),
                                  m.generate(src, 9))
    with pytest.raises(ValueError, match="temperature"):
        m.generate(src, 9, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="beam"):
        m.generate(src, 9, do_sample=True, num_beams=2)


def _sequence_logprob(m, src, seq):
    """Teacher-forced sum of log-probabilities of ``seq`` (ids after bos, up to eos)."""
    tgt_in = np.array([[BOS, *seq[:-1]]])
    lg = m(src[None], tgt_in).numpy()[0].astype(np.float64)
    lg[:, [PAD, BOS]] = -np.inf  # as generation does
    lp = lg - lg.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    return lp[np.arange(len(seq)), seq].sum()


def test_generated_rows_end_at_eos_and_beam_scores_at_least_greedy(half_trained):
    models, src = half_trained
    m = models[False]
    greedy = m.generate(src, 9)
    beam = m.generate(src, 9, num_beams=4)
    assert (greedy != beam).any()  # otherwise the comparison below says little
    for out in (greedy, beam):
        for row in out:
            ends = np.flatnonzero(row == EOS)
            end = ends[0] if len(ends) else len(row)
            assert (row[end + 1:] == PAD).all()
            assert (row[:end] > EOS).all()

    def upto_eos(r):
        ends = np.flatnonzero(r == EOS)
        return list(r[:ends[0] + 1]) if len(ends) else list(r)

    for i in range(len(src)):
        seqs = [upto_eos(greedy[i]), upto_eos(beam[i])]
        g, b = (_sequence_logprob(m, src[i], s) / len(s) for s in seqs)
        assert b >= g - 1e-6


# ---------------------------------------------------------------------------- PyTorch
@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first, activation", [(False, "relu"), (True, "gelu")])
def test_matches_torch_transformer(rng, norm_first, activation, device):
    torch = pytest.importorskip("torch")
    c, h, ff, n = 16, 4, 24, 2
    m = tiny(seed=8, d_model=c, n_head=h, d_ff=ff, num_encoder_layers=n, num_decoder_layers=n,
             norm_first=norm_first, activation=activation, final_norm=True, device=device)
    tt = torch.nn.Transformer(d_model=c, nhead=h, num_encoder_layers=n, num_decoder_layers=n,
                              dim_feedforward=ff, dropout=0.0, activation=activation,
                              batch_first=True, norm_first=norm_first)
    tt.train()  # dropout is 0; training mode keeps the encoder off its nested-tensor fast path
    sd = {k: torch.tensor(v) for k, v in m.state_dict().items()}

    def put(param, value):
        assert tuple(param.shape) == tuple(value.shape)
        param.copy_(value)

    def ffn_norms(tl_pre, t_layer, norms):
        put(t_layer.linear1.weight, sd[f"{tl_pre}.mlp.fc.weight"])
        put(t_layer.linear1.bias, sd[f"{tl_pre}.mlp.fc.bias"])
        put(t_layer.linear2.weight, sd[f"{tl_pre}.mlp.proj.weight"])
        put(t_layer.linear2.bias, sd[f"{tl_pre}.mlp.proj.bias"])
        for t_norm, ours in norms:
            put(getattr(t_layer, t_norm).weight, sd[f"{tl_pre}.{ours}.weight"])
            put(getattr(t_layer, t_norm).bias, sd[f"{tl_pre}.{ours}.bias"])

    def self_attn(tl_pre, t_attn):
        put(t_attn.in_proj_weight, sd[f"{tl_pre}.attn.qkv.weight"])
        put(t_attn.in_proj_bias, sd[f"{tl_pre}.attn.qkv.bias"])
        put(t_attn.out_proj.weight, sd[f"{tl_pre}.attn.proj.weight"])
        put(t_attn.out_proj.bias, sd[f"{tl_pre}.attn.proj.bias"])

    with torch.no_grad():
        for i, layer in enumerate(tt.encoder.layers):
            self_attn(f"encoder.{i}", layer.self_attn)
            ffn_norms(f"encoder.{i}", layer, [("norm1", "ln_1"), ("norm2", "ln_2")])
        for i, layer in enumerate(tt.decoder.layers):
            p = f"decoder.{i}"
            self_attn(p, layer.self_attn)
            ca = layer.multihead_attn  # torch's in_proj = [q; k; v], ours: q and kv = [k; v]
            put(ca.in_proj_weight, torch.cat([sd[f"{p}.cross_attn.q.weight"],
                                              sd[f"{p}.cross_attn.kv.weight"]]))
            put(ca.in_proj_bias, torch.cat([sd[f"{p}.cross_attn.q.bias"],
                                            sd[f"{p}.cross_attn.kv.bias"]]))
            put(ca.out_proj.weight, sd[f"{p}.cross_attn.proj.weight"])
            put(ca.out_proj.bias, sd[f"{p}.cross_attn.proj.bias"])
            ffn_norms(p, layer, [("norm1", "ln_1"), ("norm2", "ln_cross"), ("norm3", "ln_2")])
        for t_norm, ours in ((tt.encoder.norm, "encoder_norm"), (tt.decoder.norm, "decoder_norm")):
            put(t_norm.weight, sd[f"{ours}.weight"])
            put(t_norm.bias, sd[f"{ours}.bias"])

    src, tgt_in = batch(rng, b=3, s=7, t=6)
    ours = m(src, tgt_in).numpy()
    xs = m.embed(tl.tensor(src, device=device), m.src_embed).numpy()
    xt = m.embed(tl.tensor(tgt_in, device=device), m.tgt_embed).numpy()
    t = tgt_in.shape[1]
    with torch.no_grad():
        out = tt(torch.tensor(xs), torch.tensor(xt),
                 tgt_mask=torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1),
                 src_key_padding_mask=torch.tensor(src == PAD),
                 tgt_key_padding_mask=torch.tensor(tgt_in == PAD),
                 memory_key_padding_mask=torch.tensor(src == PAD))
    want = out.numpy() @ m.tgt_embed.weight.numpy().T
    np.testing.assert_allclose(ours, want, atol=2e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- training
@pytest.mark.slow
def test_learns_to_reverse_digits():
    from tinyllm.train.seq2seq import train_synthetic

    result = train_synthetic("reverse", steps=250, n_eval=300, verbose=False)
    assert result["accuracy"] > 0.9, result["accuracy"]
