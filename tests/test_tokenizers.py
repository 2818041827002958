"""Char and byte-level BPE tokenizers: round trips, hand-computed merges, a naive reference."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exercises_tokenizers import naive_train, ref_merge

from tinyllm.tokenizers import ByteBPETokenizer, CharTokenizer, Tokenizer, train_bpe
from tinyllm.tokenizers.bpe import pretokenize

# --- CharTokenizer ----------------------------------------------------------------------------


def test_char_round_trip_and_sorted_vocab(tmp_path):
    text = "To be, or not to be 床前明月光，疑是地上霜。🙂"
    tok = CharTokenizer.from_text(text)
    assert tok.itos == sorted(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text))
    assert tok.unk_token_id is None and tok.pad_token_id is None
    tok.save(tmp_path / "char.json")
    again = Tokenizer.load(tmp_path / "char.json")
    assert isinstance(again, CharTokenizer) and again.encode(text) == tok.encode(text)


def test_char_unknown_character_errors_or_maps_to_unk():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2"):
        tok.encode("abz")
    tok = CharTokenizer.from_text("abc", unk_token="<unk>", special_tokens=["<pad>"])
    assert tok.encode("abz") == [tok.stoi["a"], tok.stoi["b"], tok.unk_token_id]
    assert tok.pad_token_id is not None and tok.unk_token_id is not None
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        Tokenizer.load(tmp_path / "bad.json")
    CharTokenizer.from_text("ab").save(tmp_path / "c.json")
    with pytest.raises(ValueError, match="type 'char'"):
        ByteBPETokenizer.load(tmp_path / "c.json")


# --- BPE: the exercise tests (05.1, 05.2) check merge_word and the merge loop against
# independent references in test_exercises_tokenizers.py; this one runs train_bpe on the real corpus.


def test_train_bpe_on_shakespeare_matches_naive(shakespeare):
    text = shakespeare[:20_000]
    counter = Counter(pretokenize(text))
    words = [tuple(w.encode()) for w in counter]
    expected, _ = naive_train(words, list(counter.values()), 40)
    assert train_bpe(text, 256 + 40) == expected
    assert len(expected) == 40


@pytest.fixture(scope="module")
def shakespeare():
    from tinyllm.data import load_corpus

    try:
        return load_corpus("tinyshakespeare", download_missing=False)
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def bpe():
    text = ("Hello world! Hello there, wonderful world. 你好世界，世界你好。 "
            "naïve café ça va? 1234 12345 <|endoftext|> again and again ") * 5
    return ByteBPETokenizer.train(text, 256 + 60 + 1, special_tokens=["<|endoftext|>"])


def test_bpe_vocab_and_specials(bpe, tmp_path):
    assert bpe.vocab_size == 256 + 60 + 1
    eot = bpe.token_to_id("<|endoftext|>")
    assert eot == bpe.vocab_size - 1 == bpe.eos_token_id
    ids = bpe.encode("hi<|endoftext|>there")
    assert ids.count(eot) == 1 and bpe.decode(ids) == "hi<|endoftext|>there"
    assert len(bpe.encode("Hello world")) < len("Hello world".encode())  # merges were learned
    bpe.save(tmp_path / "bpe.json")
    again = Tokenizer.load(tmp_path / "bpe.json")
    s = "Hello wonderful 世界 <|endoftext|>!"
    assert again.encode(s) == bpe.encode(s) and again.fingerprint() == bpe.fingerprint()


def test_bpe_encode_equals_merges_applied_in_order(bpe, rng):
    alphabet = list("Helo wrd!你好世界 naïve1234")
    for _ in range(50):
        s = "".join(rng.choice(alphabet, size=int(rng.integers(0, 30))))
        expected = []
        for word in pretokenize(s):
            w = tuple(word.encode())
            for k, pair in enumerate(bpe.merges):
                w = ref_merge(w, pair, 256 + k)
            expected.extend(w)
        assert bpe.encode(s) == expected


@pytest.fixture(scope="module")
def small_bpe():
    return ByteBPETokenizer.train("the then there these 你好你好 éé <|endoftext|>" * 10, 256 + 30)


@settings(max_examples=300, deadline=None)
@given(s=st.text())
def test_bpe_round_trip_any_unicode(small_bpe, s):
    assert "".join(pretokenize(s)) == s
    assert small_bpe.decode(small_bpe.encode(s)) == s


def test_bpe_errors(bpe):
    with pytest.raises(ValueError, match=r"vocab_size=200.*256"):
        train_bpe("some text", 200)
    with pytest.raises(ValueError, match=r">= 258"):
        ByteBPETokenizer.train("some text", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ValueError, match="empty"):
        train_bpe("", 300)
    with pytest.raises(ValueError, match=r"token id 99999 at position 1"):
        bpe.decode([65, 99999])
