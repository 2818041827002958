"""GPT: config checks, shapes, initialisation, gradients (finite differences and PyTorch),
causality, overfitting one batch, the optimizer groups."""

import math

import numpy as np
import pytest
from helpers import check_param_grads, to_numpy

import tinyllm as tl
from tinyllm.models import GPT, PRESETS, GPTConfig

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def tiny(seed=0, device="cpu", **kw):
    tl.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw})).to(device)


def ids(rng, b, t, v=TINY["vocab_size"]):
    return rng.integers(0, v, size=(b, t))


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, match", [
    (dict(n_embd=10, n_head=4), "divisible"),
    (dict(n_layer=0), "n_layer"),
    (dict(vocab_size=-3), "vocab_size"),
    (dict(block_size=2.5), "block_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(activation="swish"), "activation"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps"),
])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**TINY, **kw})


def test_presets():
    baby = GPTConfig.from_preset("baby-shakespeare", vocab_size=65)
    sizes = lambda c: (c.block_size, c.n_layer, c.n_head, c.n_embd, c.dropout)
    assert sizes(baby) == (64, 4, 4, 128, 0.0)
    big = GPTConfig.from_preset("shakespeare-char", vocab_size=65)
    assert sizes(big) == (256, 6, 6, 384, 0.2)
    assert GPTConfig.from_preset("shakespeare-char", vocab_size=65, dropout=0.0).dropout == 0.0
    assert set(PRESETS) >= {"baby-shakespeare", "shakespeare-char"}
    from tinyllm.train.presets import preset_config

    train_cfg = preset_config("shakespeare-char")  # the trainer's preset uses the same architecture
    assert (train_cfg.block_size, train_cfg.n_layer, train_cfg.n_head, train_cfg.n_embd) == sizes(big)[:4]
    assert train_cfg.lr == 1e-3
    # 12 C^2 per block + embeddings + biases and LayerNorms: nanoGPT's 10.65M for shakespeare-char
    n = 6 * (12 * 384**2 + 13 * 384) + 65 * 384 + 256 * 384 + 2 * 384
    assert GPT(big).num_parameters() == n
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig.from_preset("baby-shakespeare")
    with pytest.raises(KeyError, match="baby-shakespeare"):
        GPTConfig.from_preset("huge")
    with pytest.raises(TypeError, match="n_layers"):
        GPTConfig.from_preset("baby-shakespeare", vocab_size=65, n_layers=3)


# ---------------------------------------------------------------------------- forward
def test_shapes_and_loss(rng, device):
    model = tiny(device=device)
    x, y = ids(rng, 3, 7), ids(rng, 3, 7)
    logits = model(x)
    assert isinstance(logits, tl.Tensor) and logits.shape == (3, 7, 11)
    logits2, loss = model(tl.tensor(x, device=device), targets=y)  # a Tensor of ids works too
    np.testing.assert_array_equal(logits.numpy(), logits2.numpy())
    lp = logits.numpy().astype(np.float64)
    lp -= lp.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(lp, y[..., None], -1)[..., 0]
    assert loss.item() == pytest.approx(nll.mean(), rel=1e-5)
    y[0, :4] = -100  # ignored positions
    _, loss = model(x, y)
    assert loss.item() == pytest.approx(nll[y != -100].mean(), rel=1e-5)


def test_input_errors(rng):
    model = tiny()
    with pytest.raises(ValueError, match=r"length 9.*block_size=8"):
        model(ids(rng, 1, 9))
    bad = ids(rng, 2, 4)
    bad[1, 2] = 11
    with pytest.raises(ValueError, match=r"token id 11 .*\[0, 11\)"):
        model(bad)
    bad[1, 2] = -1
    with pytest.raises(ValueError, match="token id -1"):
        model(bad)
    with pytest.raises(TypeError, match="integers"):
        model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(np.zeros(3, dtype=np.int64))


def test_init_and_tied_head(rng):
    cfg = dict(vocab_size=300, block_size=64, n_layer=4, n_head=4, n_embd=64)
    a, b = tiny(7, **cfg), tiny(7, **cfg)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and np.array_equal(pa, pb)  # seeded: reproducible
    sd = a.state_dict()
    assert np.std(sd["wte.weight"]) == pytest.approx(0.02, rel=0.05)
    assert np.std(sd["blocks.0.attn.qkv.weight"]) == pytest.approx(0.02, rel=0.05)
    proj = 0.02 / math.sqrt(2 * 4)
    assert np.std(sd["blocks.3.attn.proj.weight"]) == pytest.approx(proj, rel=0.1)
    assert np.std(sd["blocks.1.mlp.proj.weight"]) == pytest.approx(proj, rel=0.05)
    assert not sd["blocks.2.mlp.fc.bias"].any() and (sd["ln_f.weight"] == 1).all()
    assert "lm_head.weight" not in sd  # tied: the head is wte
    # logits = ln_f(h) @ wte^T: changing wte's row v moves the logit of v
    model = tiny()
    x = ids(rng, 1, 5)
    before = model(x).numpy()
    model.wte.weight.data[3] += rng.normal(size=8).astype(np.float32)
    after = model(x).numpy()
    assert not np.allclose(before[..., 3], after[..., 3])


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kw", [dict(), dict(bias=False, activation="gelu_new")])
def test_gradients_finite_differences(rng, kw):
    model = tiny(1, **kw).double()
    x, y = ids(rng, 2, 6), ids(rng, 2, 6)
    y[0, 0] = -100
    check_param_grads(model, lambda: model(x, y)[1], rng, rtol=1e-4, atol=1e-8)


