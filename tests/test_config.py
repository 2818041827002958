"""TrainConfig: presets, overrides with type coercion, validation messages, CLI exit status 2."""

import pytest

from tinyllm.cli import main
from tinyllm.train.config import ConfigError, TrainConfig, apply_overrides, coerce, parse_set
from tinyllm.train.presets import PRESETS, preset_config


def test_every_preset_is_a_valid_config():
    for name in PRESETS:
        cfg = preset_config(name).finalize().validate()
        assert cfg.preset == name
        assert cfg.lr_decay_iters == cfg.max_iters and cfg.ckpt_interval == cfg.eval_interval


def test_baby_shakespeare_is_nanogpts_cpu_run():
    c = preset_config("baby-shakespeare")
    assert (c.block_size, c.batch_size, c.n_layer, c.n_head, c.n_embd, c.dropout) == \
        (64, 12, 4, 4, 128, 0.0)
    assert (c.lr, c.min_lr, c.max_iters, c.warmup_iters) == (1e-3, 1e-4, 2000, 100)
    # the optimizer settings that beat nanoGPT's on this short run (docs/benchmarks.md)
    assert (c.betas, c.weight_decay, c.grad_clip) == ((0.9, 0.999), 0.0, 0.0)


def test_overrides_are_coerced_to_the_field_types():
    cfg = apply_overrides(TrainConfig(), parse_set(
        ["lr=3e-4", "max_iters=2e3", "betas=0.9,0.95", "lr_decay_iters=none", "device=cpu",
         "model_args.bias=false", "task_args.top_k=5", "dropout=0"]))
    assert cfg.lr == 3e-4 and cfg.max_iters == 2000 and isinstance(cfg.max_iters, int)
    assert cfg.betas == (0.9, 0.95) and cfg.lr_decay_iters is None and cfg.dropout == 0.0
    assert cfg.model_args == {"bias": False} and cfg.task_args == {"top_k": 5}


@pytest.mark.parametrize("key,value,words", [
    ("max_iters", "ten", ["max_iters", "integer"]),
    ("max_iters", "2.5", ["max_iters", "integer"]),
    ("lr", "fast", ["'lr'", "number"]),
    ("betas", "a,b", ["betas"]),
    ("model_args", "[1", ["model_args", "JSON object"]),
])
def test_a_wrong_type_names_the_key_and_the_type(key, value, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(TrainConfig(), {key: value})
    for w in words:
        assert w in str(e.value)


def test_bool_coercion():
    assert coerce("x", "yes", bool) is True and coerce("x", "0", bool) is False
    with pytest.raises(ConfigError, match="true or false"):
        coerce("x", "maybe", bool)


@pytest.mark.parametrize("overrides,words", [
    ({"nope": "1"}, ["unknown config key 'nope'", "max_iters"]),
    ({"task": "dance"}, ["'task'", "'lm'", "'mlm'"]),
    ({"device": "tpu"}, ["'device'", "cpu", "cuda"]),
    ({"n_embd": "100", "n_head": "3"}, ["n_embd", "n_head", "divisible"]),
    ({"dropout": "1.5"}, ["dropout", "[0, 1)"]),
    ({"batch_size": "0"}, ["batch_size", "positive"]),
    ({"betas": "0.9,1.5"}, ["betas"]),
    ({"corpus": "wikipedia"}, ["corpus", "tinyshakespeare"]),
])
def test_validation_names_the_key_and_the_allowed_values(overrides, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(TrainConfig(), overrides).finalize().validate()
    for w in words:
        assert w in str(e.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*baby-shakespeare"):
        preset_config("nope")


def test_set_needs_key_equals_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["lr"])


@pytest.mark.parametrize("argv,words", [
    (["train", "--preset", "nope"], ["unknown preset 'nope'"]),
    (["train", "--preset", "baby-shakespeare", "--set", "nope=1"], ["unknown config key"]),
    (["train", "--preset", "baby-shakespeare", "--set", "lr=abc"], ["'lr'", "number"]),
    (["train", "--preset", "baby-shakespeare", "--device", "tpu"], ["'device'"]),
    (["train", "--config", "missing.json"], ["missing.json"]),
    (["sample", "--ckpt", "no-such-run"], ["no-such-run"]),
    (["eval", "--ckpt", "no-such-run"], ["no-such-run"]),
])
def test_cli_errors_exit_2_without_a_traceback(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("tinyllm: error:")
    for w in words:
        assert w in err
    assert not (tmp_path / "runs").exists()  # a refused run leaves nothing behind


def test_cli_cuda_without_a_gpu_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from tinyllm.backend import cupy_or_error

    try:
        cupy_or_error()
        pytest.skip("a GPU is available here")
    except RuntimeError:
        pass
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "baby-shakespeare", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "'device'" in err and "cuda" in err and "Traceback" not in err


def test_cli_json_config_with_a_wrong_type(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text('{"batch_size": "many"}')
    assert main(["train", "--config", "c.json"]) == 2
    assert "'batch_size' must be an integer" in capsys.readouterr().err


def test_delegated_command_that_is_missing(monkeypatch, capsys):
    import tinyllm.cli as cli

    monkeypatch.setitem(cli.DELEGATES, "bench", ("tinyllm.no_such_module", "the benchmarks"))
    assert main(["bench", "--quick"]) == 2
    assert "not available" in capsys.readouterr().err


def test_delegated_command_gets_its_arguments(monkeypatch):
    import sys
    import types

    import tinyllm.cli as cli

    seen = []
    fake = types.ModuleType("tinyllm_fake_bench")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "tinyllm_fake_bench", fake)
    monkeypatch.setitem(cli.DELEGATES, "bench", ("tinyllm_fake_bench", "the benchmarks"))
    assert main(["bench", "--quick", "x"]) == 3 and seen == [["--quick", "x"]]
