"""The assistant's runs: the SFT and DPO tasks through the trainer, the preference pairs and the
replies, and ``tinyllm chat`` in a subprocess fed through stdin.

The trainer tests share one module fixture: a tiny base run on the Tang poems (3 steps) and a
tiny SFT run from it (full fine-tuning), so every later test starts from real run folders.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_assistant import FIVE, ROOT, SEVEN

from tinyllm.data.chat import IGNORE_INDEX
from tinyllm.tokenizers import CharTokenizer, ChatTokenizer


# ---------------------------------------------------------------------- the trainer tasks
def _train(cfg, out, **kw):
    from tinyllm.train.trainer import train

    return train(cfg, out=out, quiet=True, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny base LM on the Tang poems and a tiny SFT run from it (full fine-tuning)."""
    from tinyllm.train.config import TrainConfig
    from tinyllm.train.presets import preset_config

    root = tmp_path_factory.mktemp("assistant")
    base = preset_config("tang-char")
    _train(base, root / "base", overrides=dict(n_layer=1, n_head=2, n_embd=32, max_iters=3,
                                               eval_interval=3, eval_iters=1, batch_size=4,
                                               sample_chars=0))
    sft = TrainConfig(task="sft", corpus="tang_poems", max_iters=20, eval_interval=20,
                      eval_iters=2, batch_size=8, lr=3e-3, warmup_iters=2,
                      init_from=str(root / "base"), task_args={"n_eval": 6, "n_reverse": 200})
    result = _train(sft, root / "sft")
    return root, result


def test_sft_run_from_a_base_run(runs):
    from tinyllm.train import checkpoint as ckpt

    root, result = runs
    base = ckpt.load_checkpoint(root / "base", optimizer=False)
    sft = ckpt.load_checkpoint(root / "sft", optimizer=False)
    tok = sft.tokenizer
    assert isinstance(tok, ChatTokenizer) and tok.base.fingerprint() == base.tokenizer.fingerprint()
    cfg = json.loads((root / "sft" / "config.json").read_text())
    assert (cfg["n_layer"], cfg["n_embd"], cfg["n_head"]) == (1, 32, 2), "the base run's sizes"
    v = base.tokenizer.vocab_size
    assert sft.model["wte.weight"].shape == (v + 4, 32)
    first, last = result.metrics[0], result.metrics[-1]
    assert {"form_rate", "reverse_accuracy"} <= set(first), "step 0 measures the base model"
    assert last["val_loss"] < first["val_loss"] - 0.5, "fine-tuning lowers the masked loss"


def test_sft_loss_is_on_the_assistant_tokens_only(runs):
    from tinyllm.train.config import TrainConfig
    from tinyllm.train.tasks import build_task

    root, _ = runs
    cfg = TrainConfig.from_dict(json.loads((root / "sft" / "config.json").read_text()))
    from tinyllm.train.checkpoint import load_checkpoint

    task = build_task(cfg, tokenizer=load_checkpoint(root / "sft", optimizer=False).tokenizer)
    inputs, _ = task.batch("train", np.random.default_rng(0))
    tok = task.tokenizer
    for x, y in zip(inputs["idx"], inputs["targets"]):
        a = int(np.flatnonzero(x == tok.role_token_id("assistant"))[0])
        assert (y[:a] == IGNORE_INDEX).all(), "nothing before the reply is trained"
        assert y[a] != IGNORE_INDEX, "the reply's first token is predicted from <|assistant|>"
        end = int(np.flatnonzero(y == tok.end_token_id)[0])
        assert (y[a:end] == x[a + 1:end + 1]).all() and (y[end + 1:] == IGNORE_INDEX).all()


def test_lora_sft_keeps_the_base_frozen(runs):
    from tinyllm.train import checkpoint as ckpt
    from tinyllm.train.config import TrainConfig

    root, _ = runs
    cfg = TrainConfig(task="sft", corpus="tang_poems", max_iters=3, eval_interval=3,
                      eval_iters=1, batch_size=4, lr=1e-2, init_from=str(root / "base"),
                      task_args={"n_eval": 2, "n_reverse": 50, "lora_rank": 2,
                                 "lora_targets": "attn.qkv,mlp.fc"})
    _train(cfg, root / "lora")
    base = ckpt.load_checkpoint(root / "base", optimizer=False).model
    lora = ckpt.load_checkpoint(root / "lora").model
    adapters = [k for k in lora if ".lora_" in k]
    assert sorted(adapters) == [f"blocks.0.{m}.lora_{ab}" for m in ("attn.qkv", "mlp.fc")
                                for ab in "AB"]
    for k, w in base.items():
        got = lora[k] if k != "wte.weight" else lora[k][:len(w)]
        assert np.array_equal(got, w), f"{k} changed under LoRA"
    assert np.any(lora["blocks.0.attn.qkv.lora_B"]), "the adapters trained"


