"""tinyllm on the strict fake device gives the CPU's results: the same seed and weights give the
same losses (to 1e-5) and the same generated tokens; and the edge cases of mixing host and
device data follow tinyllm's one rule (``tensor.operand_data``): raw host data is moved to
the device, a tensor on another device is refused with a message.

Every test takes the ``fake_cuda`` fixture (``tests/conftest.py``): it installs the fake as
CuPy for the test, in any run. Dropout is 0 wherever a random stream is drawn on the device
(CuPy's stream is not NumPy's).
"""

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import attention, backend
from tinyllm import functional as F
from tinyllm.models import GPT, GPTConfig
from tinyllm.models.bert import BertConfig, BertForPreTraining
from tinyllm.models.transformer import Transformer, TransformerConfig
from tinyllm.train.step import train_step

V = 13


def gpt(seed=0, **kw):
    tl.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def batches(n, b=3, t=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, V, (b, t)), rng.integers(0, V, (b, t))) for _ in range(n)]


def train_losses(model, data, clip=0.5):
    opt = model.configure_optimizers(weight_decay=0.1, lr=3e-2)
    params = list(model.parameters())
    losses = []
    for x, y in data:
        loss = model(x, y)[1]
        losses.append(loss.item())
        train_step(loss, opt, params, 3e-2, clip)
    return losses, {k: v.copy() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_gpt_adamw_steps_match_the_cpu(fake_cuda, clip, monkeypatch):
    # the same arithmetic on both sides: NumPy's attention may skip the softmax's row maxima (a
    # CPU-only fast path, checked against the plain form in test_functional), which rounds
    # differently, and AdamW's m / sqrt(v) turns rounding in a gradient that is 0 in exact
    # arithmetic (the key bias's) into differences of up to lr in the weights
    monkeypatch.setattr(attention, "_unshifted_safe", lambda s: False)
    data = batches(1) * 4  # one batch, learned
    cpu_losses, cpu_state = train_losses(gpt(), data, clip)
    model = gpt().to("cuda")
    assert isinstance(model.wte.weight.data, fake_cuda.ndarray)
    dev_losses, dev_state = train_losses(model, data, clip)
    np.testing.assert_allclose(dev_losses, cpu_losses, rtol=1e-5, atol=1e-6)
    assert cpu_losses[-1] < cpu_losses[0]  # the steps did something
    for k in cpu_state:
        np.testing.assert_allclose(dev_state[k], cpu_state[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_gpt_device_ids_and_tensors_work_too(fake_cuda):
    (x, y), = batches(1)
    want = gpt()(x, y)[1].item()
    model = gpt().to("cuda")
    for ids, targets in ((tl.tensor(x, device="cuda"), tl.tensor(y, device="cuda")),
                         (backend.as_array(x, device="cuda"), backend.as_array(y, device="cuda"))):
        assert model(ids, targets)[1].item() == pytest.approx(want, rel=1e-6)


def test_bert_pretraining_forward_and_loss_match_the_cpu(fake_cuda):
    cfg = BertConfig(vocab_size=V, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=12, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(1)
    ids = rng.integers(1, V, (2, 6))
    mask = np.ones((2, 6), np.int64)
    mask[1, 4:] = 0
    labels = np.where(rng.random((2, 6)) < 0.5, ids, -100)
    tt = np.zeros((2, 6), np.int64)
    out = []
    for device in ("cpu", "cuda"):
        tl.manual_seed(2)
        model = BertForPreTraining(cfg).to(device)
        r = model(ids, mask, tt, labels=labels, next_sentence_label=np.array([0, 1]))
        r.loss.backward()
        out.append((r.loss.item(), r.prediction_logits.numpy(),
                    model.bert.embeddings.word_embeddings.weight.grad))
    (l0, p0, g0), (l1, p1, g1) = out
    assert l1 == pytest.approx(l0, rel=1e-5)
    np.testing.assert_allclose(p1, p0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.to_device(g1, "cpu"), g0, rtol=1e-4, atol=1e-6)


def seq2seq(device):
    tl.manual_seed(3)
    cfg = TransformerConfig(V, V, d_model=16, n_head=2, num_encoder_layers=1,
                            num_decoder_layers=1, d_ff=32, dropout=0.0, max_len=16)
    return Transformer(cfg).to(device).eval()


def test_encoder_decoder_loss_and_decoding_match_the_cpu(fake_cuda):
    rng = np.random.default_rng(4)
    src = rng.integers(3, V, (2, 5))
    src[1, 3:] = 0
    tgt_in = np.concatenate([np.ones((2, 1), np.int64), rng.integers(3, V, (2, 4))], axis=1)
    tgt_out = np.concatenate([tgt_in[:, 1:], np.full((2, 1), 2)], axis=1)
    results = []
    for device in ("cpu", "cuda"):
        model = seq2seq(device)
        loss = model(src, tgt_in, tgt_out)[1].item()
        greedy = model.generate(src, 6)
        nocache = model.generate(src, 6, use_cache=False)
        beams = model.generate(src, 6, num_beams=3)
        sampled = model.generate(src, 6, do_sample=True, top_k=4, seed=5)
        results.append((loss, greedy, nocache, beams, sampled))
    cpu, dev = results
    assert dev[0] == pytest.approx(cpu[0], rel=1e-5)
    for c, d, what in zip(cpu[1:], dev[1:], ("greedy", "no cache", "beams", "sampled")):
        assert isinstance(d, np.ndarray), what
        np.testing.assert_array_equal(d, c, err_msg=what)


# ---------------------------------------------------------------------------- generation
GENERATE = {
    "greedy": dict(),
    "greedy_no_cache": dict(use_cache=False),
    "past_block_size": dict(max_new_tokens=12),  # the cache falls back to recomputing
    "sampling": dict(do_sample=True, temperature=0.8, top_k=5, top_p=0.9, seed=7),
    "sampling_returns": dict(do_sample=True, num_return_sequences=2, seed=7),
    "beams": dict(num_beams=3, num_return_sequences=2),
    "beams_no_cache": dict(num_beams=2, use_cache=False, eos_token_id=3),
}


@pytest.mark.parametrize("kw", GENERATE.values(), ids=GENERATE.keys())
def test_generation_matches_the_cpu(fake_cuda, kw):
    kw = {"max_new_tokens": 5, **kw}
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    want = gpt().generate(prompt, **kw)
    got = gpt().to("cuda").generate(prompt, **kw)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    got = gpt().to("cuda").generate(tl.tensor(prompt, device="cuda"), **kw)  # a device prompt
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------- the CLI
def test_train_then_sample_on_the_device_match_the_cpu(fake_cuda, tmp_path, monkeypatch, capsys):
    from test_trainer import TINY, write_corpus

    from tinyllm.cli import main

    (tmp_path / "data").mkdir()
    write_corpus(tmp_path / "data")
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(tmp_path / "data"))
    sets = [a for k, v in {**TINY, "max_iters": "3", "eval_interval": "3", "dropout": "0.0",
                                "grad_clip": "0.5"}.items() for a in ("--set", f"{k}={v}")]
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert main(["train", "--preset", "baby-shakespeare", *sets, "--device", device,
                     "--out", str(out), "--quiet"]) == 0
        capsys.readouterr()
        samples = []
        for flags in (["--greedy"], ["--temperature", "0.8", "--top-k", "5", "--seed", "1"],
                      ["--greedy", "--num-beams", "2"]):
            assert main(["sample", "--ckpt", str(out), "--prompt", "RO", "--max-new-tokens", "8",
                         "--device", device, *flags]) == 0
            samples.append(capsys.readouterr().out)
        metrics = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
        runs[device] = ([__import__("json").loads(m) for m in metrics], samples)
    (cpu_metrics, cpu_samples), (dev_metrics, dev_samples) = runs["cpu"], runs["cuda"]
    assert [m["step"] for m in dev_metrics] == [m["step"] for m in cpu_metrics] == [0, 3]
    for c, d in zip(cpu_metrics, dev_metrics):
        for key in ("train_loss", "val_loss"):
            assert d[key] == pytest.approx(c[key], rel=1e-5), (key, c["step"])
    assert dev_samples == cpu_samples and all(s.startswith("RO") for s in cpu_samples)
    backend.set_default_device("cpu")


# ---------------------------------------------------------------------------- edge cases
def test_load_state_dict_from_device_arrays(fake_cuda, tmp_path):
    src = gpt(seed=1).to("cuda")
    tl.save(src.state_dict(), tmp_path / "w.safetensors")
    want = gpt(seed=1).state_dict()
    for target_device in ("cuda", "cpu"):
        model = gpt(seed=2).to(target_device)
        model.load_state_dict(tl.load(tmp_path / "w.safetensors", device="cuda"))
        dev_state = {k: p.data for k, p in model.named_parameters()}  # device arrays as values
        assert all(backend.get_device(a) == target_device for a in dev_state.values())
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)
        other = gpt(seed=3).to(target_device)
        other.load_state_dict(dev_state)
        tensors = {k: tl.tensor(backend.to_device(v, "cpu")) for k, v in want.items()}
        other.load_state_dict(tensors)
        for k, v in other.state_dict().items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)


def test_optimizer_state_round_trips_through_the_device(fake_cuda):
    data = batches(2)
    model = gpt().to("cuda")
    _, _ = train_losses(model, data[:1])
    opt = model.configure_optimizers()
    loss = model(*data[0])[1]
    train_step(loss, opt, list(model.parameters()), 1e-2)
    host = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for s in host["state"].values() for v in s.values()
               if hasattr(v, "shape"))
    device_state = {"state": {i: {k: backend.to_device(v, "cuda") if hasattr(v, "shape") else v
                                  for k, v in s.items()} for i, s in host["state"].items()},
                    "param_groups": host["param_groups"]}
    for state in (host, device_state):
        opt2 = model.configure_optimizers()
        opt2.load_state_dict(state)
        for p in model.parameters():
            for k, v in opt2.state[id(p)].items():
                if hasattr(v, "shape"):
                    assert backend.get_device(v) == "cuda", k
                    np.testing.assert_array_equal(backend.to_device(v, "cpu"),
                                                  backend.to_device(opt.state[id(p)][k], "cpu"))