def test_float32_gradients_stay_float32(rng, device):
    model = tiny(2, device, dropout=0.1)
    _, loss = model(ids(rng, 2, 8), ids(rng, 2, 8))
    assert loss.dtype == np.float32
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == np.float32, name


@pytest.mark.parametrize("bias", [True, False])
def test_causal(rng, bias, device):
    model = tiny(3, device, bias=bias)
    x = ids(rng, 2, 8)
    base = model(x).numpy()
    for t in range(7):
        y = x.copy()
        y[:, t + 1:] = (y[:, t + 1:] + 1 + rng.integers(0, 10, size=y[:, t + 1:].shape)) % 11
        moved = model(y).numpy()
        np.testing.assert_array_equal(moved[:, :t + 1], base[:, :t + 1])
        assert not np.allclose(moved[:, t + 1:], base[:, t + 1:])


def test_overfits_one_batch(rng):
    model = tiny(4, vocab_size=16, block_size=16, n_embd=32)
    x, y = ids(rng, 4, 16, 16), ids(rng, 4, 16, 16)
    opt = model.configure_optimizers(weight_decay=0.0, lr=3e-3, betas=(0.9, 0.99))
    for _ in range(250):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_configure_optimizers():
    model = tiny(bias=True)
    opt = model.configure_optimizers(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert any(p is model.wte.weight for p in decay["params"])
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_dropout_only_in_training(rng):
    model = tiny(5, dropout=0.5)
    x = ids(rng, 2, 8)
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    model.train()
    assert not np.allclose(model(x).numpy(), model(x).numpy())


# ---------------------------------------------------------------------------- against PyTorch
def _torch_gpt(torch, sd, cfg, x):
    """GPT-2 written directly with torch.nn.functional, on tinyllm's parameter names."""
    tf = torch.nn.functional
    c, h = cfg.n_embd, cfg.n_head
    approx = "tanh" if cfg.activation in ("gelu_new", "gelu_tanh") else "none"
    b_, t = x.shape
    ln = lambda z, n: tf.layer_norm(z, (c,), sd[f"{n}.weight"], sd.get(f"{n}.bias"), cfg.layer_norm_eps)
    lin = lambda z, n: tf.linear(z, sd[f"{n}.weight"], sd.get(f"{n}.bias"))
    z = sd["wte.weight"][x] + sd["wpe.weight"][:t]
    for i in range(cfg.n_layer):
        p = f"blocks.{i}"
        q, k, v = lin(ln(z, f"{p}.ln_1"), f"{p}.attn.qkv").split(c, dim=-1)
        q, k, v = (u.view(b_, t, h, c // h).transpose(1, 2) for u in (q, k, v))
        a = tf.scaled_dot_product_attention(q, k, v, is_causal=True)
        z = z + lin(a.transpose(1, 2).reshape(b_, t, c), f"{p}.attn.proj")
        m = tf.gelu(lin(ln(z, f"{p}.ln_2"), f"{p}.mlp.fc"), approximate=approx)
        z = z + lin(m, f"{p}.mlp.proj")
    return ln(z, "ln_f") @ sd["wte.weight"].T


@pytest.mark.torch
@pytest.mark.parametrize("kw", [dict(), dict(activation="gelu_new"), dict(bias=False)])
def test_matches_pytorch(rng, kw, device):
    torch = pytest.importorskip("torch")
    model = tiny(6, device, vocab_size=23, block_size=12, n_layer=2, n_head=4, n_embd=16, **kw)
    x, y = ids(rng, 3, 12, 23), ids(rng, 3, 12, 23)
    y[1, 3] = -100
    logits, loss = model(x, y)
    loss.backward()
    sd = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in model.named_parameters()}
    ref = _torch_gpt(torch, sd, model.config, torch.from_numpy(x))
    ref_loss = torch.nn.functional.cross_entropy(ref.reshape(-1, 23), torch.from_numpy(y).reshape(-1),
                                                 ignore_index=-100)
    ref_loss.backward()
    np.testing.assert_allclose(logits.numpy(), ref.detach().numpy(), atol=2e-5, rtol=1e-4)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    for n, p in model.named_parameters():
        g = sd[n].grad.numpy()
        np.testing.assert_allclose(to_numpy(p.grad), g, atol=1e-5 * np.abs(g).max() + 1e-7, rtol=1e-3,
                                   err_msg=n)
