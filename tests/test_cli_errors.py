"""Every error a user can cause on the command line is one line and exit status 2 (issue #16).

In-process through ``cli.main(argv)`` (a subprocess costs a second each; test_cli.py keeps the
real ones). Each case names what the line must say: the file, flag or key, and what to do.
"""

import errno
import json
import re
import shutil

import pytest
from test_checkpoint import good_run  # noqa: F401 (a fixture: a finished 4-step run)
from test_trainer import TINY, write_corpus

from tinyllm.cli import guarded, main


def sets(**extra):
    out = []
    for k, v in {**TINY, **extra}.items():
        out += ["--set", f"{k}={v}"]
    return out


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A working folder with a small corpus as TINYLLM_DATA_DIR."""
    (tmp_path / "data").mkdir()
    write_corpus(tmp_path / "data")
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run_copy(request, here):
    shutil.copytree(request.getfixturevalue("good_run"), here / "run")
    return here / "run"


def one_line(capsys, code, want_code=2):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == want_code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"tinyllm( \w+)?: error: ", lines[0]), err
    return lines[0]


def train(*extra, **settings):
    return main(["train", "--preset", "baby-shakespeare", *sets(**settings), "--quiet", *extra])


# --- the run folder ---------------------------------------------------------------------------
def test_out_that_is_a_regular_file(here, capsys):
    (here / "notes.txt").write_text("mine")
    msg = one_line(capsys, train("--out", "notes.txt"))
    assert "--out notes.txt is a file, not a folder" in msg
    assert (here / "notes.txt").read_text() == "mine"


def test_out_on_a_read_only_file_system(here, capsys, monkeypatch):
    from tinyllm.train import checkpoint

    def read_only(path, obj):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(checkpoint, "atomic_write_json", read_only)
    msg = one_line(capsys, train("--out", "ro"))
    assert "cannot write the run folder ro: Read-only file system" in msg
    assert "config.json" in msg and "choose a writable --out folder" in msg


def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes(here, capsys, monkeypatch):
    from tinyllm import serialization

    real, calls = serialization.save, {"n": 0}

    def fills_up(state, path, metadata=None):
        calls["n"] += 1
        if calls["n"] > 2:  # the step-2 checkpoint (2 files) fits, the step-4 one does not
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(state, path, metadata)

    monkeypatch.setattr(serialization, "save", fills_up)
    msg = one_line(capsys, train("--out", "full", ckpt_interval=2, max_iters=4))
    assert "cannot write the checkpoint of step 4 in full: No space left on device" in msg
    assert "The last good checkpoint (step 2) in full is kept" in msg
    assert "Free some space, then run: tinyllm train --resume full" in msg
    assert not (here / "full" / ".checkpoint-next").exists()  # the half-staged files are gone
    monkeypatch.setattr(serialization, "save", real)
    assert main(["train", "--resume", "full", "--quiet"]) == 0  # not a dead end
    assert json.loads((here / "full" / "state.json").read_text())["step"] == 4


def test_a_full_disk_before_the_first_checkpoint(here, capsys, monkeypatch):
    from tinyllm import serialization

    def full(state, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    real = serialization.save
    monkeypatch.setattr(serialization, "save", full)
    msg = one_line(capsys, train("--out", "early", max_iters=2))
    assert "No checkpoint was saved yet in early" in msg
    assert "tinyllm train --resume early starts the run again from step 0" in msg
    monkeypatch.setattr(serialization, "save", real)
    assert main(["train", "--resume", "early"]) == 0
    assert "holds no checkpoint yet" in capsys.readouterr().out


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed_or_restarted(run_copy, capsys):
    for name in ("state.json", "model.safetensors", "optimizer.safetensors"):
        (run_copy / name).unlink()  # what a kill before the first save leaves
    assert main(["sample", "--ckpt", "run"]) == 2
    assert "--resume run starts that run again from step 0" in capsys.readouterr().err
    assert main(["train", "--resume", "run"]) == 0
    out = capsys.readouterr().out
    assert "holds no checkpoint yet (the run stopped before its first one): starting that run " \
           "again from step 0" in out
    assert json.loads((run_copy / "state.json").read_text())["step"] == 4
    for name in ("state.json", "model.safetensors", "optimizer.safetensors"):
        (run_copy / name).unlink()
    assert train("--out", "run", max_iters=2) == 0
    assert json.loads((run_copy / "state.json").read_text())["step"] == 2
    assert train("--out", "run") == 2  # now it holds a checkpoint: a new run is refused
    assert "--resume run" in capsys.readouterr().err


# --- corpora ---------------------------------------------------------------------------------
def test_an_empty_corpus_file(here, capsys):
    (here / "empty.txt").write_text("")
    msg = one_line(capsys, train("--out", "r", corpus_path="empty.txt"))
    assert "corpus file empty.txt is empty" in msg


def test_a_malformed_tang_poems_tsv(here, capsys):
    (here / "poems.tsv").write_text("author\ttitle\ttext\nLi Bai\tonly two\n", encoding="utf-8")
    msg = one_line(capsys, main(["train", "--preset", "tang-char", *sets(), "--quiet",
                                 "--set", "corpus_path=poems.tsv", "--out", "r"]))
    assert "poems.tsv line 2: expected 3 tab-separated columns" in msg


def test_an_altered_corpus_is_refused_unless_told(here, capsys):
    msg = one_line(capsys, train("--out", "r", verify_corpus="true"))
    assert "tinyshakespeare.txt is not the tinyshakespeare corpus" in msg
    assert "verify_corpus=false" in msg


# --- settings --------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, words", [
    ("model_args.foo", "1", "'model_args.foo': GPTConfig has no setting 'foo'"),
    ("model_args.activation", "swish", "activation 'swish' is unknown"),
    ("model_args.bias", "maybe", "'model_args.bias' must be true or false, got 'maybe'"),
    ("model_args.n_embd", "big", "'model_args.n_embd' must be an integer, got 'big'"),
    ("task_args.foo", "1", "'task_args.foo': task 'lm' has no such setting (it reads none)"),
    ("divergence_factor", "0.5", "'divergence_factor' must be 0 (off) or above 1"),
])
def test_a_bad_setting_is_named(here, capsys, key, value, words):
    assert words in one_line(capsys, train("--out", "r", **{key: value}))
    assert not (here / "r").exists()  # refused before anything is written


def test_unknown_task_args_of_a_task_that_has_some(here, capsys):
    msg = one_line(capsys, main(["train", "--preset", "digits-reverse", "--quiet", "--out", "r",
                                 "--set", "task_args.n_trian=10"]))
    assert "'task_args.n_trian': task 'seq2seq' has no such setting (it reads " in msg
    assert "n_train" in msg


@pytest.mark.parametrize("argv, words", [
    (["eval", "--ckpt", "run", "--eval-iters", "0"], "--eval-iters: must be positive, got 0"),
    (["eval", "--ckpt", "run", "--eval-iters", "-3"], "--eval-iters: must be positive, got -3"),
    (["train", "--max-iters", "x"], "--max-iters: expected an integer, got 'x'"),
    (["demo", "--steps", "-1"], "--steps: must be >= 0, got -1"),
    (["bench", "--rounds", "-1"], "--rounds: must be positive, got -1"),
    (["sample", "--ckpt", "run", "--num-beams", "0"], "--num-beams: must be positive"),
])
def test_bad_flags_are_one_line(here, capsys, argv, words):
    assert words in one_line(capsys, main(argv))


def test_eval_iters_zero_is_refused_in_the_api_too(run_copy):
    from tinyllm.train.config import ConfigError
    from tinyllm.train.trainer import estimate_loss, load_run

    cfg, task, _ = load_run(run_copy, load_data=True)
    for n in (0, -1):
        with pytest.raises(ConfigError, match="positive number of batches"):
            estimate_loss(task, cfg, n)


# --- damaged run folders ---------------------------------------------------------------------
def test_a_100k_deep_json_header_in_model_safetensors(run_copy, capsys):
    deep = b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (run_copy / "model.safetensors").write_bytes(len(deep).to_bytes(8, "little") + deep)
    msg = one_line(capsys, main(["sample", "--ckpt", "run"]))
    assert "model.safetensors is damaged" in msg and "nests JSON too deeply" in msg


def test_tokenizer_json_holding_a_list(run_copy, capsys):
    (run_copy / "tokenizer.json").write_text("[1, 2]")
    msg = one_line(capsys, main(["sample", "--ckpt", "run"]))
    assert "tokenizer.json is damaged" in msg and "holds a JSON list" in msg


def test_state_json_without_batch_rng(run_copy, capsys):
    state = json.loads((run_copy / "state.json").read_text())
    del state["batch_rng"]
    (run_copy / "state.json").write_text(json.dumps(state))
    msg = one_line(capsys, main(["train", "--resume", "run", "--quiet"]))
    assert "state.json has no 'batch_rng'" in msg and "init_from=run" in msg


def test_a_tokenizer_that_is_not_the_models(run_copy, capsys):
    from tinyllm.tokenizers import CharTokenizer

    other = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ:,.?!\n")
    other.save(run_copy / "tokenizer.json")  # a valid tokenizer file: another one's ids
    msg = one_line(capsys, main(["sample", "--ckpt", "run"]))
    assert "tokenizer.json is not the tokenizer model.safetensors was trained with" in msg


# --- the exit statuses and --debug -----------------------------------------------------------
def test_a_diverging_run_stops_with_status_1(here, capsys, monkeypatch):
    from tinyllm.train import tasks

    original, n = tasks.LMTask.loss, {"step": 0}

    def growing(self, inputs):  # a finite loss that grows 1.6x per step: diverging
        n["step"] += 1
        return original(self, inputs) * (1.6 ** n["step"])

    monkeypatch.setattr(tasks.LMTask, "loss", growing)
    msg = one_line(capsys, train("--out", "div", max_iters=40, eval_interval=100), want_code=1)
    assert "the training loss diverged at step" in msg and "divergence_factor" in msg


def test_debug_shows_the_traceback(here):
    from tinyllm.train.config import ConfigError

    with pytest.raises(ConfigError, match="unknown preset"):
        main(["--debug", "train", "--preset", "nope"])
    with pytest.raises(ConfigError, match="unknown preset"):
        main(["train", "--preset", "nope", "--debug"])


def test_loader_errors_and_bugs_are_one_line(tmp_path, capsys):
    from tinyllm.models import GPT

    (tmp_path / "config.json").write_text("[1]")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert "config.json: holds a JSON list" in one_line(
        capsys, guarded(lambda: GPT.from_pretrained(tmp_path)))

    def bug():
        raise AttributeError("'NoneType' object has no attribute 'x'")

    msg = one_line(capsys, guarded(bug), want_code=3)
    assert "internal error AttributeError" in msg and "--debug" in msg
