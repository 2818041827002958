"""Pruning beyond the exercises: global masks, the optimizer that keeps zeros, every method of
``prune``, sparse attention in a GPT, and ``tinyllm prune`` on a tiny run folder."""

import json

import numpy as np
import pytest
from test_trainer import TINY, own_corpus

import tinyllm as tl
from tinyllm import optim
from tinyllm.cli import main
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.prune import (
    MaskedOptimizer,
    attention_cost,
    global_magnitude_masks,
    head_units,
    lm_logits_with_attention_mask,
    local_attention_mask,
    masks_from_zeros,
    nm_mask,
    prunable_weights,
    prune,
    sparsity_of,
    strided_attention_mask,
)
from tinyllm.serialization import load


def _gpt(seed=0, n_head=2):
    tl.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=n_head, n_embd=16))


# ----------------------------------------------------------------------------- masks
def test_global_magnitude_ranks_all_tensors_together(rng):
    weights = {"a": rng.standard_normal((4, 6)).astype(np.float32),
               "b": rng.standard_normal((5, 3)).astype(np.float32) * 0.1}  # small: pruned first
    masks = global_magnitude_masks(weights, 0.4)
    flat = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    threshold = np.sort(flat)[round(0.4 * flat.size) - 1]
    for name, w in weights.items():
        assert np.array_equal(masks[name], np.abs(w) > threshold), name
    assert (~masks["b"]).mean() > (~masks["a"]).mean()  # not the same sparsity per layer