def test_host_data_is_moved_and_host_tensors_are_refused(fake_cuda):
    x = tl.tensor(np.arange(6.0).reshape(2, 3), device="cuda")
    host = np.arange(6.0).reshape(2, 3)
    # raw host data is moved: arithmetic, comparisons, where, masks, indexing
    for out, want in ((x + host, 2 * host), (x < host + 1, np.ones((2, 3), bool)),
                      (x.eq(host), np.ones((2, 3), bool)), (x >= 3.0, host >= 3),
                      (tl.where(host > 2, x, 0.0), np.where(host > 2, host, 0.0)),
                      (x[np.array([1, 0])], host[[1, 0]]), (x[host > 2], host[host > 2]),
                      (x.masked_fill(host > 2, -1.0), np.where(host > 2, -1.0, host))):
        assert out.device == "cuda"
        np.testing.assert_array_equal(out.numpy(), want)
    # a tensor on the CPU is refused, with the same kind of message everywhere
    cpu = tl.tensor(host)
    for use in (lambda: x + cpu, lambda: x < cpu, lambda: x.eq(cpu),
                lambda: tl.where(cpu > 2, x, 0.0), lambda: x[tl.tensor([1, 0])]):
        with pytest.raises(RuntimeError, match="cpu"):
            use()


def test_cross_entropy_and_embedding_targets(fake_cuda):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5)).astype(np.float32)
    t = np.array([1, -100, 4, 0])
    want = F.cross_entropy(tl.tensor(logits), t).item()
    dl = tl.tensor(logits, device="cuda")
    for targets in (t, t.tolist(), tl.tensor(t, device="cuda")):
        assert F.cross_entropy(dl, targets).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(RuntimeError, match="cross_entropy's targets is a tensor on cpu"):
        F.cross_entropy(dl, tl.tensor(t))
    with pytest.raises(ValueError, match="target id 7"):
        F.cross_entropy(dl, np.array([1, 7, 0, 0]))
    w = tl.tensor(logits, device="cuda")
    np.testing.assert_array_equal(F.embedding(np.array([3, 1]), w).numpy(), logits[[3, 1]])
    with pytest.raises(RuntimeError, match="embedding's ids is a tensor on cpu"):
        F.embedding(tl.tensor([3, 1]), w)
    with pytest.raises(IndexError, match="token id 9"):
        F.embedding(np.array([9]), w)
    nothing = F.cross_entropy(dl, np.full(4, -100))
    assert np.isnan(nothing.item())  # the mean over no rows, as PyTorch


