"""Corpora resolution and download, cleaning, cached token streams, classification data."""

import hashlib
import io
import json

import numpy as np
import pytest

import tinyllm.data.corpora as corpora
from tinyllm.data import (
    TokenStream,
    author_classification,
    corpus_path,
    dedupe,
    download,
    load_corpus,
    load_tang_poems,
    normalize_unicode,
    normalize_whitespace,
    stratified_split,
    train_val_split,
)
from tinyllm.data.corpora import CORPORA, CorpusInfo, Poem
from tinyllm.tokenizers import CharTokenizer

# --- corpora ------------------------------------------------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No TINYLLM_DATA_DIR, cache folder under tmp_path, and a fake corpus served from disk."""
    monkeypatch.delenv("TINYLLM_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setattr(corpora, "cache_dir", lambda: cache)
    payload = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode()
    src = tmp_path / "remote.txt"
    src.write_bytes(payload)
    info = CorpusInfo("fake", "fake.txt", hashlib.sha256(payload).hexdigest(), len(payload),
                      src.as_uri(), "copy remote.txt by hand")
    monkeypatch.setitem(CORPORA, "fake", info)
    return cache, info, payload


def test_download_from_file_url_then_cached(isolated):
    cache, info, payload = isolated
    path = corpus_path("fake", progress=False)
    assert path == cache / "fake.txt" and path.read_bytes() == payload
    assert [p.name for p in cache.iterdir()] == ["fake.txt"]  # no temp file left behind

    def no_network(url):
        raise AssertionError("should not download again")

    assert corpus_path("fake", opener=no_network) == path
    assert load_corpus("fake").startswith("First Citizen")


def test_checksum_mismatch_and_unreachable(isolated, monkeypatch):
    cache, info, _ = isolated
    monkeypatch.setitem(CORPORA, "fake", CorpusInfo(**{**info.__dict__, "sha256": "0" * 64}))
    with pytest.raises(FileNotFoundError) as e:
        corpus_path("fake", progress=False)
    msg = str(e.value)
    assert "checksum mismatch" in msg and str(cache / "fake.txt") in msg and "by hand" in msg
    assert not cache.exists() or not any(cache.iterdir())

    def unreachable(url):
        raise OSError("network is unreachable")

    with pytest.raises(FileNotFoundError, match="network is unreachable"):
        corpus_path("fake", opener=unreachable)


def test_monkeypatched_urlopen(isolated, monkeypatch):
    cache, info, payload = isolated
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url: io.BytesIO(payload))
    dest = download("https://example.invalid/x", cache / "x.txt", info.sha256, progress=False)
    assert dest.read_bytes() == payload


def test_data_dir_first_and_missing_tang(isolated, tmp_path, monkeypatch):
    cache, _, _ = isolated
    d = tmp_path / "shared"
    d.mkdir()
    (d / "fake.txt").write_text("from the data dir")
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(d))
    # found first, checked as a download is, and refused: it is not the expected file
    with pytest.raises(corpora.CorpusError, match=r"fake.txt is not the fake corpus.*17 bytes"):
        load_corpus("fake")
    assert load_corpus("fake", verify=False) == "from the data dir"
    with pytest.raises(FileNotFoundError) as e:
        corpus_path("tang_poems")
    msg = str(e.value)
    assert str(d / "tang_poems.tsv") in msg and str(cache / "tang_poems.tsv") in msg
    assert "chinese-poetry" in msg
    with pytest.raises(ValueError, match="unknown corpus 'nope'"):
        corpus_path("nope")


def test_malformed_and_empty_files(tmp_path):
    bad = tmp_path / "poems.tsv"
    bad.write_text("author\ttitle\ttext\na\tb\tc\nonly\ttwo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"poems.tsv line 3.*found 2"):
        load_tang_poems(bad)
    bad.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_tang_poems(bad)
    empty = tmp_path / "e.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="e.txt is empty"):
        corpora.read_text_file(empty)


def test_malformed_corpora_raise_corpus_error(tmp_path):
    """Every problem of a corpus file is a CorpusError (the CLI prints it as one line)."""
    bad = tmp_path / "tang_poems.tsv"
    for content, words in [(b"author\ttitle\ttext\na\tb\n", "line 2"),
                           (b"", "empty"), (b"poet,title,text\n", "header"),
                           (b"author\ttitle\ttext\n\xff\xfe\n", "not UTF-8"),
                           (b"author\ttitle\ttext\n", "no poems")]:
        bad.write_bytes(content)
        with pytest.raises(corpora.CorpusError, match=words):
            load_tang_poems(bad)
    txt = tmp_path / "t.txt"
    txt.write_bytes(b" \n")
    with pytest.raises(corpora.CorpusError, match="t.txt is empty"):
        load_corpus("tinyshakespeare", path=txt)


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """A TINYLLM_DATA_DIR holding a copy of the corpus 'fake' (its size and SHA-256 known)."""
    payload = "".join(f"line {i}: some text of the corpus\n" for i in range(200)).encode()
    monkeypatch.setitem(CORPORA, "fake", CorpusInfo(
        "fake", "fake.txt", hashlib.sha256(payload).hexdigest(), len(payload), None, "by hand"))
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(tmp_path))
    (tmp_path / "fake.txt").write_bytes(payload)
    return tmp_path / "fake.txt", payload


