"""tinyllm.nn's layers, attention and Transformer blocks against PyTorch.

Issue "Modules, optimizers and safe weight files". The comparisons copy tinyllm's weights into
the torch modules and compare outputs and gradients; they skip when torch is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_nn_module import close

import tinyllm as tl
from tinyllm import nn


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
