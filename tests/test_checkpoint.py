"""Checkpoints: optimizer flattening, the save journal, and damaged folders refused by name."""

import json
import shutil

import numpy as np
import pytest
from test_trainer import TINY, own_corpus

from tinyllm.cli import main
from tinyllm.serialization import load_metadata
from tinyllm.train import checkpoint as ckpt
from tinyllm.train.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    from tinyllm.train.presets import preset_config
    from tinyllm.train.trainer import train

    root = tmp_path_factory.mktemp("ckpt")
    with own_corpus(root):
        train(preset_config("baby-shakespeare"), overrides={**TINY, "max_iters": "4"},
              out=root / "run", mode="quiet")
    return root / "run"


@pytest.fixture
def run_copy(good_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(good_run, dst)
    return dst


def test_optimizer_state_round_trip():
    import tinyllm as tl
    from tinyllm import nn
    from tinyllm.optim import AdamW

    tl.manual_seed(0)
    m = nn.Linear(3, 2)
    opt = AdamW([{"params": [m.weight], "weight_decay": 0.1},
                 {"params": [m.bias], "weight_decay": 0.0}], lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        (m(tl.randn(4, 3)) ** 2).sum().backward()
        opt.step()
    sd = opt.state_dict()
    arrays, rest = ckpt.flatten_optimizer_state(sd)
    assert set(arrays) == {"state.0.exp_avg", "state.0.exp_avg_sq", "state.1.exp_avg",
                           "state.1.exp_avg_sq"}
    rest = json.loads(json.dumps(rest))  # it travels as JSON in the safetensors header
    back = ckpt.unflatten_optimizer_state(arrays, rest)
    assert back["param_groups"] == sd["param_groups"]
    for i in sd["state"]:
        assert back["state"][i]["step"] == sd["state"][i]["step"] == 2
        for k in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(back["state"][i][k], sd["state"][i][k])


def test_a_good_checkpoint_loads(good_run):
    ck = load_checkpoint(good_run)
    assert ck.step == 4 and ck.tokenizer.vocab_size > 10 and ck.optimizer["state"]
    assert ck.model_meta["model_class"] == "GPT"


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "state.json",
                                  "config.json", "tokenizer.json"])
def test_a_missing_file_is_named(run_copy, name):
    (run_copy / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(run_copy)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_a_truncated_weight_file_is_named(run_copy, name):
    data = (run_copy / name).read_bytes()
    (run_copy / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{name}.*damaged"):
        load_checkpoint(run_copy)


@pytest.mark.parametrize("name", ["state.json", "config.json", "tokenizer.json"])
def test_json_that_is_not_json_is_named(run_copy, name):
    (run_copy / name).write_text('{"step": 4, ')
    with pytest.raises(CheckpointError, match=f"{name}.*damaged"):
        load_checkpoint(run_copy)


def test_files_of_two_different_steps_are_refused(run_copy):
    state = json.loads((run_copy / "state.json").read_text())
    state["step"] = 2
    (run_copy / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="model.safetensors belongs to step '4'.*step 2"):
        load_checkpoint(run_copy)


def test_the_cli_refuses_a_damaged_folder_naming_the_file(run_copy, capsys):
    (run_copy / "optimizer.safetensors").write_bytes(b"\x00" * 5)
    assert main(["train", "--resume", str(run_copy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "optimizer.safetensors" in err and "Traceback" not in err
    (run_copy / "model.safetensors").unlink()
    assert main(["sample", "--ckpt", str(run_copy)]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err


def _fake_state(run_dir, step):
    ck = load_checkpoint(run_dir)
    return ck.model, ck.optimizer, {**ck.state, "step": step}


def test_kill_while_writing_leaves_the_old_checkpoint(run_copy):
    # what a process killed before state.json was staged leaves behind
    stage = run_copy / ckpt.STAGING
    stage.mkdir()
    shutil.copy(run_copy / "model.safetensors", stage / "model.safetensors")
    (stage / "optimizer.safetensors").write_bytes(b"half")
    assert "discarded" in ckpt.recover(run_copy)
    assert not stage.exists() and load_checkpoint(run_copy).step == 4


def test_kill_while_moving_into_place_is_finished_on_recover(run_copy, tmp_path):
    model, opt, state = _fake_state(run_copy, 6)
    staged = tmp_path / "staged"
    shutil.copytree(run_copy, staged)
    ckpt.save_checkpoint(staged, 6, model, opt, state, {"model_class": "GPT"})
    # the journal state after the model file was moved, before the others
    stage = run_copy / ckpt.STAGING
    stage.mkdir()
    shutil.copy(staged / "model.safetensors", run_copy / "model.safetensors")
    for name in ("optimizer.safetensors", "state.json"):
        shutil.copy(staged / name, stage / name)
    with pytest.raises(CheckpointError, match="belongs to step '6'"):
        load_checkpoint(run_copy)  # a reader does not repair
    assert "finished" in ckpt.recover(run_copy)
    assert load_checkpoint(run_copy).step == 6
    assert load_metadata(run_copy / "optimizer.safetensors")["step"] == "6"