def test_a_truncated_local_corpus_is_refused(fake_mirror):
    path, payload = fake_mirror
    assert load_corpus("fake") == payload.decode()
    path.write_bytes(payload[:-100])
    with pytest.raises(corpora.CorpusError) as e:
        load_corpus("fake")
    msg = str(e.value)
    assert str(path) in msg and f"{len(payload) - 100:,} bytes, expected {len(payload):,}" in msg
    assert "verify_corpus=false" in msg and "corpus_path=" in msg
    assert load_corpus("fake", verify=False) == payload[:-100].decode()  # the flag to skip


def test_an_altered_local_corpus_of_the_right_size_is_refused(fake_mirror):
    path, payload = fake_mirror
    path.write_bytes(payload.replace(b"line 7:", b"LINE 7:"))
    with pytest.raises(corpora.CorpusError, match=r"fake.txt.*SHA-256 is [0-9a-f]{64}, expected"):
        corpus_path("fake")
    assert load_corpus("fake", path=path).startswith("line 0")  # one's own file: unchecked


def test_real_corpora_checksums():
    try:
        sp = corpus_path("tinyshakespeare", download_missing=False)
        tp = corpus_path("tang_poems", download_missing=False)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert corpora.sha256_file(sp) == CORPORA["tinyshakespeare"].sha256
    assert corpora.sha256_file(tp) == CORPORA["tang_poems"].sha256
    poems = load_tang_poems(tp)
    assert len(poems) == 36439 and all(isinstance(p, Poem) for p in poems[:5])
    texts, labels, names = author_classification(poems, top_k=12)
    counts = np.bincount(labels)
    assert len(names) == 12 and counts.max() == 1848 and counts.min() == 446
    assert list(counts) == sorted(counts, reverse=True)


def test_cache_dir_in_source_checkout():
    assert corpora.cache_dir().name == "data"


# --- cleaning -----------------------------------------------------------------------------------


def test_cleaning():
    assert normalize_unicode("e\u0301") == "\u00e9"
    assert normalize_unicode("ﬁ ＡＢ", "NFKC") == "fi AB"
    with pytest.raises(ValueError, match="NFX"):
        normalize_unicode("x", "NFX")
    assert normalize_whitespace("  a \t b\u00a0c  \r\n\n\n\nd ") == "a b c\n\nd"
    assert normalize_whitespace("a\n b", keep_newlines=False) == "a b"
    assert dedupe(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_train_val_split():
    assert train_val_split("abcdefghij", 0.2) == ("abcdefgh", "ij")
    items = list(range(100))
    tr, va = train_val_split(items, 0.1, seed=3)
    assert len(va) == 10 and sorted(tr + va) == items and tr == sorted(tr) and va == sorted(va)
    assert train_val_split(items, 0.1, seed=3) == (tr, va)
    assert train_val_split(items, 0.1, seed=4) != (tr, va)
    with pytest.raises(ValueError, match="empty"):
        train_val_split([], 0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(items, 1.5)


def test_stratified_split(rng):
    labels = rng.integers(0, 4, size=400)
    tr, va = stratified_split(labels, 0.25, seed=1)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 400
    for c in range(4):
        assert (labels[va] == c).sum() == round((labels == c).sum() * 0.25)
    assert [a.tolist() for a in stratified_split(labels, 0.25, seed=1)] == [tr.tolist(),
                                                                          va.tolist()]


def test_author_classification_small():
    poems = [Poem("A", "t", "x1"), Poem("B", "t", "x2"), Poem("A", "t", "x3"),
             Poem("C", "t", "x4"), Poem("B", "t", "x5"), Poem("A", "t", "x6")]
    texts, labels, names = author_classification(poems, top_k=2)
    assert names == ["A", "B"] and texts == ["x1", "x2", "x3", "x5", "x6"]
    assert labels.tolist() == [0, 1, 0, 1, 0] and labels.dtype == np.int64
    with pytest.raises(ValueError, match="top_k=5"):
        author_classification(poems, top_k=5)


# --- token streams ------------------------------------------------------------------------------


def test_token_stream_cache(tmp_path, monkeypatch):
    text = "hello tinyllm, hello cache"
    tok = CharTokenizer.from_text(text)
    s1 = TokenStream.build(text, tok, tmp_path, "demo")
    assert isinstance(s1.tokens, np.memmap) and s1.tokens.dtype == np.uint16
    assert tok.decode(s1.tokens.tolist()) == text
    meta = json.loads(s1.path.with_suffix(".json").read_text())
    assert meta["length"] == len(text) and meta["tokenizer_fingerprint"] == tok.fingerprint()
    monkeypatch.setattr(tok, "encode", lambda t: pytest.fail("cached: must not re-encode"))
    s2 = TokenStream.build(text, tok, tmp_path, "demo")
    assert s2.path == s1.path and np.array_equal(s2.tokens, s1.tokens)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".bin", ".json"]


def test_token_stream_uint32_and_damage(tmp_path):
    class Big(CharTokenizer):
        vocab_size = 70_000

    text = "abcabc"
    tok = Big.from_text(text)
    s = TokenStream.build(text, tok, tmp_path)
    assert s.tokens.dtype == np.uint32 and s.tokens.tolist() == CharTokenizer.encode(tok, text)
    with open(s.path, "ab") as f:
        f.write(b"xx")
    with pytest.raises(ValueError, match="delete both files"):
        TokenStream.open(s.path)
    assert TokenStream.build(text, tok, tmp_path).tokens.tolist() == s.tokens.tolist()
    with pytest.raises(ValueError, match="empty"):
        TokenStream.build("", tok, tmp_path)
