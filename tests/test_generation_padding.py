"""Generation of a padded batch (``attention_mask``: left-padded rows generate what they would
alone, against transformers too), logits that hold no valid token, and the causal mask's bounded
memory. Greedy decoding, sampling and beam search are in test_generation.py."""

import numpy as np
import pytest
from test_generation import prompt, tiny

import tinyllm as tl
from tinyllm.models import generate


# ---------------------------------------------------------------------------- attention_mask
def _left_pad(prompts, pad_id=0):
    """A left-padded batch (B, T) of the prompts and its attention mask (1 at real tokens)."""
    t = max(len(p) for p in prompts)
    ids = np.full((len(prompts), t), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), t), dtype=np.int64)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):], mask[i, t - len(p):] = p, 1
    return ids, mask


def _row_new_tokens(out, start):
    """The generated part of each row, without the trailing eos padding (as a list)."""
    return [list(r[start:]) for r in out]


@pytest.mark.parametrize("kw", [
    dict(),
    dict(num_beams=3, num_return_sequences=2),
    dict(eos_token_id=4, pad_token_id=0),
    dict(num_beams=2, eos_token_id=4, pad_token_id=1),
])
@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_rows_generate_what_they_would_alone(rng, kw, use_cache):
    """Each row of a left-padded batch, with its attention mask, continues exactly as the row
    alone: positions from the mask, padded keys hidden (greedy and beam search)."""
    model = tiny(int(rng.integers(1 << 20)), block_size=24).double()
    prompts = [rng.integers(1, 13, size=int(rng.integers(1, 7))) for _ in range(4)]
    prompts[int(rng.integers(4))] = rng.integers(1, 13, size=7)  # one row without padding
    ids, mask = _left_pad(prompts, pad_id=int(rng.integers(13)))
    new = 10
    batch = model.generate(ids, new, attention_mask=mask, use_cache=use_cache, **kw)
    nrs = kw.get("num_return_sequences", 1)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], new, use_cache=use_cache, **kw)
        rows = batch[i * nrs:(i + 1) * nrs]
        for got, want in zip(rows, alone):
            want_new = list(want[len(p):])
            got_new = list(got[ids.shape[1]:])
            assert got_new[:len(want_new)] == want_new, (i, got_new, want_new)
            pad = kw.get("pad_token_id", 0) if not kw.get("num_beams") else \
                (kw.get("pad_token_id") or kw.get("eos_token_id", 0))
            assert all(t == pad for t in got_new[len(want_new):]), (i, got_new)


def test_left_padded_sampling_matches_the_unpadded_batch(rng):
    """Prompts of one length, padded on the left by different amounts: with the same seed, the
    samples equal those of the unpadded batch (one random draw per row and step either way)."""
    model = tiny(int(rng.integers(1 << 20)), block_size=24).double()
    x = prompt(rng, b=3, t=5)
    pads = rng.integers(0, 6, size=3)
    pads[0] = 0
    ids, mask = _left_pad([np.concatenate([np.full(k, 7), r]) for k, r in zip(pads, x)])
    mask[:, :] = 0
    mask[:, ids.shape[1] - 5:] = 1  # only the prompt's own tokens are real (the 7s are padding)
    for use_cache in (True, False):
        kw = dict(do_sample=True, top_k=6, temperature=1.3, seed=int(rng.integers(1 << 20)),
                  use_cache=use_cache)
        padded = model.generate(ids, 12, attention_mask=mask, **kw)[:, ids.shape[1]:]
        np.testing.assert_array_equal(padded, model.generate(x, 12, **kw)[:, 5:])


def test_attention_mask_of_ones_changes_nothing(rng):
    model = tiny(11)
    x = prompt(rng, b=3, t=5)
    for kw in (dict(), dict(num_beams=3), dict(do_sample=True, seed=1)):
        np.testing.assert_array_equal(model.generate(x, 8, attention_mask=np.ones_like(x), **kw),
                                      model.generate(x, 8, **kw))


