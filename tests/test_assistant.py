"""From a language model to an assistant: the chat tokenizer and template, the instruction data,
streaming generation, LoRA on a model (the SFT and DPO runs and ``tinyllm chat`` are in
test_assistant_runs.py).
"""

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
