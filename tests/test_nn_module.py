"""tinyllm.nn's Module tree: parameters by attribute, train/eval, devices, state dicts.

Issue "Modules, optimizers and safe weight files". The layers are in test_nn_layers.py, the
comparisons with PyTorch in test_nn_torch.py (both use ``close`` and ``Net`` from here).
"""

from __future__ import annotations

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
