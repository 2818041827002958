"""Exercise 09.2: the training step, checked against the update computed by hand in NumPy."""

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import nn, optim
from tinyllm.train.step import train_step


def _case(rng, clip):
    n_in, n_out, batch = (int(v) for v in rng.integers(2, 7, size=3))
    layer = nn.Linear(n_in, n_out)
    w0, b0 = layer.weight.data.copy(), layer.bias.data.copy()
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    stale = rng.standard_normal(w0.shape).astype(np.float32)
    layer.weight.grad = stale.copy()  # left over from a previous step: must not leak in
    lr = float(rng.uniform(0.05, 0.5))
    opt = optim.SGD(layer.parameters(), lr=123.0)  # train_step must set the lr itself
    loss = ((layer(tl.tensor(x)) * 3.0) ** 2).mean()
    norm = train_step(loss, opt, list(layer.parameters()), lr, clip)

    # by hand: y = x W^T + b, L = mean((3y)^2) -> dL/dy = 18 y / (batch * n_out)
    y = x @ w0.T + b0
    gy = 18 * y / y.size
    gw, gb = gy.T @ x, gy.sum(0)
    total = float(np.sqrt((gw ** 2).sum() + (gb ** 2).sum()))
    scale = clip / (total + 1e-6) if clip > 0 and total > clip else 1.0
    return layer, (w0 - lr * scale * gw, b0 - lr * scale * gb), norm, (total if clip > 0 else 0.0)


@pytest.mark.exercise("09.2")
@pytest.mark.parametrize("clip", [0.0, 0.05, 100.0])
def test_09_2_train_step_matches_the_update_by_hand(rng, clip):
    for _ in range(3):
        layer, (w, b), norm, want_norm = _case(rng, clip)
        assert np.allclose(layer.weight.data, w, atol=1e-5), (
            f"after train_step the weight should be {w}, got {layer.weight.data} (did you set the "
            "learning rate, zero the old gradient, and clip before stepping?)")
        assert np.allclose(layer.bias.data, b, atol=1e-5), "the bias was not updated as expected"
        assert norm == pytest.approx(want_norm, rel=1e-4, abs=1e-6), (
            f"train_step should return the gradient norm before clipping ({want_norm}), got {norm}")
