"""tinyllm.nn's layers (Linear, Embedding, LayerNorm, activations, Dropout) and positional
encodings, against their formulas (issue "Modules, optimizers and safe weight files")."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_nn_module import Net, close

import tinyllm as tl
from tinyllm import nn


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
