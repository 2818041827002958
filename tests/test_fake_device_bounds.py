"""Host transfers and device memory are bounded, counted on the strict fake device.

On a GPU every device-to-host copy is a synchronisation that stalls the pipeline, so a training
step copies back only what it logs: the loss, and the global gradient norm of clipping (one
reduction, not one copy per parameter); ids are checked on the host before they move; the
optimizer step stays on the device. Generation copies back the last position's logits, once
per step. And nothing allocated per step outlives the step (no cache that grows with steps).

Counts are differences between two runs that differ only in their number of steps, so fixed
costs (the first evaluation, the checkpoint, the prompt) cancel out.
"""

import gc
import math

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.models import GPT, GPTConfig
from tinyllm.train.step import train_step

V = 13


def gpt(**kw):
    tl.manual_seed(0)
    cfg = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def per_step(fake, run, few, many):
    """(transfers, bytes, where) per step: ``run(n)`` done for ``many`` steps minus ``few``."""
    counts = []
    for n in (few, many):
        fake.reset()
        run(n)
        counts.append((fake.counters.to_host, fake.counters.bytes_to_host,
                       list(fake.counters.host_copies)))
    (t0, b0, w0), (t1, b1, w1) = counts
    extra = w1[:]
    for w in w0:  # what the longer run copied beyond the shorter one, for the message
        if w in extra:
            extra.remove(w)
    return (t1 - t0) / (many - few), (b1 - b0) / (many - few), extra


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("preset, extra", [
    ("baby-shakespeare", {}),
    ("baby-llama", {}),
    ("digits-reverse", {"task_args.n_train": "200", "task_args.n_val": "20"}),
])
def test_a_training_step_copies_two_scalars_to_the_host(fake_cuda, tmp_path, monkeypatch,
                                                       preset, extra):
    """The trainer's own loop: the loss for logging (and the divergence check) and the global
    gradient norm, nothing else (36 copies per step before: one per parameter in clipping,
    and in id checks)."""
    from test_trainer import TINY, write_corpus

    from tinyllm.train.presets import preset_config
    from tinyllm.train.trainer import train

    (tmp_path / "data").mkdir()
    write_corpus(tmp_path / "data")
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(tmp_path / "data"))

    def run(n):
        sets = {**TINY, **extra, "max_iters": str(n), "eval_interval": "1000",
                "ckpt_interval": "1000", "grad_clip": "1.0", "device": "cuda"}
        train(preset_config(preset), overrides=sets, out=tmp_path / f"run{n}", mode="quiet")

    transfers, nbytes, where = per_step(fake_cuda, run, 2, 5)
    assert transfers <= 2, f"{transfers} host copies per training step: {where}"
    assert nbytes <= 16, f"{nbytes} bytes copied to the host per training step: {where}"


def test_a_bert_masked_lm_step_copies_two_scalars_to_the_host(fake_cuda):
    from tinyllm.models.bert import BertConfig, BertForMaskedLM

    tl.manual_seed(0)
    cfg = BertConfig(vocab_size=V, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=12)
    model = BertForMaskedLM(cfg).to("cuda")
    opt = tl.optim.AdamW(model.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, V, (2, 6))
    mask = np.ones((2, 6), np.int64)
    labels = np.where(rng.random((2, 6)) < 0.3, ids, -100)
    labels[0, 0] = ids[0, 0]

    def run(n):
        for _ in range(n):
            loss = model(ids, mask, labels=labels).loss
            loss.item()
            train_step(loss, opt, list(model.parameters()), 1e-3, grad_clip=1.0)

    transfers, _, where = per_step(fake_cuda, run, 1, 3)
    assert transfers <= 2, f"{transfers} host copies per BERT step: {where}"


def test_gradient_clipping_is_one_reduction(fake_cuda):
    model = gpt().to("cuda")
    x = np.random.default_rng(0).integers(0, V, (2, 8))
    model(x, x)[1].backward()
    params = list(model.parameters())
    want = math.sqrt(sum(float((p.grad.get().astype(np.float64) ** 2).sum()) for p in params))
    fake_cuda.reset()
    norm = tl.optim.clip_grad_norm_(params, 1e-3)
    assert fake_cuda.counters.to_host == 1, fake_cuda.counters.host_copies
    assert norm == pytest.approx(want, rel=1e-5)
    clipped = math.sqrt(sum(float((p.grad.get().astype(np.float64) ** 2).sum()) for p in params))
    assert clipped == pytest.approx(1e-3, rel=1e-4)


