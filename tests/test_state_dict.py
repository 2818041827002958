"""State dicts and safe weight files: a model's weights survive tl.save / tl.load exactly, a strict
load names every problem and changes nothing, and training resumed from saved model and optimizer
state continues exactly as if it had never stopped."""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm as tl
import tinyllm.functional as F
from tinyllm import nn, optim


class TinyLM(nn.Module):
    """Embedding -> pre-LN block -> LayerNorm -> head tied to the embedding."""

    def __init__(self, vocab=11, d=8, n_head=2, max_len=6, dropout=0.0):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.LearnedPositionalEmbedding(max_len, d)
        self.blocks = nn.ModuleList([nn.TransformerBlock(d, n_head, dropout=dropout)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(idx.shape[1])
        for b in self.blocks:
            x = b(x, is_causal=True)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits, targets)


def _batch(seed, vocab=11, b=3, t=6):
    r = np.random.default_rng(seed)
    return r.integers(0, vocab, (b, t)), r.integers(0, vocab, (b, t))


def test_state_dict_names_are_dotted_and_tied_weights_once():
    m = TinyLM()
    names = list(m.state_dict())
    assert names[:2] == ["wte.weight", "wpe.weight"]
    assert "blocks.0.attn.qkv.weight" in names and "blocks.0.mlp.fc.bias" in names
    assert "head.weight" not in names, "the tied head shares wte.weight and is stored once"
    assert len(names) == len(set(names)) == len(list(m.parameters()))


def test_save_load_file_roundtrip(tmp_path):
    tl.manual_seed(0)
    a = TinyLM()
    path = tmp_path / "model.safetensors"
    tl.save(a.state_dict(), path)
    tl.manual_seed(1)
    b = TinyLM()
    idx, tgt = _batch(0)
    assert a(idx, tgt).item() != b(idx, tgt).item()
    b.load_state_dict(tl.load(path))
    assert a(idx, tgt).item() == b(idx, tgt).item(), "same weights must give the same loss"
    assert b.head.weight is b.wte.weight, "loading must keep the tie"
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)
        assert b.state_dict()[k].dtype == np.float32


def test_failed_file_load_changes_nothing(tmp_path):
    small, big = TinyLM(d=8), TinyLM(d=12, n_head=2)
    path = tmp_path / "big.safetensors"
    tl.save(big.state_dict(), path)
    before = small.state_dict()
    with pytest.raises(KeyError) as info:
        small.load_state_dict(tl.load(path))
    assert "wte.weight: expected (11, 8), got (11, 12)" in str(info.value)
    for k, v in small.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a failed load")


def test_missing_and_unexpected_keys_in_a_file(tmp_path):
    m = TinyLM()
    sd = m.state_dict()
    sd.pop("ln_f.bias")
    sd["lm_head.weight"] = np.zeros((11, 8), np.float32)
    path = tmp_path / "odd.safetensors"
    tl.save(sd, path)
    with pytest.raises(KeyError) as info:
        TinyLM().load_state_dict(tl.load(path))
    msg = str(info.value)
    assert "missing keys: ln_f.bias" in msg and "unexpected keys: lm_head.weight" in msg, msg
    missing, unexpected = TinyLM().load_state_dict(tl.load(path), strict=False)
    assert (missing, unexpected) == (["ln_f.bias"], ["lm_head.weight"])


def _run(model, opt, sched, seeds):
    losses = []
    for s in seeds:
        idx, tgt = _batch(s)
        loss = model(idx, tgt)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def _make(seed):
    tl.manual_seed(seed)
    model = TinyLM()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=3e-3,
                      weight_decay=0.1)
    sched = optim.CosineWithWarmup(opt, 3e-3, 3e-4, 2, 8)
    return model, opt, sched


def test_resume_from_saved_state_continues_identically(tmp_path):
    model, opt, sched = _make(0)
    first = _run(model, opt, sched, range(3))
    tl.save(model.state_dict(), tmp_path / "ckpt.safetensors")
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    rest = _run(model, opt, sched, range(3, 7))
    assert rest[-1] < first[0], "training should lower the loss"

    model2, opt2, sched2 = _make(99)  # different initial weights, fresh optimizer
    model2.load_state_dict(tl.load(tmp_path / "ckpt.safetensors"))
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    rest2 = _run(model2, opt2, sched2, range(3, 7))
    assert rest2 == rest, f"resumed losses {rest2} differ from the uninterrupted {rest}"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(model2.state_dict()[k], v, err_msg=k)
