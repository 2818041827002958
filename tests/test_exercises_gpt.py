"""Exercise tests of lesson 08's GPT: 08.3 ``Block.forward`` (GPT's pre-LN block) and 08.4
``GPT.hidden_states`` / ``GPT.forward`` (token and position embeddings, the blocks, the final
LayerNorm, the tied head).

Each test draws a fresh random configuration, weights and ids from the ``rng`` fixture (the seed
is printed; replay with TINYLLM_TEST_SEED=<seed>) besides one fixed example, and compares with a
GPT-2 forward written here in plain NumPy (float64) from the model's state dict. Nothing here
needs a later exercise: no loss (09.1), no key/value cache (10.2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import backend
from tinyllm.models import GPT, GPTConfig
from tinyllm.models.gpt import Block

_erf = np.vectorize(math.erf)


def assert_close(got, want, what, atol=1e-5):
    got = np.asarray(got.numpy() if isinstance(got, tl.Tensor) else got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: expected shape {want.shape}, got {got.shape}"
    err = np.abs(got - want)
    if not np.all(err <= atol + 1e-5 * np.abs(want)):
        i = np.unravel_index(np.argmax(err), got.shape)
        raise AssertionError(f"{what}: at index {tuple(int(j) for j in i)} expected "
                             f"{want[i]:.6g}, got {got[i]:.6g} (max difference {err.max():.3g}; "
                             f"expected values {np.round(want.ravel()[:4], 4)}, got "
                             f"{np.round(got.ravel()[:4], 4)}, ...)")


# ---------------------------------------------------------------------------- the reference
def np_layer_norm(x, sd, name, eps):
    mu = x.mean(-1, keepdims=True)
    xhat = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return xhat * sd[f"{name}.weight"] + sd.get(f"{name}.bias", 0.0)


def np_linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd.get(f"{name}.bias", 0.0)


def np_activation(x, name):
    if name == "relu":
        return np.maximum(x, 0)
    if name in ("gelu_new", "gelu_tanh"):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def np_block(x, sd, p, cfg, keys=None):
    """GPT-2's block on x (B, T, C): pre-LN causal self-attention, then the MLP, each with a
    residual. ``keys`` (B, T) booleans: the keys that may be attended to (padding False)."""
    b, t, c = x.shape
    h, d = cfg.n_head, c // cfg.n_head
    q, k, v = np.split(np_linear(np_layer_norm(x, sd, f"{p}.ln_1", cfg.layer_norm_eps), sd,
                                 f"{p}.attn.qkv"), 3, axis=-1)
    q, k, v = (a.reshape(b, t, h, d).transpose(0, 2, 1, 3) for a in (q, k, v))
    allowed = np.tril(np.ones((t, t), dtype=bool))[None, None]
    if keys is not None:
        allowed = allowed & keys[:, None, None, :]
    s = np.where(allowed, q @ k.transpose(0, 1, 3, 2) / math.sqrt(d), -1e300)
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    y = (w @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
    x = x + np_linear(y, sd, f"{p}.attn.proj")
    hid = np_activation(np_linear(np_layer_norm(x, sd, f"{p}.ln_2", cfg.layer_norm_eps), sd,
                                  f"{p}.mlp.fc"), cfg.activation)
    return x + np_linear(hid, sd, f"{p}.mlp.proj")


def np_gpt(ids, sd, cfg, embedding_dropout=None):
    """(hidden states after ln_f, logits) of unpadded ids (B, T): positions 0 .. T-1."""
    x = sd["wte.weight"][ids] + sd["wpe.weight"][np.arange(ids.shape[1])]
    if embedding_dropout is not None:
        x = x * embedding_dropout
    for i in range(cfg.n_layer):
        x = np_block(x, sd, f"blocks.{i}", cfg)
    x = np_layer_norm(x, sd, "ln_f", cfg.layer_norm_eps)
    return x, x @ sd["wte.weight"].T


def float64_state(model):
    return {k: v.astype(np.float64) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- random models
def random_config(rng, dropout=0.0, t=None):
    h, d = int(rng.integers(1, 4)), int(rng.integers(2, 5))
    h = max(h, 2) if h * d < 4 else h  # n_embd >= 4: LayerNorm of 1 or 2 channels says little
    t = int(rng.integers(1, 9)) if t is None else t
    return GPTConfig(vocab_size=int(rng.integers(5, 40)), block_size=t + int(rng.integers(0, 4)),
                     n_layer=int(rng.integers(1, 4)), n_head=h, n_embd=h * d, dropout=dropout,
                     bias=bool(rng.random() < 0.7),
                     activation=str(rng.choice(["gelu", "gelu_new", "relu"])))


def randomize(module, rng):
    """Weights of order one, LayerNorm scales away from 1 and shifts away from 0: every term of
    the forward pass visibly changes the output."""
    for name, p in module.named_parameters():
        if "ln" in name and name.endswith("weight"):
            p.data[...] = 1 + 0.5 * rng.standard_normal(p.shape)
        else:
            p.data[...] = rng.normal(0, 0.5, p.shape)
    return module


def random_model(rng, **kw):
    tl.manual_seed(int(rng.integers(2**31)))
    cfg = random_config(rng, **kw)
    return cfg, randomize(GPT(cfg), rng).double().eval()


def left_padded_keys(rng, b, t):
    """(B, T) booleans, True at real tokens: each row padded on the left by 0 .. T-1 positions,
    at least one row with padding whenever T > 1."""
    pad = rng.integers(0, t, size=b)
    if t > 1:
        pad[int(rng.integers(b))] = int(rng.integers(1, t))
    return np.arange(t)[None, :] >= pad[:, None]


# ============================================================================ 08.3 the block
def check_block(block, cfg, x, keys, what):
    """Compare at the real positions (a padding position sees no real key: its output is
    whatever the attention makes of nothing, and nobody reads it)."""
    sd = {f"block.{k}": v for k, v in float64_state(block).items()}
    got = block(tl.tensor(x), None if keys is None else keys[:, None, None, :]).numpy()
    want = np_block(x, sd, "block", cfg, keys)
    if keys is not None:
        got, want = got[keys], want[keys]
    assert_close(got, want, what)


@pytest.mark.exercise("08.3")
def test_block_fixed_example():
    rng = np.random.default_rng(0)
    tl.manual_seed(0)
    cfg = GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=4)
    block = randomize(Block(cfg, 0.01), rng).double().eval()
    x = rng.standard_normal((2, 3, 4))
    check_block(block, cfg, x, None, "Block(x) for x (2, 3, 4), 2 heads: x + attn(ln_1(x)), then "
                "x + mlp(ln_2(x))")


@pytest.mark.exercise("08.3")
@pytest.mark.parametrize("trial", range(4))
def test_block_random(rng, trial):
    tl.manual_seed(int(rng.integers(2**31)))
    cfg = random_config(rng)
    block = randomize(Block(cfg, 0.01), rng).double().eval()
    b, t = int(rng.integers(1, 4)), int(rng.integers(2, 7))
    x = rng.standard_normal((b, t, cfg.n_embd))
    keys = left_padded_keys(rng, b, t) if trial % 2 else None
    check_block(block, cfg, x, keys,
                f"Block(x) for x {x.shape}, {cfg.n_head} heads, activation {cfg.activation}, "
                f"bias={cfg.bias}, {'a padding mask' if keys is not None else 'no mask'}")


@pytest.mark.exercise("08.3")
def test_block_dropout_only_in_training(rng):
    tl.manual_seed(int(rng.integers(2**31)))
    cfg = random_config(rng, dropout=0.5)
    block = randomize(Block(cfg, 0.01), rng).double()
    x = rng.standard_normal((2, 5, cfg.n_embd))
    block.eval()
    check_block(block, cfg, x, None, "Block(x) in eval mode with dropout=0.5 (no dropout in eval)")
    block.train()
    a, b = block(tl.tensor(x)).numpy(), block(tl.tensor(x)).numpy()
    assert not np.allclose(a, b), ("Block(x) in training mode with dropout=0.5 gave the same output "
                                   "twice: the sub-layers' dropout was not applied")


# ============================================================================ 08.4 GPT.forward
@pytest.mark.exercise("08.4")
def test_gpt_fixed_example():
    rng = np.random.default_rng(0)
    tl.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)
    model = randomize(GPT(cfg), rng).double().eval()
    ids = np.array([[1, 5, 2, 9], [0, 10, 10, 3]])
    hidden, logits = np_gpt(ids, float64_state(model), cfg)
    assert_close(model.hidden_states(ids), hidden, "hidden_states(ids) for ids (2, 4): "
                 "ln_f(blocks(wte[ids] + wpe[0..3]))")
    assert_close(model(ids), logits, "GPT(ids) for ids (2, 4): logits = hidden @ wte^T")


@pytest.mark.exercise("08.4")
@pytest.mark.parametrize("trial", range(4))
def test_gpt_random(rng, trial):
    cfg, model = random_model(rng)
    b, t = int(rng.integers(1, 4)), int(rng.integers(1, cfg.block_size + 1))
    ids = rng.integers(0, cfg.vocab_size, size=(b, t))
    hidden, logits = np_gpt(ids, float64_state(model), cfg)
    where = (f"ids {ids.shape}, vocab {cfg.vocab_size}, {cfg.n_layer} blocks, {cfg.n_head} heads, "
             f"n_embd {cfg.n_embd}")
    assert_close(model.hidden_states(ids), hidden,
                 f"hidden_states ({where}): ln_f of the blocks over wte[ids] + wpe[positions]")
    got = model(tl.tensor(ids))
    assert_close(got, logits, f"logits ({where}): the head is tied, logits = hidden @ wte^T")


@pytest.mark.exercise("08.4")
def test_gpt_left_padding_uses_the_mask_positions(rng):
    """A left-padded batch: at its real tokens each row gives what the row alone gives."""
    cfg, model = random_model(rng, t=int(rng.integers(3, 8)))
    b, t = int(rng.integers(2, 5)), cfg.block_size
    ids = rng.integers(0, cfg.vocab_size, size=(b, t))
    keys = left_padded_keys(rng, b, t)
    got = model(ids, attention_mask=keys.astype(np.int64)).numpy()
    sd = float64_state(model)
    for row in range(b):
        _, alone = np_gpt(ids[row:row + 1, keys[row]], sd, cfg)
        assert_close(got[row, keys[row]], alone[0],
                     f"logits of row {row} (left padding {int((~keys[row]).sum())} of {t}) with "
                     "attention_mask: the real tokens' positions are 0, 1, ... (pos, not range(T))")


@pytest.mark.exercise("08.4")
def test_gpt_dropout_on_the_embeddings(rng):
    """Eval: no dropout. Training: ``drop`` on wte[ids] + wpe[pos], the first random draw."""
    cfg, model = random_model(rng, dropout=0.5)
    for m in model.blocks.modules():  # only the embedding dropout stays
        if hasattr(m, "p"):
            m.p = 0.0
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = 0.0
    t = int(rng.integers(min(2, cfg.block_size), cfg.block_size + 1))  # block_size may be 1
    ids = rng.integers(0, cfg.vocab_size, size=(2, t))
    sd = float64_state(model)
    assert_close(model(ids), np_gpt(ids, sd, cfg)[1], "logits in eval mode with dropout=0.5 "
                 "(dropout must be off in eval: use self.drop, not F.dropout)")
    seed = int(rng.integers(2**31))
    model.train()
    tl.manual_seed(seed)
    got = model(ids)
    tl.manual_seed(seed)
    keep = backend.dropout_mask(np, (2, t, cfg.n_embd), 0.5, np.dtype(np.float64))
    assert_close(got, np_gpt(ids, sd, cfg, embedding_dropout=keep)[1],
                 "logits in training mode with dropout=0.5 on the embeddings: "
                 "self.drop(wte[ids] + wpe[pos]), once")
