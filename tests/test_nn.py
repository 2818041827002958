"""tinyllm.nn: the Module tree, the layers, positional encodings; layers against PyTorch.

Issue "Modules, optimizers and safe weight files". The PyTorch comparisons copy tinyllm's weights
into the torch modules and compare outputs and gradients; they skip when torch is missing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import to_numpy

import tinyllm as tl
from tinyllm import nn


def close(a, b, atol=1e-5, rtol=1e-5, what="values"):
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape}, expected {b.shape}"
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    assert np.allclose(a, b, atol=atol, rtol=rtol), f"{what}: max abs difference {err:.3g}"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(3, dtype=np.float32))
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x * self.scale))))


# ---------------------------------------------------------------------------- Module
def test_parameters_registered_by_attribute_assignment():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "fc1.weight", "fc1.bias", "fc2.weight"]
    assert [p.shape for p in net.parameters()] == [(3,), (4, 3), (4,), (2, 4)]
    assert [type(c).__name__ for c in net.children()] == ["Linear", "GELU", "Dropout", "Linear"]
    assert net.num_parameters() == 3 + 12 + 4 + 8
    # a plain array or tensor attribute is not a parameter; reassigning replaces
    net.note = tl.tensor([1.0, 2.0])
    net.fc2 = nn.Linear(4, 5)
    assert [n for n, _ in net.named_parameters()][-2:] == ["fc2.weight", "fc2.bias"]
    del net.scale
    assert "scale" not in dict(net.named_parameters())


def test_reassigning_keeps_the_place_in_the_order():
    net = Net()
    net.fc1 = nn.Linear(3, 6)  # e.g. swapping a layer: its weights keep their slot (as PyTorch)
    assert [n for n, _ in net.named_parameters()] == ["scale", "fc1.weight", "fc1.bias",
                                                      "fc2.weight"]
    assert net.fc1.weight.shape == (6, 3)
    net.fc1 = None  # a non-module value unregisters it
    assert [n for n, _ in net.named_parameters()] == ["scale", "fc2.weight"]


def test_module_needs_super_init():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2, dtype=np.float32))

    with pytest.raises(RuntimeError, match="super"):
        Bad()


def test_parameter_must_be_float():
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(np.arange(3))


def test_tied_weights_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight

    m = Tied()
    assert [n for n, _ in m.named_parameters()] == ["emb.weight"]
    assert m.num_parameters() == 15
    assert list(m.state_dict()) == ["emb.weight"]


def test_train_eval_reaches_dropout():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net and not any(m.training for m in net.modules())
    x = tl.tensor(np.ones((4, 3), dtype=np.float32))
    close(net(x).numpy(), net(x).numpy(), what="eval output must be deterministic")
    net.train()
    assert net.drop.training
    tl.manual_seed(0)
    outs = {tuple(np.round(net(x).numpy().ravel(), 5)) for _ in range(5)}
    assert len(outs) > 1, "dropout in training mode should give different outputs"


def test_zero_grad_and_requires_grad():
    net = Net()
    x = tl.tensor(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    net.eval()
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert net.num_parameters(trainable_only=True) == 0


def test_repr_shows_structure_and_shapes():
    text = repr(Net())
    for piece in ("Net(", "(fc1): Linear(in=3, out=4", "(weight): Parameter(4, 3)",
                  "(scale): Parameter(3,)", "(drop): Dropout(p=0.5)"):
        assert piece in text, f"{piece!r} missing from repr:\n{text}"


def test_module_list_and_sequential():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = tl.tensor(np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32))
    close(seq(x).numpy(), seq[2](seq[1](seq[0](x))).numpy(), what="Sequential")
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    ml.append(nn.LayerNorm(2))
    assert len(ml) == 4 and len(list(ml)) == 4 and len(ml[1:3]) == 2
    assert "3.weight" in dict(ml.named_parameters())


def test_to_cpu_and_bad_device():
    net = Net()
    before = net.state_dict()
    assert net.to("cpu") is net
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="device"):
        net.to("tpu")


def test_state_dict_roundtrip_and_copy():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert list(sd) == ["scale", "fc1.weight", "fc1.bias", "fc2.weight"]
    sd["fc1.bias"][:] = 7.0  # a copy: editing it does not touch the module
    assert not np.any(a.fc1.bias.numpy() == 7.0)
    assert b.load_state_dict(a.state_dict()) == ([], [])
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_state_dict_includes_buffers():
    class WithPE(nn.Module):
        def __init__(self):
            super().__init__()
            self.pe = nn.SinusoidalPositionalEncoding(6, 4)
            self.lin = nn.Linear(4, 4)

    sd = WithPE().state_dict()
    assert list(sd) == ["lin.weight", "lin.bias", "pe.table"]
    close(sd["pe.table"], nn.sinusoidal_table(6, 4), what="buffer in state_dict")


def test_strict_load_names_every_problem_and_changes_nothing():
    net = Net()
    before = net.state_dict()
    bad = Net().state_dict()
    del bad["fc1.bias"]
    bad["extra.weight"] = np.zeros(2, dtype=np.float32)
    bad["fc2.weight"] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(KeyError) as info:
        net.load_state_dict(bad)
    msg = str(info.value)
    for piece in ("fc1.bias", "extra.weight", "fc2.weight", "(2, 4)", "(3, 3)"):
        assert piece in msg, f"{piece!r} not named in the error: {msg}"
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a failed load")


def test_non_strict_load_reports_missing_and_unexpected():
    net = Net()
    src = Net().state_dict()
    del src["scale"]
    src["junk"] = np.zeros(1, dtype=np.float32)
    missing, unexpected = net.load_state_dict(src, strict=False)
    assert missing == ["scale"] and unexpected == ["junk"]
    np.testing.assert_array_equal(net.fc1.weight.numpy(), src["fc1.weight"])
    with pytest.raises(KeyError, match="wrong shapes"):  # shapes are checked even when not strict
        net.load_state_dict({"fc1.weight": np.zeros((1, 1), np.float32)}, strict=False)


def test_load_accepts_nested_lists():
    lin = nn.Linear(2, 2)
    lin.load_state_dict({"weight": [[1.0, 2.0], [3.0, 4.0]], "bias": [0.5, -0.5]})
    np.testing.assert_array_equal(lin.weight.numpy(), [[1, 2], [3, 4]])
    assert lin.weight.dtype == np.float32
    with pytest.raises(KeyError, match=r"bias: expected \(2,\), got \(3,\)"):
        lin.load_state_dict({"weight": [[1.0, 2.0], [3.0, 4.0]], "bias": [1.0, 2.0, 3.0]})


def test_load_keeps_dtype_and_accepts_tensors():
    net = Net()
    sd = {k: tl.tensor(v.astype(np.float64)) for k, v in Net().state_dict().items()}
    net.load_state_dict(sd)
    assert all(p.dtype == np.float32 for p in net.parameters())


# ---------------------------------------------------------------------------- layers
def test_linear_forward_and_shape_error():
    lin = nn.Linear(3, 2)
    x = np.random.default_rng(2).standard_normal((4, 5, 3)).astype(np.float32)
    y = lin(tl.tensor(x))
    close(y.numpy(), x @ lin.weight.numpy().T + lin.bias.numpy(), what="Linear")
    bound = 1 / math.sqrt(3)
    assert np.abs(lin.weight.numpy()).max() <= bound
    with pytest.raises(ValueError, match="last axis must be 3"):
        lin(tl.tensor(np.zeros((2, 4), np.float32)))
    gpt = nn.Linear(8, 8, init_std=0.02)
    assert np.all(gpt.bias.numpy() == 0) and gpt.weight.numpy().std() < 0.05


def test_embedding_and_layernorm_and_activations():
    emb = nn.Embedding(7, 3)
    ids = np.array([[0, 6, 6], [2, 1, 0]])
    np.testing.assert_array_equal(emb(ids).numpy(), emb.weight.numpy()[ids])
    with pytest.raises(IndexError, match="outside the vocabulary"):
        emb(np.array([7]))
    ln = nn.LayerNorm(5)
    x = np.random.default_rng(3).standard_normal((2, 5)).astype(np.float32) * 3 + 1
    y = ln(tl.tensor(x)).numpy()
    close(y.mean(-1), np.zeros(2), atol=1e-5, what="LayerNorm mean")
    close(y.var(-1), np.ones(2), atol=1e-3, what="LayerNorm variance")
    nobias = nn.LayerNorm(5, bias=False)
    assert nobias.bias is None and [n for n, _ in nobias.named_parameters()] == ["weight"]
    close(nobias(tl.tensor(x)).numpy(), y, what="bias-free LayerNorm")
    z = np.linspace(-3, 3, 13).astype(np.float32)
    close(nn.ReLU()(tl.tensor(z)).numpy(), np.maximum(z, 0), what="ReLU")
    close(nn.Tanh()(tl.tensor(z)).numpy(), np.tanh(z), what="Tanh")
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in z])
    close(nn.GELU()(tl.tensor(z)).numpy(), exact, atol=1e-6, what="GELU vs math.erf")
    tanh_form = 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
    close(nn.GELU("tanh")(tl.tensor(z)).numpy(), tanh_form, atol=1e-6, what="GELU tanh")


def test_dropout_scaling_and_eval_identity():
    tl.manual_seed(5)
    d = nn.Dropout(0.25)
    x = tl.tensor(np.ones((200, 200), dtype=np.float32))
    y = d(x).numpy()
    kept = y != 0
    close(y[kept], np.full(kept.sum(), 1 / 0.75), what="kept entries scaled by 1/(1-p)")
    assert abs(1 - kept.mean() - 0.25) < 0.01, f"dropped fraction {1 - kept.mean():.3f}, want 0.25"
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.0)


def test_manual_seed_reproduces_init_and_masks():
    def run():
        tl.manual_seed(123)
        net = Net()
        x = tl.tensor(np.ones((3, 3), dtype=np.float32))
        return net.state_dict(), net(x).numpy()

    (sd1, y1), (sd2, y2) = run(), run()
    for k in sd1:
        np.testing.assert_array_equal(sd1[k], sd2[k], err_msg=f"{k} differs under the same seed")
    np.testing.assert_array_equal(y1, y2, err_msg="dropout masks differ under the same seed")
    tl.manual_seed(124)
    assert not np.array_equal(Net().state_dict()["fc1.weight"], sd1["fc1.weight"])


# ---------------------------------------------------------------------------- positions
def paper_table(n, d):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), by loops."""
    pe = np.zeros((n, d))
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            pe[pos, 2 * i], pe[pos, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return pe


def test_sinusoidal_matches_paper_formula():
    table = nn.sinusoidal_table(50, 16)
    assert table.shape == (50, 16) and table.dtype == np.float32
    close(table, paper_table(50, 16), atol=2e-6, what="sinusoidal table")
    with pytest.raises(ValueError, match="even"):
        nn.sinusoidal_table(4, 5)
    pe = nn.SinusoidalPositionalEncoding(50, 16)
    close(pe(10, offset=3).numpy(), table[3:13], what="SinusoidalPositionalEncoding slice")
    assert pe.num_parameters() == 0
    with pytest.raises(ValueError, match="longer than"):
        pe(48, offset=3)


def test_sinusoidal_relative_offsets_are_rotations():
    # PE[pos + k] = R_k PE[pos] with a fixed block rotation per frequency
    d, k = 8, 5
    t = nn.sinusoidal_table(40, d).astype(np.float64)
    for i in range(d // 2):
        w = 1 / 10000 ** (2 * i / d)
        c, s = math.cos(k * w), math.sin(k * w)
        sin_, cos_ = t[:-k, 2 * i], t[:-k, 2 * i + 1]
        close(t[k:, 2 * i], sin_ * c + cos_ * s, atol=1e-5, what=f"rotation of pair {i}")


def test_learned_positional_embedding():
    pe = nn.LearnedPositionalEmbedding(8, 4)
    out = pe(3, offset=2)
    np.testing.assert_array_equal(out.numpy(), pe.weight.numpy()[2:5])
    out.sum().backward()
    g = np.zeros((8, 4))
    g[2:5] = 1
    close(pe.weight.grad, g, what="learned position gradient")
    with pytest.raises(ValueError, match="learned positions"):
        pe(9)


# ---------------------------------------------------------------------------- PyTorch
def _torch():
    return pytest.importorskip("torch")


def _t(torch, a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad)


def _set(torch, module_param, array):
    with torch.no_grad():
        module_param.copy_(torch.tensor(np.asarray(array), dtype=torch.float32))


def _run_both(tl_fn, torch_fn, torch, x, weight, device="cpu"):
    """Output and input gradient of L = sum(f(x) * weight) in tinyllm (on ``device``) and torch."""
    xt = tl.tensor(x, requires_grad=True, device=device)
    y = tl_fn(xt)
    (y * tl.tensor(weight, device=device)).sum().backward()
    xp = _t(torch, x, grad=True)
    yp = torch_fn(xp)
    (yp * _t(torch, weight)).sum().backward()
    return y.numpy(), xt.grad, yp.detach().numpy(), xp.grad.numpy()


@pytest.mark.torch
def test_linear_layernorm_embedding_gelu_match_torch(device):
    torch = _torch()
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    w = rng.standard_normal((2, 5, 4)).astype(np.float32)
    lin, tlin = nn.Linear(6, 4), torch.nn.Linear(6, 4)
    _set(torch, tlin.weight, lin.weight.numpy())
    _set(torch, tlin.bias, lin.bias.numpy())
    y, gx, yt, gxt = _run_both(lin.to(device), tlin, torch, x, w, device)
    close(y, yt, what="Linear output")
    close(gx, gxt, what="Linear dx")
    close(lin.weight.grad, tlin.weight.grad.numpy(), what="Linear dW")
    close(lin.bias.grad, tlin.bias.grad.numpy(), what="Linear db")

    ln, tln = nn.LayerNorm(6), torch.nn.LayerNorm(6)
    ln.weight.data[:] = rng.standard_normal(6)
    ln.bias.data[:] = rng.standard_normal(6)
    _set(torch, tln.weight, ln.weight.numpy())
    _set(torch, tln.bias, ln.bias.numpy())
    w6 = rng.standard_normal((2, 5, 6)).astype(np.float32)
    y, gx, yt, gxt = _run_both(ln.to(device), tln, torch, x, w6, device)
    close(y, yt, what="LayerNorm output")
    close(gx, gxt, atol=1e-4, what="LayerNorm dx")
    close(ln.weight.grad, tln.weight.grad.numpy(), atol=1e-4, what="LayerNorm dw")
    close(ln.bias.grad, tln.bias.grad.numpy(), atol=1e-4, what="LayerNorm db")

    for approx in ("none", "tanh"):
        y, gx, yt, gxt = _run_both(nn.GELU(approx), torch.nn.GELU(approximate=approx), torch,
                                   x * 3, w6, device)
        close(y, yt, atol=2e-6, what=f"GELU({approx}) output")
        close(gx, gxt, atol=2e-6, what=f"GELU({approx}) dx")

    emb, temb = nn.Embedding(9, 4), torch.nn.Embedding(9, 4)
    _set(torch, temb.weight, emb.weight.numpy())
    ids = rng.integers(0, 9, (3, 7))
    wgt = rng.standard_normal((3, 7, 4)).astype(np.float32)
    out = emb.to(device)(ids)
    (out * tl.tensor(wgt, device=device)).sum().backward()
    outt = temb(torch.tensor(ids))
    (outt * _t(torch, wgt)).sum().backward()
    close(out.numpy(), outt.detach().numpy(), what="Embedding output")
    close(emb.weight.grad, temb.weight.grad.numpy(), what="Embedding dW (repeated ids add up)")


@pytest.mark.torch
def test_dropout_scaling_matches_torch():
    torch = _torch()
    torch.manual_seed(0)
    tl.manual_seed(0)
    x = np.full((100, 100), 2.0, dtype=np.float32)
    ours = nn.Dropout(0.3)(tl.tensor(x)).numpy()
    theirs = torch.nn.Dropout(0.3)(torch.tensor(x)).numpy()
    for name, out in (("tinyllm", ours), ("torch", theirs)):
        vals = np.unique(out)
        assert len(vals) == 2 and vals[0] == 0, f"{name} dropout gave values {vals}"
        close(vals[1], 2 / 0.7, what=f"{name} kept value (2 scaled by 1/(1-p))")
    assert abs((ours == 0).mean() - (theirs == 0).mean()) < 0.03


def _copy_mha(torch, ours, theirs):
    _set(torch, theirs.in_proj_weight, ours.qkv.weight.numpy())
    _set(torch, theirs.in_proj_bias, ours.qkv.bias.numpy())
    _set(torch, theirs.out_proj.weight, ours.proj.weight.numpy())
    _set(torch, theirs.out_proj.bias, ours.proj.bias.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("masking", ["none", "causal", "padding"])
def test_multi_head_attention_matches_torch(masking, device):
    torch = _torch()
    rng = np.random.default_rng(11)
    b, t, c, h = 2, 5, 8, 2
    tl.manual_seed(1)
    ours = nn.MultiHeadAttention(c, h)
    theirs = torch.nn.MultiheadAttention(c, h, batch_first=True)
    _copy_mha(torch, ours, theirs)
    x = rng.standard_normal((b, t, c)).astype(np.float32)
    w = rng.standard_normal((b, t, c)).astype(np.float32)
    kwargs, tkw = {}, {}
    if masking == "causal":
        kwargs = {"is_causal": True}
        tkw = {"attn_mask": torch.triu(torch.ones(t, t, dtype=torch.bool), 1)}
    elif masking == "padding":
        keep = np.ones((b, t), dtype=bool)
        keep[1, 3:] = False
        kwargs = {"mask": keep[:, None, None, :]}
        tkw = {"key_padding_mask": torch.tensor(~keep)}
    ours.to(device)
    y, gx, yt, gxt = _run_both(lambda z: ours(z, **kwargs),
                               lambda z: theirs(z, z, z, need_weights=False, **tkw)[0],
                               torch, x, w, device)
    close(y, yt, what=f"attention output ({masking})")
    close(gx, gxt, atol=1e-4, what=f"attention dx ({masking})")
    close(ours.qkv.weight.grad, theirs.in_proj_weight.grad.numpy(), atol=1e-4, what="dW_qkv")
    close(ours.qkv.bias.grad, theirs.in_proj_bias.grad.numpy(), atol=1e-4, what="db_qkv")
    close(ours.proj.weight.grad, theirs.out_proj.weight.grad.numpy(), atol=1e-4, what="dW_proj")


def _block_pairs(torch, block, mha, ln1, ln2, fc, proj):
    _copy_mha(torch, block.attn, mha)
    for ours, theirs in ((block.ln_1, ln1), (block.ln_2, ln2), (block.mlp.fc, fc),
                         (block.mlp.proj, proj)):
        _set(torch, theirs.weight, ours.weight.numpy())
        _set(torch, theirs.bias, ours.bias.numpy())


def _randomise_norms(block, rng):
    for ln in (block.ln_1, block.ln_2):
        ln.weight.data[:] = 1 + 0.3 * rng.standard_normal(ln.dim)
        ln.bias.data[:] = 0.3 * rng.standard_normal(ln.dim)


@pytest.mark.torch
def test_pre_ln_block_matches_handwritten_torch_block(device):
    torch = _torch()
    tnn = torch.nn
    rng = np.random.default_rng(12)
    c, h, ff = 8, 2, 16
    block = nn.TransformerBlock(c, h, d_ff=ff, norm_first=True)
    _randomise_norms(block, rng)
    mha = tnn.MultiheadAttention(c, h, batch_first=True)
    ln1, ln2 = tnn.LayerNorm(c), tnn.LayerNorm(c)
    fc, proj = tnn.Linear(c, ff), tnn.Linear(ff, c)
    _block_pairs(torch, block, mha, ln1, ln2, fc, proj)
    mask = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)

    def torch_block(x):
        a = ln1(x)
        x = x + mha(a, a, a, attn_mask=mask, need_weights=False)[0]
        return x + proj(tnn.functional.gelu(fc(ln2(x))))

    x = rng.standard_normal((2, 6, c)).astype(np.float32)
    w = rng.standard_normal((2, 6, c)).astype(np.float32)
    block.to(device)
    y, gx, yt, gxt = _run_both(lambda z: block(z, is_causal=True), torch_block, torch, x, w, device)
    close(y, yt, what="pre-LN block output")
    close(gx, gxt, atol=1e-4, what="pre-LN block dx")
    close(block.mlp.fc.weight.grad, fc.weight.grad.numpy(), atol=1e-4, what="pre-LN dW_fc")
    close(block.ln_1.weight.grad, ln1.weight.grad.numpy(), atol=1e-4, what="pre-LN d ln_1.w")


@pytest.mark.torch
def test_post_ln_block_matches_torch_encoder_layer(device):
    torch = _torch()
    rng = np.random.default_rng(13)
    c, h, ff = 8, 4, 12
    block = nn.TransformerBlock(c, h, d_ff=ff, norm_first=False)
    _randomise_norms(block, rng)
    layer = torch.nn.TransformerEncoderLayer(c, h, dim_feedforward=ff, dropout=0.0,
                                             activation="gelu", batch_first=True,
                                             norm_first=False)
    _block_pairs(torch, block, layer.self_attn, layer.norm1, layer.norm2, layer.linear1,
                 layer.linear2)
    keep = np.ones((2, 5), dtype=bool)
    keep[0, 4:] = False
    x = rng.standard_normal((2, 5, c)).astype(np.float32)
    w = rng.standard_normal((2, 5, c)).astype(np.float32)
    block.to(device)
    y, gx, yt, gxt = _run_both(
        lambda z: block(z, mask=keep[:, None, None, :]),
        lambda z: layer(z, src_key_padding_mask=torch.tensor(~keep)), torch, x, w, device)
    close(y, yt, what="post-LN block output")
    close(gx, gxt, atol=1e-4, what="post-LN block dx")
    close(block.ln_2.weight.grad, layer.norm2.weight.grad.numpy(), atol=1e-4, what="d norm2.w")
    close(block.attn.qkv.weight.grad, layer.self_attn.in_proj_weight.grad.numpy(), atol=1e-4,
          what="post-LN dW_qkv")
