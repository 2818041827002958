"""Corpora by name: find the file locally, else download it (atomic, SHA-256 checked).

Search order for ``corpus_path(name)``:

1. ``$TINYLLM_DATA_DIR/<file>`` (CI and the course machines set it);
2. the cache folder: ``<repo>/data/`` in a source checkout (the package's parent folder holds
   ``setup.cfg``), else ``$XDG_CACHE_HOME/tinyllm`` or ``~/.cache/tinyllm``;
3. download from the public source into the cache folder (temporary file, SHA-256 verified,
   then renamed). ``tang_poems`` has no single-file source: the error says how to build it.

A file found locally is checked as a download is: its size, then its SHA-256 (computed once per
file and modification time in a process), so that a truncated or altered copy is refused with
``CorpusError`` instead of silently training on other text. ``verify=False`` skips the check
(your own text under a corpus's name); ``load_corpus(name, path=FILE)`` reads a file of your own
(never checked). An empty or malformed file raises ``CorpusError`` naming the file and line.

The opener used for downloads is injectable (``opener=``) so tests never touch the network.
"""

from __future__ import annotations

import csv
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tinyllm.atomic import atomic_open


class CorpusError(ValueError):
    """A corpus file that is not the expected one (size, SHA-256), empty, or malformed."""


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    filename: str
    sha256: str
    size: int
    url: str | None
    how_to_get: str


CORPORA: dict[str, CorpusInfo] = {
    "tinyshakespeare": CorpusInfo(
        "tinyshakespeare", "tinyshakespeare.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1_115_394,
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
        "input.txt",
        "download https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
        "tinyshakespeare/input.txt and save it as tinyshakespeare.txt",
    ),
    "tang_poems": CorpusInfo(
        "tang_poems", "tang_poems.tsv",
        "ddfd1bef4f6a532675dde9a52fb7f582790e08029e14cef6b6767b713e65b6b5", 5_953_803, None,
        "build it from the 全唐诗/poet.tang.*.json files of github.com/chinese-poetry/"
        "chinese-poetry: keep poems with 2 or 4 paragraphs, each two 5- or 7-character lines "
        "'X，X。'; write 'author<TAB>title<TAB>text' rows (text = paragraphs joined) under a "
        "header row author, title, text, saved as tang_poems.tsv (see data/README.md)",
    ),
}


@dataclass(frozen=True)
class Poem:
    author: str
    title: str
    text: str


def _info(name: str) -> CorpusInfo:
    try:
        return CORPORA[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}: known corpora are {sorted(CORPORA)}") from None


def cache_dir() -> Path:
    """``<repo>/data`` in a source checkout, else the platform cache folder for tinyllm."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "setup.cfg").is_file():
        return repo / "data"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinyllm"


def candidate_paths(name: str) -> list[Path]:
    info = _info(name)
    paths = []
    env = os.environ.get("TINYLLM_DATA_DIR")
    if env:
        paths.append(Path(env) / info.filename)
    paths.append(cache_dir() / info.filename)
    return paths


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, opener=None,
             progress: bool = True) -> Path:
    """Fetch ``url`` into ``dest`` atomically (temp file in the same folder, then rename),
    checking SHA-256 when given. ``opener(url)`` returns a file-like response
    (default ``urllib.request.urlopen``)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or urllib.request.urlopen
    h = hashlib.sha256()
    with atomic_open(dest, "wb") as out, opener(url) as resp:  # a partial download never
        headers = getattr(resp, "headers", None)                  # lands under the final name
        total = headers.get("Content-Length") if headers is not None else None
        from tqdm import tqdm  # noqa: PLC0415 (only when downloading)

        with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                  desc=dest.name, disable=not progress) as bar:
            while block := resp.read(1 << 16):
                out.write(block)
                h.update(block)
                bar.update(len(block))
        if sha256 is not None and h.hexdigest() != sha256:
            raise ValueError(f"checksum mismatch for {url}: got SHA-256 {h.hexdigest()}, "
                             f"expected {sha256}; the file was not saved to {dest}")
    return dest


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime_ns) -> SHA-256, hashed once per process