def _fixed_pairs(model, tokenizer, examples, k, temperature, seed, gold_chosen):
    """A real quatrain against a broken one, for every prompt."""
    for e in examples:  # requests the run's tokenizer encodes (a rare author's name may not)
        tokenizer.encode(e.prompt)
    return [(e, e.response, e.response[:-3] + "。") for e in examples]


def test_dpo_task_raises_the_chosen_replies(runs, monkeypatch):
    """DPO from the SFT run on fixed pairs (a real quatrain against a broken one): the implied
    reward margin grows and the reference stays the SFT model."""
    import tinyllm.train.preference as pref
    from tinyllm.train.config import TrainConfig

    monkeypatch.setattr(pref, "preference_pairs", _fixed_pairs)
    root, _ = runs
    cfg = TrainConfig(task="dpo", corpus="tang_poems", max_iters=30, eval_interval=30,
                      eval_iters=2, batch_size=8, lr=3e-3, warmup_iters=1,
                      init_from=str(root / "sft"),
                      task_args={"n_eval": 2, "n_reverse": 50, "n_prompts": 24,
                                 "n_val_prompts": 8, "beta": 0.5})
    result = _train(cfg, root / "dpo")
    first, last = result.metrics[0], result.metrics[-1]
    assert first["reward_margin"] == 0 and first["reward_accuracy"] == 0
    assert last["reward_margin"] > 0.1 and last["val_loss"] < first["val_loss"]


def test_dpo_steps_on_threads_and_in_micro_batches_take_the_plain_steps(runs, monkeypatch):
    """DPO's inputs keep the B pairs on axis 0 (chosen and rejected apart), so the parts of
    threads=2 and the micro-batches of grad_accum_steps=2 hold whole pairs, weighted by their
    number of pairs: the losses of the plain step, to float32 rounding."""
    import tinyllm.train.preference as pref
    from tinyllm.train.config import TrainConfig

    monkeypatch.setattr(pref, "preference_pairs", _fixed_pairs)
    root, _ = runs
    losses = {}
    for name, kw in {"plain": {}, "threads": {"threads": 2},
                     "micro": {"grad_accum_steps": 2}}.items():
        cfg = TrainConfig(task="dpo", corpus="tang_poems", max_iters=3, eval_interval=3,
                          eval_iters=1, batch_size=4, lr=3e-3, warmup_iters=1,
                          init_from=str(root / "sft"), **kw,
                          task_args={"n_eval": 2, "n_reverse": 50, "n_prompts": 8,
                                     "n_val_prompts": 4, "beta": 0.5})
        losses[name] = _train(cfg, root / f"dpo-{name}").losses
    assert len(losses["plain"]) == 3
    for name in ("threads", "micro"):
        np.testing.assert_allclose(losses[name], losses["plain"], rtol=0, atol=1e-4,
                                   err_msg=f"DPO's {name} steps left the plain trajectory")


def test_preference_pairs_keep_and_break_the_form():
    from tinyllm.data.instructions import Example
    from tinyllm.train.preference import preference_pairs

    tok = ChatTokenizer(CharTokenizer.from_text(FIVE + SEVEN + "作一首五言絕句"))
    replies = iter([FIVE, "春眠不覺曉。", SEVEN, SEVEN, FIVE + FIVE, FIVE])

    class Scripted:
        block_size = 64

        def generate(self, ids, n, **kw):
            rows = [ids[i].tolist() + tok.encode(next(replies)) + [tok.end_token_id]
                    for i in range(len(ids))]
            width = max(map(len, rows))
            return np.array([r + [tok.end_token_id] * (width - len(r)) for r in rows])

    ex = [Example("form", "作一首五言絕句", FIVE, 5)] * 3
    pairs = preference_pairs(Scripted(), tok, ex, 2, 1.0, seed=0)
    assert [(g, b) for _, g, b in pairs] == [(FIVE, "春眠不覺曉。"), (FIVE, FIVE + FIVE)], (
        "prompt 2's replies are both seven-character: no pair")
    replies = iter(["春眠", SEVEN])
    ex = [Example("form", "作一首五言絕句", "處處聞啼鳥，" * 4, 5)]
    assert preference_pairs(Scripted(), tok, ex, 2, 1.0, seed=0) == []
    replies = iter(["春眠", SEVEN])
    assert preference_pairs(Scripted(), tok, ex, 2, 1.0, 0, gold_chosen=True) == [
        (ex[0], ex[0].response, "春眠")], "gold_chosen: the real poem is the chosen reply"