def test_optimizer_steps_stay_on_the_device(fake_cuda):
    model = gpt().to("cuda")
    x = np.random.default_rng(0).integers(0, V, (2, 8))
    for opt in (model.configure_optimizers(), tl.optim.SGD(model.parameters(), 0.1, momentum=0.9)):
        for _ in range(2):
            loss = model(x, x)[1]
            fake_cuda.reset()
            train_step(loss, opt, list(model.parameters()), 1e-2)  # no clipping
            assert fake_cuda.counters.to_host == 0, fake_cuda.counters.host_copies


# ---------------------------------------------------------------------------- generation
DECODING = {"greedy": dict(), "no_cache": dict(use_cache=False),
            "sampling": dict(do_sample=True, top_k=5, top_p=0.9, seed=0),
            "beams": dict(num_beams=3)}


@pytest.mark.parametrize("kw", DECODING.values(), ids=DECODING.keys())
def test_generation_copies_the_last_logits_once_per_token(fake_cuda, kw):
    model = gpt(dropout=0.0).to("cuda")
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    rows = len(prompt) * kw.get("num_beams", 1)
    transfers, nbytes, where = per_step(
        fake_cuda, lambda n: model.generate(prompt, n, **kw), 3, 9)
    assert transfers <= 1, f"{transfers} host copies per generated token: {where}"
    assert nbytes <= rows * V * 4, f"{nbytes} bytes per token for {rows} rows of {V} logits"


def test_encoder_decoder_decoding_copies_the_last_logits_once_per_token(fake_cuda):
    from tinyllm.models.transformer import Transformer, TransformerConfig

    tl.manual_seed(0)
    cfg = TransformerConfig(V, V, d_model=16, n_head=2, num_encoder_layers=1,
                            num_decoder_layers=1, d_ff=32, dropout=0.0, max_len=32)
    model = Transformer(cfg).to("cuda").eval()
    src = np.array([[3, 4, 5, 6], [7, 8, 9, 0]])
    model.config.eos_id = V + 1  # never made: every row runs to max_new_tokens
    for kw, rows in ((dict(), 2), (dict(use_cache=False), 2), (dict(num_beams=2), 4)):
        transfers, nbytes, where = per_step(
            fake_cuda, lambda n, kw=kw: model.generate(src, n, **kw), 3, 9)
        assert transfers <= 1, f"{kw}: {transfers} host copies per generated token: {where}"
        assert nbytes <= rows * V * 4, f"{kw}: {nbytes} bytes per token"


# ---------------------------------------------------------------------------- memory
def live_bytes(fake):
    """Device bytes held now. Without a garbage collection: what a step frees must be freed
    when it ends (by reference counting), not at some later collection of cycles."""
    return fake.get_default_memory_pool().used_bytes()


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_training_memory_does_not_grow_with_the_step_count(fake_cuda, no_gc):
    """20 steps: after the first (which makes AdamW's moments) every step allocates the same
    buffers and frees them all; the memory held between steps stays the same."""
    model = gpt(dropout=0.0).to("cuda")
    opt = model.configure_optimizers()
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    held, allocated = [], []
    for _ in range(20):
        x = rng.integers(0, V, (2, 16))
        before = fake_cuda.counters.allocations
        loss = model(x, x)[1]
        train_step(loss, opt, params, 1e-2, grad_clip=1.0)
        del loss
        allocated.append(fake_cuda.counters.allocations - before)
        held.append(live_bytes(fake_cuda))
    assert len(set(allocated[2:])) == 1, f"allocations per step vary: {allocated}"
    assert held[2:] == [held[2]] * 18, f"device memory held between steps: {held}"


def test_generation_memory_does_not_grow_with_the_number_of_tokens(fake_cuda, no_gc):
    """Decoding holds the KV cache (allocated once, for block_size positions) and nothing that
    grows with the tokens made: after a generation call, what stays allocated is the same
    after 4 tokens as after 12 (no per-length mask kept)."""
    model = gpt(dropout=0.0).to("cuda")
    prompt = np.array([[1, 2, 3]])
    for kw in (dict(), dict(use_cache=False), dict(num_beams=2)):
        model.generate(prompt, 2, **kw)  # warm: whatever is made once per shape
        base = live_bytes(fake_cuda)
        model.generate(prompt, 4, **kw)
        after_4 = live_bytes(fake_cuda)
        model.generate(prompt, 12, **kw)
        after_12 = live_bytes(fake_cuda)
        assert after_12 == after_4 == base, f"{kw}: device memory held {base}, {after_4}, {after_12}"
