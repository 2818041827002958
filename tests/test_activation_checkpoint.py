"""Activation checkpointing on the GPT (``GPTConfig.checkpoint_blocks``) and the memory account.

The checkpointed GPT's gradients are the plain one's (dropout on: the masks are replayed); its
measured peak memory is far lower; ``tinyllm.memory``'s formula predicts what tracemalloc
measures; the trainer takes ``--set model_args.checkpoint_blocks=true``.
"""

import gc
import tracemalloc

import numpy as np
import pytest
from test_trainer import TINY, corpus  # noqa: F401  (the fixture)

import tinyllm as tl
from tinyllm.memory import gpt_parameter_count, measure_peak, memory_account
from tinyllm.models import GPT, GPTConfig
from tinyllm.train.presets import preset_config
from tinyllm.train.trainer import train


def gpt(rng, ck, dropout=0.0, n_layer=2, t=32, c=32, h=2, seed=0):
    tl.manual_seed(seed)
    cfg = GPTConfig(vocab_size=17, block_size=t, n_layer=n_layer, n_head=h, n_embd=c,
                    dropout=dropout, checkpoint_blocks=ck)
    return GPT(cfg), cfg


def grads(model, x, y, seed):
    tl.manual_seed(seed)
    model.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    return loss.item(), {n: p.grad.copy() for n, p in model.named_parameters()}


def test_checkpointed_gpt_has_the_plain_gradients(rng):
    x, y = rng.integers(0, 17, (3, 32)), rng.integers(0, 17, (3, 32))
    seed = int(rng.integers(1 << 30))
    plain, _ = gpt(rng, False, dropout=0.2)
    ckpt, _ = gpt(rng, True, dropout=0.2)
    loss_a, want = grads(plain, x, y, seed)
    loss_b, got = grads(ckpt, x, y, seed)
    assert loss_a == loss_b, (loss_a, loss_b)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, rtol=0, err_msg=name)
    # without gradients (generation) checkpointing changes nothing
    with tl.no_grad():
        ckpt.eval()
        plain.eval()
        np.testing.assert_array_equal(ckpt(x).numpy(), plain(x).numpy())


def test_checkpoint_blocks_must_be_a_bool():
    with pytest.raises(ValueError, match="checkpoint_blocks"):
        GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4,
                  checkpoint_blocks="yes")


def forward_backward_peak(model, x, y):
    for p in model.parameters():
        p.grad = None
    gc.collect()
    return measure_peak(lambda: model(x, y)[1].backward())[0]


@pytest.mark.parametrize("ck", [False, True])
def test_the_memory_account_predicts_the_measured_memory(rng, ck):
    model, cfg = gpt(rng, ck, n_layer=3, t=64, c=32)
    b = 4
    assert gpt_parameter_count(cfg) == sum(p.data.size for p in model.parameters())
    x, y = rng.integers(0, 17, (b, 64)), rng.integers(0, 17, (b, 64))
    forward_backward_peak(model, x, y)  # the first step fills the caches (causal mask)
    acc = memory_account(cfg, b)
    gc.collect()
    tracemalloc.start()
    loss = model(x, y)[1]
    held = tracemalloc.get_traced_memory()[0]  # what the graph keeps after forward
    tracemalloc.stop()
    del loss
    peak = forward_backward_peak(model, x, y)
    want_peak = acc.step_peak - acc.parameters - acc.optimizer_state  # made during the step
    # tracemalloc counts Python objects too: a few percent over the arrays
    assert acc.activations <= held * 1.02 and held <= acc.activations * 1.4, (held, acc)
    assert 0.8 * want_peak <= peak <= 1.25 * want_peak, (peak, want_peak)


def test_checkpointing_cuts_the_peak(rng):
    x, y = rng.integers(0, 17, (4, 128)), rng.integers(0, 17, (4, 128))
    plain, _ = gpt(rng, False, n_layer=4, t=128, c=32)
    ckpt, _ = gpt(rng, True, n_layer=4, t=128, c=32)
    forward_backward_peak(plain, x, y)
    forward_backward_peak(ckpt, x, y)
    a, b = forward_backward_peak(plain, x, y), forward_backward_peak(ckpt, x, y)
    assert b < 0.6 * a, f"checkpointed peak {b:,} bytes, plain {a:,}"


def test_the_trainer_takes_checkpoint_blocks(corpus, tmp_path):  # noqa: F811
    def run(out, **sets):
        return train(preset_config("baby-shakespeare"),
                     overrides={**TINY, "max_iters": "3", "eval_interval": "3", "dropout": "0.1",
                                **sets}, out=out, mode="quiet")

    a = run(tmp_path / "a")
    b = run(tmp_path / "b", **{"model_args.checkpoint_blocks": "true"})
    assert b.best_val_loss == pytest.approx(a.best_val_loss, abs=1e-5)
    wa, wb = tl.load(tmp_path / "a" / "model.safetensors"), tl.load(tmp_path / "b" /
                                                                     "model.safetensors")
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], atol=1e-5, err_msg=k)