def test_attention_mask_errors(rng):
    model = tiny()
    x = prompt(rng)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\)"):
        model.generate(x, 2, attention_mask=np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        model.generate(x, 2, attention_mask=np.array([[1, 1, 1, 1], [0, 0, 0, 0]]))
    with pytest.raises(TypeError, match="attention_mask must be boolean"):
        model.generate(x, 2, attention_mask=np.ones(x.shape))


@pytest.mark.torch
def test_padded_gpt_matches_transformers(rng):
    """The positions and masks of a left-padded batch as transformers' GPT-2 computes them."""
    transformers = pytest.importorskip("transformers")  # first: CI has no transformers
    torch = pytest.importorskip("torch")

    model = tiny(int(rng.integers(1 << 20)), activation="gelu_new")
    cfg = model.config
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
        bos_token_id=None, eos_token_id=None))
    from tinyllm.models.hf_gpt2 import tinyllm_to_hf

    sd = {k: torch.from_numpy(v) for k, v in tinyllm_to_hf(model.state_dict(), cfg.n_layer).items()}
    assert hf.load_state_dict(sd, strict=False).missing_keys == ["lm_head.weight"]  # tied
    hf.eval()
    ids, mask = _left_pad([rng.integers(1, 13, size=int(rng.integers(1, 6))) for _ in range(3)])
    for kw in (dict(), dict(num_beams=3)):
        want = hf.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                           max_new_tokens=6, do_sample=False, pad_token_id=0, **kw).numpy()
        np.testing.assert_array_equal(model.generate(ids, 6, attention_mask=mask, **kw), want)


# ---------------------------------------------------------------------------- no silent tokens
class _Table(tl.nn.Module):
    """A protocol model whose next-token logits are one fixed row (with NaN or inf in it)."""

    block_size = None

    def __init__(self, row):
        super().__init__()
        self.row = np.asarray(row, dtype=np.float64)

    def next_token_logits(self, ids, kv_caches=None):
        return np.tile(self.row, (len(ids), 1))


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, r"\+inf"),
                                       ("all -inf", "only -inf")])
@pytest.mark.parametrize("kw", [dict(), dict(do_sample=True, seed=0), dict(num_beams=2)])
def test_non_finite_logits_raise(bad, word, kw):
    row = np.array([0.0, 1.0, 2.0, 0.5])
    if bad == "all -inf":
        row[:] = -np.inf
    else:
        row[1] = bad
    with pytest.raises(ValueError, match=word):
        generate(_Table(row), np.array([[0]]), 3, **kw)
    if bad == "all -inf":  # one -inf is a token ruled out, not an error
        out = generate(_Table([0.1, -np.inf, 0.2, 0.0]), np.array([[0]]), 40, **kw)[0, 1:]
        out = out.tolist()
        assert 1 not in out, f"token 1 (logit -inf) was generated: {out}"
        if kw.get("do_sample"):  # close logits: the draws visit the other tokens
            assert len(set(out)) > 1, f"40 draws from near-equal logits all gave {out[0]}"
        else:  # greedy and beams: the best finite token every step
            assert out == [2] * 40, out


def test_nan_weights_raise_instead_of_token_zero(rng):
    model = tiny(12)
    model.ln_f.weight.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.generate(prompt(rng), 3)


@pytest.mark.parametrize("kw, match", [
    (dict(eos_token_id=13), "eos_token_id"),
    (dict(eos_token_id=[2, 99]), "token id 99"),
    (dict(pad_token_id=13, eos_token_id=2), "pad_token_id"),
    (dict(num_beams=2, eos_token_id=20), "eos_token_id"),
])
def test_special_ids_outside_the_vocabulary_are_refused(rng, kw, match):
    with pytest.raises(ValueError, match=match):
        tiny().generate(prompt(rng), 3, **kw)


# ---------------------------------------------------------------------------- the causal mask
def test_causal_mask_memory_stays_bounded(rng):
    """Generating without the cache at block_size 1,024 asks the attention for a causal mask of
    every (T, T) up to 1,024: they are all views of one float32 bias square of 4 MiB (1,024^2)."""
    from tinyllm import attention

    attention._causal_cache.clear()
    model = tiny(13, block_size=1024, n_layer=1, n_head=1, n_embd=4)
    x = rng.integers(0, 13, size=(1, 990))
    model.generate(x, 34, use_cache=False)
    nbytes = sum(a.nbytes for a in attention._causal_cache.values())
    assert nbytes <= 4 * 1024 * 1024, f"the causal masks hold {nbytes / 2**20:.1f} MiB"
    q = tl.tensor(rng.standard_normal((1, 1, 7, 4)).astype(np.float32))
    for s in range(7, 300, 13):  # many (T, S) shapes, with a cache's longer keys
        k = tl.tensor(rng.standard_normal((1, 1, s, 4)).astype(np.float32))
        tl.functional.scaled_dot_product_attention(q, k, k, is_causal=True)
    assert len(attention._causal_cache) == 1
    assert sum(a.nbytes for a in attention._causal_cache.values()) == nbytes