def test_a_reply_ends_at_any_chat_token():
    """A model that opens another turn has ended its reply: the role token cuts it (and its
    text, which the tokenizer would not encode back as content, never enters a pair)."""
    from tinyllm.chat import TextStreamer
    from tinyllm.train.replies import reply_text

    tok = ChatTokenizer(CharTokenizer.from_text(FIVE))
    ids = tok.encode("春眠<|user|>不覺<|end|>")
    assert reply_text(tok, ids) == "春眠" and reply_text(tok, tok.encode("春眠<|end|>")) == "春眠"
    out = []
    streamer = TextStreamer(tok, out.append, tok.end_token_id)
    for i in ids:
        streamer(np.array([i]))
    assert "".join(out) == "春眠"


# ---------------------------------------------------------------------- tinyllm chat
def _chat(args, stdin_text=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    # SIGINT back to its default in the child: a shell without job control starts background
    # jobs (CI's, say) with SIGINT ignored, and Python then never raises KeyboardInterrupt
    return subprocess.Popen([sys.executable, "-m", "tinyllm", "chat", *args], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def test_chat_streams_replies_from_stdin_and_exits_on_end_of_input(runs):
    from tinyllm.chat import ChatSession
    from tinyllm.train.trainer import load_run

    root, _ = runs
    lines = ["作一首五言絕句", "倒讀，春風", "/reset", "寫一首李白的七言絕句"]
    proc = _chat(["--ckpt", str(root / "sft"), "--greedy", "--max-new-tokens", "12"])
    out, err = proc.communicate("\n".join(lines) + "\n", timeout=120)
    assert proc.returncode == 0, err
    _, task, _ = load_run(root / "sft")
    session = ChatSession(task.model, task.tokenizer, max_new_tokens=12, do_sample=False)
    want = [session.respond(lines[0]), session.respond(lines[1])]
    assert len(session.messages) == 4, "two turns kept"
    session.reset()
    want.append(session.respond(lines[3]))
    assert out.split("\n") == want + [""], f"stdout {out!r}, stderr {err!r}"


def test_chat_refuses_a_base_run_and_leaves_on_ctrl_c(runs):
    root, _ = runs
    proc = _chat(["--ckpt", str(root / "base")])
    _, err = proc.communicate("", timeout=120)
    assert proc.returncode == 2 and "fine-tune it first" in err and err.count("\n") == 1
    proc = _chat(["--ckpt", str(root / "sft"), "--greedy", "--max-new-tokens", "4"])
    proc.stdin.write("作一首五言絕句\n")
    proc.stdin.flush()
    proc.stdout.readline()  # the first reply's first line: the chat is reading or still replying
    # A reply may hold a newline of its own, so this Ctrl-C can land inside the reply (which it
    # drops, staying in the chat); then the next one lands at the prompt and leaves.
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_chat_loop_drops_an_interrupted_reply(monkeypatch, capsys):
    import io

    from tinyllm.chat import chat_loop

    class Session:
        calls = []

        def respond(self, text, write):
            self.calls.append(text)
            write("half")
            if len(self.calls) == 1:
                raise KeyboardInterrupt
            write(" done")

    monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\n"))
    session = Session()
    assert chat_loop(session) == 0
    out = capsys.readouterr()
    assert session.calls == ["one", "two"] and out.out == "half\nhalf done\n"
    assert "interrupted" in out.err


def test_train_init_of_a_missing_run_is_one_line(tmp_path, capsys):
    from tinyllm.cli import main

    code = main(["train", "--preset", "tang-sft", "--init", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "nothing" in err and err.count("\n") == 1, err
