"""tinyllm.optim against PyTorch: the same parameters and gradients give the same steps (1e-6).

Skips without torch. Gradients are fed in directly (random, different every step), in float64,
so only the update rules are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy

from tinyllm import backend, nn, optim

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SHAPES = [(3, 4), (4,), (2, 2, 3)]


def _run(ours_cls, theirs_cls, kwargs, group_overrides=None, steps=6, clip=None, seed=0,
         lr_schedule=None, device="cpu"):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    ours = [nn.Parameter(backend.to_device(a.copy(), device)) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    if group_overrides:  # first parameter in group 0, the rest in group 1 with overrides
        og = [{"params": ours[:1]}, {"params": ours[1:], **group_overrides}]
        tg = [{"params": theirs[:1]}, {"params": theirs[1:], **group_overrides}]
    else:
        og, tg = ours, theirs
    opt_o, opt_t = ours_cls(og, **kwargs), theirs_cls(tg, **kwargs)
    for step in range(steps):
        if lr_schedule is not None:
            for go, gt in zip(opt_o.param_groups, opt_t.param_groups):
                go["lr"] = gt["lr"] = lr_schedule(step)
        for po, pt in zip(ours, theirs):
            g = rng.standard_normal(po.shape) * (3.0 if step % 2 else 0.2)
            po.grad = backend.to_device(g.copy(), device)
            pt.grad = torch.tensor(g.copy())
        if clip is not None:
            n_o = optim.clip_grad_norm_(ours, clip)
            n_t = float(torch.nn.utils.clip_grad_norm_(theirs, clip))
            assert n_o == pytest.approx(n_t, rel=1e-9), f"norm {n_o} vs torch {n_t}"
        opt_o.step()
        opt_t.step()
        for i, (po, pt) in enumerate(zip(ours, theirs)):
            want = pt.detach().numpy()
            err = np.max(np.abs(to_numpy(po.data) - want))
            assert err < 1e-6, (f"{ours_cls.__name__} {kwargs} step {step + 1}, parameter {i}: "
                                f"max difference from torch {err:.3g}")
    return ours, theirs


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
])
def test_sgd_matches_torch(kwargs, device):
    _run(optim.SGD, torch.optim.SGD, kwargs, device=device)


@pytest.mark.parametrize("kwargs", [
    dict(lr=1e-3),
    dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
])
def test_adam_matches_torch(kwargs, device):
    _run(optim.Adam, torch.optim.Adam, kwargs, device=device)


@pytest.mark.parametrize("kwargs", [
    dict(lr=1e-3),
    dict(lr=0.01, weight_decay=0.1, betas=(0.9, 0.95)),
])
def test_adamw_matches_torch(kwargs, device):
    _run(optim.AdamW, torch.optim.AdamW, kwargs, device=device)


@pytest.mark.parametrize("ours_cls, theirs_cls", [
    (optim.SGD, torch.optim.SGD), (optim.Adam, torch.optim.Adam),
    (optim.AdamW, torch.optim.AdamW),
])
def test_param_groups_match_torch(ours_cls, theirs_cls, device):
    kwargs = dict(lr=0.02, weight_decay=0.1)
    if ours_cls is optim.SGD:
        kwargs["momentum"] = 0.9
    _run(ours_cls, theirs_cls, kwargs, group_overrides={"weight_decay": 0.0, "lr": 0.005},
         device=device)


def test_clipping_and_schedule_match_torch(device):
    sched = lambda s: optim.cosine_with_warmup(s, 0.01, 0.001, 2, 6)
    _run(optim.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1), clip=1.0,
         lr_schedule=sched, steps=8, device=device)


def test_resumed_adamw_matches_torch(device):
    # run 3 steps, save both optimizers' state, continue 3 steps in fresh optimizers
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 3))
    po = nn.Parameter(backend.to_device(a.copy(), device))
    pt = torch.tensor(a.copy(), requires_grad=True)
    oo = optim.AdamW([po], lr=0.01, weight_decay=0.1)
    ot = torch.optim.AdamW([pt], lr=0.01, weight_decay=0.1)
    grads = rng.standard_normal((6, 3, 3))
    for k in range(3):
        po.grad, pt.grad = backend.to_device(grads[k].copy(), device), torch.tensor(grads[k])
        oo.step()
        ot.step()
    oo2 = optim.AdamW([po], lr=0.5)
    oo2.load_state_dict(oo.state_dict())
    ot2 = torch.optim.AdamW([pt], lr=0.5)
    ot2.load_state_dict(ot.state_dict())
    for k in range(3, 6):
        po.grad, pt.grad = backend.to_device(grads[k].copy(), device), torch.tensor(grads[k])
        oo2.step()
        ot2.step()
    assert np.max(np.abs(to_numpy(po.data) - pt.detach().numpy())) < 1e-6