def test_mask_arguments_are_checked():
    w = np.ones((2, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_mask(w, 2, 4)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        prune(_gpt(), "magnitude", 1.5)
    with pytest.raises(ValueError, match="leave out the sparsity"):
        prune(_gpt(), "2:4", 0.3)
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune(_gpt(), "random", 0.5)
    with pytest.raises(ValueError, match="loss_fn"):
        prune(_gpt(), "heads", 0.5)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_masked_adamw_keeps_pruned_weights_exactly_zero(rng, weight_decay):
    model = _gpt()
    idx, tgt = rng.integers(0, 13, (3, 16)), rng.integers(0, 13, (3, 16))
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(3):  # a dense phase: Adam's moments become nonzero everywhere
        opt.zero_grad()
        model(idx, tgt)[1].backward()
        opt.step()
    result = prune(model, "magnitude", 0.6)
    weights = prunable_weights(model)
    before = {n: w.data.copy() for n, w in weights.items()}
    masked = MaskedOptimizer(opt, weights, result.masks)
    for _ in range(5):
        masked.zero_grad()
        model(idx, tgt)[1].backward()
        masked.step()
    for name, mask in result.masks.items():
        w = weights[name].data
        assert (w[~mask] == 0).all(), f"{name}: a pruned weight moved"
        assert (w[mask] != before[name][mask]).mean() > 0.9, f"{name}: kept weights did not train"
    # the checkpoint of a masked optimizer is the wrapped one's
    state = masked.state_dict()
    fresh = MaskedOptimizer(optim.AdamW(model.parameters()), weights, result.masks)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["weight_decay"] == weight_decay
    assert np.array_equal(masks_from_zeros(weights)["blocks.0.mlp.fc.weight"],
                          result.masks["blocks.0.mlp.fc.weight"])


# ----------------------------------------------------------------------------- methods
def test_every_method_prunes_what_it_says(rng):
    idx, tgt = rng.integers(0, 13, (2, 16)), rng.integers(0, 13, (2, 16))
    for method, expected in [("magnitude", 0.5), ("global", 0.5), ("2:4", 0.5), ("1:4", 0.75)]:
        model = _gpt()
        r = prune(model, method, 0.5 if ":" not in method else None)
        weights = prunable_weights(model)
        assert r.record["weight_sparsity"] == pytest.approx(expected, abs=1e-6), method
        assert sparsity_of(weights) == pytest.approx(expected, abs=1e-6), method
        if method == "magnitude":
            assert all((w.data == 0).mean() == pytest.approx(0.5) for w in weights.values())
        if ":" in method:
            n = int(method[0])
            for w in weights.values():
                assert ((w.data.reshape(-1, 4) != 0).sum(1) == n).all()

    model = _gpt(n_head=4)
    with tl.no_grad():
        dense = model(idx).numpy()

    def loss_fn():
        return model(idx, tgt)[1].item()

    r = prune(model, "heads", 0.25, loss_fn)
    assert len(r.record["removed_units"]) == 2 and len(r.importance) == 8
    order = np.argsort(r.importance, kind="stable")[:2]
    assert sorted([int(i) // 4, int(i) % 4] for i in order) == r.record["removed_units"]
    # a removed head contributes nothing: zeroing only its output columns gives the same model
    ref = _gpt(n_head=4)
    proj = dict(ref.named_parameters())
    for layer, head in r.record["removed_units"]:
        proj[f"blocks.{layer}.attn.proj.weight"].data[:, head * 4:(head + 1) * 4] = 0
    with tl.no_grad():
        assert np.allclose(model(idx).numpy(), ref(idx).numpy(), atol=1e-6)
        assert not np.allclose(model(idx).numpy(), dense, atol=1e-4)

    model = _gpt()
    r = prune(model, "neurons", 0.5, lambda: model(idx, tgt)[1].item())
    fc = model.blocks[0].mlp.fc.weight.data
    assert len(r.record["removed_units"]) == 64 and 0 < (fc == 0).all(1).sum() < 64


def test_head_units_cover_q_k_v_and_output():
    model = _gpt(n_head=2)
    unit = head_units(model)[3]  # layer 1, head 1: rows 8:16, 24:32, 40:48 of qkv
    names = [u[0] for u in unit]
    assert names == ["blocks.1.attn.qkv.weight"] * 3 + ["blocks.1.attn.proj.weight"]
    assert [u[2][0] for u in unit[:3]] == [slice(8, 16), slice(24, 32), slice(40, 48)]


# ----------------------------------------------------------------------------- sparse attention
def test_attention_cost_counts_pairs():
    t = 64
    assert attention_cost(local_attention_mask(t, t)).fraction == 1.0
    local = attention_cost(local_attention_mask(t, 8))
    assert local.pairs == sum(min(i + 1, 8) for i in range(t)) and local.dense_pairs == 2080
    strided = attention_cost(strided_attention_mask(t, 8))
    assert strided.pairs == sum(min(i + 1, 8) + max(0, (i - 8) // 8 + 1) for i in range(t))
    assert attention_cost(np.ones((3, t, t), dtype=bool)).pairs == 3 * 2080  # causal part only


def test_a_gpt_with_a_local_attention_mask(rng):
    model = _gpt()
    model.eval()
    idx = rng.integers(0, 13, (2, 16))
    with tl.no_grad():
        dense = model(idx).numpy()
        full = lm_logits_with_attention_mask(model, idx, local_attention_mask(16, 16)).numpy()
        local = lm_logits_with_attention_mask(model, idx, local_attention_mask(16, 4)).numpy()
    assert np.array_equal(full, dense)
    # positions that see their whole prefix anyway (i < window) are unchanged; later ones differ
    assert np.allclose(local[:, :4], dense[:, :4], atol=1e-6)
    assert not np.allclose(local[:, 4:], dense[:, 4:], atol=1e-4)


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    """A tiny trained run folder ``dense`` (6 steps) and the corpus it was trained on."""
    root = tmp_path_factory.mktemp("runs")
    with own_corpus(root) as mp:
        mp.chdir(root)
        sets = [x for k, v in {**TINY, "max_iters": "6"}.items() for x in ("--set", f"{k}={v}")]
        assert main(["train", "--preset", "baby-shakespeare", *sets, "--out", "dense",
                     "--quiet"]) == 0
    return root


@pytest.fixture
def dense_run(dense_folder, tmp_path, monkeypatch):
    """A fresh working folder holding a copy of ``dense``; the corpus set up."""
    import shutil

    shutil.copytree(dense_folder / "dense", tmp_path / "dense")
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(dense_folder / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _zeros(path, names):
    w = load(path / "model.safetensors")
    return {n: w[n] == 0 for n in names}


def test_prune_command_fine_tunes_and_keeps_its_zeros(dense_run, capsys):
    assert main(["prune", "--ckpt", "dense", "--sparsity", "0.5", "--out", "p50",
                 "--finetune-iters", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "50.0% of the Linear weights zero" in out and "after 4 fine-tuning steps" in out
    run = dense_run / "p50"
    cfg = json.loads((run / "config.json").read_text())
    record = cfg["task_args"]["prune"]
    assert record["source"] == "dense" and cfg["init_from"] == "dense"
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 0 and steps[-1] == 4
    zeros = _zeros(run, record["params"])
    assert all(z.mean() == pytest.approx(0.5) for z in zeros.values())
    dense = load(dense_run / "dense" / "model.safetensors")
    tuned = load(run / "model.safetensors")
    assert any(not np.array_equal(dense[n][~z], tuned[n][~z]) for n, z in zeros.items())

    assert main(["train", "--resume", "p50", "--max-iters", "7", "--quiet"]) == 0
    assert all(np.array_equal(a, zeros[n]) for n, a in _zeros(run, record["params"]).items())
    assert main(["eval", "--ckpt", "p50", "--eval-iters", "1", "--json"]) == 0
    assert main(["sample", "--ckpt", "p50", "--max-new-tokens", "5"]) == 0

    # a new run started from the pruned one inherits its record, and so its zeros
    sets = [x for k, v in {**TINY, "max_iters": "3"}.items() for x in ("--set", f"{k}={v}")]
    assert main(["train", "--preset", "baby-shakespeare", *sets, "--set", "init_from=p50",
                 "--out", "again", "--quiet"]) == 0
    inherited = json.loads((dense_run / "again" / "config.json").read_text())["task_args"]
    assert inherited["prune"]["inherited_from"] == "p50"
    for n, a in _zeros(dense_run / "again", record["params"]).items():
        assert np.array_equal(a, zeros[n]), n


def test_prune_command_heads_and_errors(dense_run, capsys):
    assert main(["prune", "--ckpt", "dense", "--method", "heads", "--sparsity", "0.5",
                 "--out", "h50", "--quiet"]) == 0
    record = json.loads((dense_run / "h50" / "config.json").read_text())["task_args"]["prune"]
    assert len(record["removed_units"]) == 1 and record["method"] == "heads"
    assert main(["prune", "--ckpt", "dense", "--sparsity", "0", "--out", "p0",
                 "--finetune-iters", "1", "--quiet"]) == 0  # nothing pruned: a plain fine-tune
    capsys.readouterr()
    sets = [x for k, v in {**TINY, "max_iters": "1"}.items() for x in ("--set", f"{k}={v}")]
    assert main(["train", "--preset", "baby-shakespeare", *sets, "--set", "task_args.prune=5",
                 "--out", "bad"]) == 2
    assert "must be the record that tinyllm prune writes" in capsys.readouterr().err
    assert main(["prune", "--ckpt", "dense", "--method", "2:4", "--sparsity", "0.3",
                 "--out", "x"]) == 2
    assert "leave out the sparsity" in capsys.readouterr().err
    assert main(["prune", "--ckpt", "dense", "--sparsity", "0.5", "--out", "h50"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["prune", "--ckpt", "nowhere", "--sparsity", "0.5", "--out", "y"]) == 2
    assert "nowhere" in capsys.readouterr().err