def test_attention_mask_on_the_host(fake_cuda):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 3, 3)) < 0.7
    mask[..., 0] = True
    want = F.scaled_dot_product_attention(tl.tensor(q), tl.tensor(k), tl.tensor(v), mask=mask)
    dq, dk, dv = (tl.tensor(a, device="cuda") for a in (q, k, v))
    for m in (mask, tl.tensor(mask, device="cuda")):
        got = F.scaled_dot_product_attention(dq, dk, dv, mask=m, is_causal=True)
        ref = F.scaled_dot_product_attention(tl.tensor(q), tl.tensor(k), tl.tensor(v), mask=mask,
                                             is_causal=True)
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)
    got = F.scaled_dot_product_attention(dq, dk, dv, mask=mask)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="attention mask is a tensor on cpu"):
        F.scaled_dot_product_attention(dq, dk, dv, mask=tl.tensor(mask))


def test_tensor_from_device_scalars(fake_cuda):
    a = tl.tensor(np.arange(3.0, dtype=np.float32), device="cuda")
    s = a.sum()
    for data in ([s.data, a.max().data], [s, a.max()]):
        t = tl.tensor(data)
        assert t.device == "cuda" and t.shape == (2,)
        np.testing.assert_array_equal(t.numpy(), [3.0, 2.0])
    assert tl.tensor([[s, s]], device="cpu").numpy().tolist() == [[3.0, 3.0]]
