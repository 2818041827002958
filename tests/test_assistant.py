"""From a language model to an assistant: the chat tokenizer and template, the instruction data,
streaming generation, LoRA on a model, the SFT and DPO tasks through the trainer, and
``tinyllm chat`` in a subprocess fed through stdin.

The trainer tests share one module fixture: a tiny base run on the Tang poems (3 steps) and a
tiny SFT run from it (full fine-tuning), so every later test starts from real run folders.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.data import Poem, collate_chat, fit_to_window, render_chat
from tinyllm.data.chat import IGNORE_INDEX, chat_prompt_ids
from tinyllm.data.instructions import (
    instruction_splits,
    line_lengths,
    quatrain_form,
    reversal_examples,
)
from tinyllm.models import GPT, GPTConfig, Llama, LlamaConfig
from tinyllm.nn.lora import (
    LoRALinear,
    apply_lora,
    find_linear_layers,
    lora_parameters,
    merge_lora,
)
from tinyllm.tokenizers import ByteBPETokenizer, CharTokenizer, ChatTokenizer, Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIVE = "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。"
SEVEN = "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。"


# ---------------------------------------------------------------------- the chat tokenizer
@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_chat_tokens_come_after_the_base_ids(kind, tmp_path):
    text = "春眠不覺曉，處處聞啼鳥。abc abd <|end|>\n" * 3
    base = (CharTokenizer.from_text(text) if kind == "char"
            else ByteBPETokenizer.train(text, vocab_size=280))
    tok = ChatTokenizer(base)
    v = base.vocab_size
    assert tok.vocab_size == v + 4 and tok.base_vocab_size == v
    ids = [tok.role_token_id(r) for r in ("system", "user", "assistant")] + [tok.end_token_id]
    assert sorted(ids) == list(range(v, v + 4)), "the added tokens take the ids after the base's"
    for t in ("春眠不覺曉", "abc abd\n", "處處聞啼鳥。"):
        assert tok.encode(t) == base.encode(t), "the base ids are unchanged"
    s = "<|user|>春眠<|end|><|assistant|>啼鳥。<|end|>"
    got = tok.encode(s)
    assert got == [ids[1], *base.encode("春眠"), ids[3], ids[2], *base.encode("啼鳥。"), ids[3]]
    assert tok.decode(got) == s
    assert tok.encode("<|end|>", split_special_tokens=True) == base.encode("<|end|>")
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert isinstance(again, ChatTokenizer) and again.fingerprint() == tok.fingerprint()
    assert again.encode(s) == got and type(again.base) is type(base)
    tok.save_pretrained(tmp_path / "hf")  # a run folder's form: the chat tokens after the vocab
    again = Tokenizer.from_pretrained(tmp_path / "hf")
    assert isinstance(again, ChatTokenizer) and again.fingerprint() == tok.fingerprint()
    assert again.encode(s) == got


def test_chat_tokenizer_json_encodes_as_hugging_face_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    text = "春眠不覺曉，處處聞啼鳥。abc abd\n" * 3
    for base in (CharTokenizer.from_text(text, unk_token="<unk>"),
                 ByteBPETokenizer.train(text, vocab_size=280)):
        tok = ChatTokenizer(base)
        tok.save_pretrained(tmp_path)
        s = "<|system|>abc<|end|><|user|>春眠<|end|><|assistant|>啼鳥。 abd<|end|>"
        got = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(s).ids
        assert got == tok.encode(s), f"{type(base).__name__}: expected {tok.encode(s)}, got {got}"


def test_chat_tokenizer_refuses_clashes():
    with pytest.raises(ValueError, match="already are tokens"):
        ChatTokenizer(CharTokenizer("ab", special_tokens=["<|end|>"]))
    tok = ChatTokenizer(CharTokenizer("ab"))
    with pytest.raises(TypeError, match="already a ChatTokenizer"):
        ChatTokenizer(tok)
    with pytest.raises(ValueError, match="unknown chat role"):
        tok.role_token_id("tool")


# ---------------------------------------------------------------------- template helpers
def test_collate_chat_shifts_the_labels_and_pads():
    tok = ChatTokenizer(CharTokenizer("abcd"))
    rows = [render_chat([{"role": "user", "content": "ab"}, {"role": "assistant", "content": c}],
                        tok) for c in ("c", "cdcd")]
    x, y = collate_chat(rows, pad_id=tok.end_token_id)
    for r, (ids, labels) in enumerate(rows):
        n = len(ids) - 1
        assert x[r, :n].tolist() == ids[:-1] and y[r, :n].tolist() == labels[1:]
        assert (y[r, n:] == IGNORE_INDEX).all() and (x[r, n:] == tok.end_token_id).all()
    trained = [tok.decode([i]) for i in y[1] if i != IGNORE_INDEX]
    assert trained == ["c", "d", "c", "d", "<|end|>"]
    x, y = collate_chat(rows, pad_id=0, block_size=5)
    assert x.shape == (2, 5) and y[1].tolist() == rows[1][1][1:6]


def test_fit_to_window_drops_the_oldest_turns_but_not_the_system_prompt():
    tok = ChatTokenizer(CharTokenizer("abcdefghij"))
    msgs = [{"role": "system", "content": "ab"}]
    for i in range(4):
        msgs += [{"role": "user", "content": "cde"}, {"role": "assistant", "content": "fgh" * (i + 1)}]
    msgs.append({"role": "user", "content": "ij"})
    full = len(chat_prompt_ids(msgs, tok))
    assert fit_to_window(msgs, tok, full) == msgs
    kept = fit_to_window(msgs, tok, full - 1)
    assert kept[0] == msgs[0] and kept[1:] == msgs[3:], "one whole user turn dropped"
    small = fit_to_window(msgs, tok, 12)
    assert small == [msgs[0], msgs[-1]] and len(chat_prompt_ids(small, tok)) <= 12
    with pytest.raises(ValueError, match="shorten it"):
        fit_to_window(msgs, tok, 6)


# ---------------------------------------------------------------------- instructions
def test_quatrain_form():
    assert quatrain_form(FIVE) == 5 and quatrain_form(SEVEN) == 7
    for bad in (FIVE[:-1], FIVE + "春", FIVE.replace("曉，", "曉。"), FIVE.replace("春", ""),
                FIVE + FIVE, "五言絕句", ""):
        assert quatrain_form(bad) is None, bad
    assert line_lengths(SEVEN) == [7, 7, 7, 7] and line_lengths("春眠，不") == [2, 1]


def test_instruction_splits_hold_out_poems_and_strings():
    rng = np.random.default_rng(0)
    chars = list("春眠不覺曉處聞啼鳥夜來風雨聲花落知多少朝辭白帝彩雲間千里江陵一日還")
    poems = []
    for i in range(60):
        n = 5 if i % 2 else 7
        lines = ["".join(rng.choice(chars, n)) for _ in range(4)]
        text = f"{lines[0]}，{lines[1]}。{lines[2]}，{lines[3]}。"
        poems.append(Poem(f"作者{i % 3}", f"題{i}", text))
    poems.append(Poem("某", "律詩", FIVE + FIVE))  # eight lines: not a quatrain, left out
    poems += [Poem("又", f"又題{i}", poems[i].text) for i in range(8)]  # texts held twice
    d = instruction_splits(poems, seed=3, val_fraction=0.2, n_reverse=300, n_reverse_val=40,
                           alphabet_size=10)
    poem_train = [e for e in d["train"] if e.form]
    poem_val = [e for e in d["val"] if e.form]
    twice = sum(p.text in {e.response for e in poem_val} for p in poems[:8])
    assert len(poem_val) == 14 and len(poem_train) == 68 - 14 - twice
    assert not {e.response for e in poem_val} & {e.response for e in poem_train}, (
        "a held-out poem's text is never trained on, under another title either")
    for e in poem_train + poem_val:
        assert quatrain_form(e.response) == e.form and ("五言" if e.form == 5 else "七言") in e.prompt
        same = [p for p in poems if p.text == e.response]
        if e.kind == "title":
            assert any(p.title in e.prompt for p in same)
        if e.kind == "author":
            assert any(p.author in e.prompt for p in same)
    rev_train = [e for e in d["train"] if e.kind == "reverse"]
    rev_val = [e for e in d["val"] if e.kind == "reverse"]
    assert len(rev_train) == 300 and len(rev_val) == 40
    assert not {e.prompt for e in rev_val} & {e.prompt for e in rev_train}
    for e in rev_train[:50]:
        s = e.prompt.split("，", 1)[1]
        assert e.response == s[::-1] and 3 <= len(s) <= 8
    again = instruction_splits(poems, seed=3, val_fraction=0.2, n_reverse=300, n_reverse_val=40,
                               alphabet_size=10)
    assert again == d, "the splits are a function of the seed"
    assert len({e.prompt for e in reversal_examples(50, "ab", rng, 2, 2)}) == 4, (
        "only 4 distinct strings of length 2 over 'ab' exist")


# ---------------------------------------------------------------------- streaming generation
def tiny_gpt(vocab=30, block=24):
    tl.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, n_embd=16))


@pytest.mark.parametrize("sampling", [{}, {"do_sample": True, "temperature": 1.5, "seed": 4}])
def test_streamer_sees_every_token_as_it_is_chosen(sampling):
    model, steps = tiny_gpt(), []
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    out = model.generate(idx, 8, streamer=lambda t: steps.append(t), **sampling)
    assert np.array_equal(np.stack(steps, axis=1), out[:, 3:])
    ref = model.generate(idx, 8, **sampling)
    assert np.array_equal(out, ref), "streaming changes nothing"
    eos = int(out[0, 5])
    steps.clear()
    out = model.generate(idx[:1], 8, eos_token_id=eos, streamer=steps.append, **sampling)
    assert len(steps) == out.shape[1] - 3 and int(steps[-1][0]) == eos
    with pytest.raises(ValueError, match="streamer"):
        model.generate(idx, 4, num_beams=2, streamer=steps.append)


def test_assistant_parts_run_on_the_test_device(rng, device):
    """LoRA, the DPO loss on a model's sequence log-probabilities, and streaming generation on
    ``device`` agree with the CPU (on a GPU or the strict fake one: array math through xp)."""
    from tinyllm import backend
    from tinyllm.dpo import dpo_loss, sequence_logprobs

    models = []
    for where in ("cpu", device):
        m = tiny_gpt()
        apply_lora(m, "attn.qkv,mlp.fc", rank=2, alpha=4.0)
        for p in lora_parameters(m):
            p.data = backend.to_device(np.full(p.shape, 0.1, dtype=np.float32), "cpu")
        models.append(m.to(where))
    x = rng.integers(0, 30, size=(4, 10))
    y = np.where(rng.random((4, 10)) < 0.5, -100, rng.integers(0, 30, size=(4, 10)))
    refs = rng.standard_normal((2, 2)).astype(np.float32) - 20
    losses = []
    for m, where in zip(models, ("cpu", device)):
        lp = sequence_logprobs(m(tl.tensor(x, device=where)), tl.tensor(y, device=where))
        loss = dpo_loss(lp[:2], lp[2:], tl.tensor(refs[:, 0], device=where),
                        tl.tensor(refs[:, 1], device=where), beta=0.5)
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    for p, q in zip(lora_parameters(models[0]), lora_parameters(models[1])):
        np.testing.assert_allclose(backend.to_device(q.grad, "cpu"), p.grad, atol=1e-5)
    steps = []
    for m in models:
        merge_lora(m)
    got = models[1].generate(x[:, :3], 5, streamer=steps.append)
    np.testing.assert_array_equal(got, models[0].generate(x[:, :3], 5))
    np.testing.assert_array_equal(np.stack(steps, axis=1), got[:, 3:])


# ---------------------------------------------------------------------- LoRA on models
def test_lora_on_gpt_trains_the_adapters_only_and_merges_back(rng):
    model = tiny_gpt()
    x = rng.integers(0, 30, size=(2, 10))
    before = model(x).numpy()
    names = apply_lora(model, rank=2, alpha=4)
    assert names == [f"blocks.0.{n}" for n in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]
    assert np.array_equal(model(x).numpy(), before), "B = 0: the adapted model starts as the base"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    lora = sum(p.size for p in model.parameters() if p.requires_grad)
    assert lora == 2 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))
    assert "blocks.0.attn.qkv.weight" in model.state_dict(), "base weights keep their names"
    opt = tl.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    frozen = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}
    for _ in range(3):
        opt.zero_grad()
        model(x, x)[1].backward()
        opt.step()
    assert all(np.array_equal(p.data, frozen[n]) for n, p in model.named_parameters()
               if n in frozen), "the base stays frozen"
    model.eval()
    adapted = model(x).numpy()
    assert not np.allclose(adapted, before)
    assert merge_lora(model) == 4
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    np.testing.assert_allclose(model(x).numpy(), adapted, atol=1e-5)


def test_lora_targets():
    model = tiny_gpt()
    assert find_linear_layers(model, "attn.qkv") == ["blocks.0.attn.qkv"]
    assert find_linear_layers(model, "proj") == ["blocks.0.attn.proj", "blocks.0.mlp.proj"]
    with pytest.raises(ValueError, match="matches no Linear layer.*attn.qkv"):
        find_linear_layers(model, "q_proj")
    llama = Llama(LlamaConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
    names = find_linear_layers(llama)
    assert "lm_head" not in names and len(names) == 7, "all-linear: every Linear but the head"


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


def test_dpo_task_raises_the_chosen_replies(runs, monkeypatch):
    """DPO from the SFT run on fixed pairs (a real quatrain against a broken one): the implied
    reward margin grows and the reference stays the SFT model."""
    import tinyllm.train.preference as pref
    from tinyllm.train.config import TrainConfig

    def fixed_pairs(model, tokenizer, examples, k, temperature, seed, gold_chosen):
        for e in examples:  # requests the run's tokenizer encodes (a rare author's name may not)
            tokenizer.encode(e.prompt)
        return [(e, e.response, e.response[:-3] + "。") for e in examples]

    monkeypatch.setattr(pref, "preference_pairs", fixed_pairs)
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