def verify_file(path: Path, info: CorpusInfo) -> None:
    """Refuse ``path`` unless it has ``info``'s size and SHA-256 (``CorpusError``)."""
    st = path.stat()
    fix = (f"Delete it so that tinyllm downloads the corpus again, or provide it by hand "
           f"({info.how_to_get}); if it is your own text on purpose, train on it with --set "
           f"corpus_path={path} or skip this check with --set verify_corpus=false")
    if st.st_size != info.size:
        raise CorpusError(f"{path} is not the {info.name} corpus tinyllm expects: it has "
                          f"{st.st_size:,} bytes, expected {info.size:,} (truncated or altered?). "
                          + fix)
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key) or sha256_file(path)
    if digest != info.sha256:
        raise CorpusError(f"{path} is not the {info.name} corpus tinyllm expects: its SHA-256 is "
                          f"{digest}, expected {info.sha256} (altered?). " + fix)
    _VERIFIED[key] = digest


def corpus_path(name: str, download_missing: bool = True, opener=None,
                progress: bool = True, verify: bool = True) -> Path:
    """Path of corpus ``name``'s file, downloading it into ``cache_dir()`` if needed. A local
    file is checked (size, SHA-256) unless ``verify=False``."""
    info = _info(name)
    looked = candidate_paths(name)
    for p in looked:
        if p.is_file():
            if verify:
                verify_file(p, info)
            return p
    problem = "no download source" if info.url is None else "downloading is off"
    if info.url is not None and download_missing:
        try:
            return download(info.url, looked[-1], info.sha256, opener, progress)
        except (OSError, ValueError) as e:
            problem = f"download from {info.url} failed: {e}"
    places = ", ".join(str(p) for p in looked)
    raise FileNotFoundError(
        f"corpus {name!r} ({info.filename}) not found; looked in: {places} "
        f"(set TINYLLM_DATA_DIR to a folder holding it). {problem}. To provide it by hand: "
        f"{info.how_to_get}, and put it in {looked[-1].parent} or in $TINYLLM_DATA_DIR "
        f"(expected SHA-256 {info.sha256})."
    )


def read_text_file(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``; ``CorpusError`` for an empty or undecodable file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file {path} is not UTF-8 text ({e})") from None
    if not text.strip():
        raise CorpusError(f"corpus file {path} is empty: delete it and fetch it again, or give "
                          "a file with text in it")
    return text


def _poem_rows(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise CorpusError(f"{path} is empty: expected a header row author<TAB>title<TAB>text")
        if [h.strip() for h in header] != ["author", "title", "text"]:
            raise CorpusError(f"{path} line 1: header is {header}, expected "
                              "['author', 'title', 'text'] separated by tabs")
        for row in reader:
            if len(row) != 3:
                raise CorpusError(f"{path} line {reader.line_num}: expected 3 tab-separated "
                                  f"columns (author, title, text), found {len(row)}: "
                                  f"{row!r}; fix or delete that line")
            yield Poem(*row)


def load_tang_poems(path: str | os.PathLike | None = None, **kwargs) -> list[Poem]:
    """Rows of ``tang_poems.tsv`` (header ``author, title, text``) as ``Poem`` records.
    ``path``: a file of your own (not checked against the corpus's SHA-256)."""
    path = Path(path) if path is not None else corpus_path("tang_poems", **kwargs)
    try:
        poems = list(_poem_rows(path))
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise CorpusError(f"{path}: not a tab-separated file tinyllm can read ({e})") from None
    if not poems:
        raise CorpusError(f"{path} has a header but no poems")
    return poems


def load_corpus(name: str, path: str | os.PathLike | None = None, **kwargs):
    """``tinyshakespeare`` -> str; ``tang_poems`` -> list[Poem]. ``path``: read this file of your
    own instead (in the corpus's format, unchecked); ``verify=False``: skip the check of the
    corpus file found by name."""
    if name == "tang_poems":
        return load_tang_poems(path, **kwargs)
    _info(name)
    return read_text_file(path if path is not None else corpus_path(name, **kwargs))
