"""Hugging Face tokenizer files: ``tokenizer.json`` written and read, and the older formats read.

``save_pretrained(tok, dir)`` writes what ``tokenizers.Tokenizer.from_file`` and transformers'
``PreTrainedTokenizerFast`` load and encode to the same ids as ``tok.encode``:

=====================  ==========================================================================
tinyllm                ``tokenizer.json``
=====================  ==========================================================================
``CharTokenizer``      ``WordLevel`` model, every character its own pre-token (``Split`` on the
                       regex ``(?m).``), ``Fuse`` decoder; special tokens first, then the
                       characters sorted, as CharTokenizer numbers them
``ByteBPETokenizer``   ``BPE`` model over GPT-2's byte-level spelling of tokens (``Ġ`` is a
                       space), ``ByteLevel`` pre-tokenizer (GPT-2's regex, no prefix space)
``WordPieceTokenizer`` ``WordPiece`` model, ``BertNormalizer``, ``BertPreTokenizer``, the
                       ``[CLS] A [SEP] B [SEP]`` template, the ``WordPiece`` decoder
``ChatTokenizer``      its base tokenizer's file, the chat tokens as added tokens with the ids
                       after the model's vocabulary (read back as a ChatTokenizer)
=====================  ==========================================================================

plus ``tokenizer_config.json`` with the special-token roles (``eos_token``, ``pad_token``, ...)
and ``model_max_length``; a WordPiece folder also gets ``vocab.txt`` for older readers. Special
tokens are Hugging Face "added tokens": both libraries cut them out of the text before anything
else (tinyllm's CharTokenizer does not: a literal ``<pad>`` in a text is five characters to it).

``from_pretrained(dir)`` reads ``tokenizer.json`` (transformers 5 writes no ``vocab.txt``), else
GPT-2's ``vocab.json`` + ``merges.txt``, else BERT's ``vocab.txt``, with ``tokenizer_config.json``
(or ``special_tokens_map.json``) for the roles. A file of a kind tinyllm does not implement
(another normalizer, a prefix space, BPE dropout, ...) is refused with ``TokenizerError`` naming
the file and the key, never read approximately. A ``tokenizer.json``'s own ``padding`` and
``truncation`` settings are not applied: the caller chooses them (``WordPieceTokenizer.__call__``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import Tokenizer, TokenizerError, atomic_write_text, read_json
from .bpe import ByteBPETokenizer
from .char import CharTokenizer
from .chat import CHAT_TOKENS, ChatTokenizer
from .wordpiece import DEFAULT_SPECIAL_TOKENS, WordPieceTokenizer

__all__ = ["save_pretrained", "from_pretrained", "to_tokenizer_json", "from_tokenizer_json"]

TOKENIZER_FILE, CONFIG_FILE = "tokenizer.json", "tokenizer_config.json"
ROLE_KEYS = {"pad_token": "pad", "unk_token": "unk", "bos_token": "bos", "eos_token": "eos",
             "mask_token": "mask", "cls_token": "cls", "sep_token": "sep"}
CHAR_SPLIT = "(?m)."  # Oniguruma: (?m) lets "." match a newline too


# ------------------------------------------------------------------------------------ writing
def _added(tok: Tokenizer, specials) -> list[dict]:
    return [{"id": tok.token_to_id(s), "content": s, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True} for s in specials]


def _skeleton(added, normalizer, pre_tokenizer, post_processor, decoder, model) -> dict:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor, "decoder": decoder, "model": model}


def _char_json(tok: CharTokenizer) -> dict:
    model = {"type": "WordLevel", "vocab": dict(tok.stoi), "unk_token": tok.unk_token}
    split = {"type": "Split", "pattern": {"Regex": CHAR_SPLIT}, "behavior": "Isolated",
             "invert": False}
    return _skeleton(_added(tok, tok.extra_special_tokens), None, split, None, {"type": "Fuse"},
                     model)


def _bpe_json(tok: ByteBPETokenizer) -> dict:
    if len(tok.stoi) != tok.vocab_size:
        twice = sorted({t for i, t in enumerate(tok.itos) if tok.stoi[t] != i})
        raise TokenizerError(f"this BPE spells token(s) {twice[:5]} with two ids (two merges make "
                             "the same bytes), which tokenizer.json cannot hold: it maps each "
                             "string to one id. Save it with tok.save(path) instead")
    vocab = dict(tok.stoi)  # the special tokens too: an added token's id is its vocab id
    merges = [f"{tok.itos[a]} {tok.itos[b]}" for a, b in tok.merges]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
             "ignore_merges": False, "vocab": vocab, "merges": merges}
    level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}
    return _skeleton(_added(tok, tok.extra_special_tokens), None, level,
                     {**level, "trim_offsets": False}, level, model)


def _wordpiece_json(tok: WordPieceTokenizer) -> dict:
    model = {"type": "WordPiece", "unk_token": tok.special_tokens["unk"],
             "continuing_subword_prefix": "##",
             "max_input_chars_per_word": tok.max_input_chars_per_word, "vocab": dict(tok.stoi)}
    norm = {"type": "BertNormalizer", "clean_text": True,
            "handle_chinese_chars": tok.tokenize_chinese_chars,
            "strip_accents": tok.strip_accents, "lowercase": tok.do_lower_case}
    post = None
    cls_, sep = tok.special_tokens.get("cls"), tok.special_tokens.get("sep")
    if cls_ and sep:
        c, s = ({"SpecialToken": {"id": t, "type_id": n}} for t, n in ((cls_, 0), (sep, 0)))
        seq = lambda name, n: {"Sequence": {"id": name, "type_id": n}}  # noqa: E731
        post = {"type": "TemplateProcessing", "single": [c, seq("A", 0), s],
                "pair": [c, seq("A", 0), s, seq("B", 1), {"SpecialToken": {"id": sep,
                                                                           "type_id": 1}}],
                "special_tokens": {t: {"id": t, "ids": [tok.stoi[t]], "tokens": [t]}
                                   for t in (cls_, sep)}}
    specials = sorted(set(tok.special_tokens.values()), key=tok.stoi.__getitem__)
    return _skeleton(_added(tok, specials), norm, {"type": "BertPreTokenizer"}, post,
                     {"type": "WordPiece", "prefix": "##", "cleanup": True}, model)


def to_tokenizer_json(tok: Tokenizer) -> dict:
    """The Hugging Face ``tokenizer.json`` object of a tinyllm tokenizer."""
    if isinstance(tok, ChatTokenizer):  # the base's file, its added tokens after the vocab
        d = to_tokenizer_json(tok.base)
        d["added_tokens"] += _added(tok, tok.added_tokens)
        return d
    for cls, fn in ((CharTokenizer, _char_json), (ByteBPETokenizer, _bpe_json),
                    (WordPieceTokenizer, _wordpiece_json)):
        if isinstance(tok, cls):
            return fn(tok)
    raise TokenizerError(f"{type(tok).__name__} has no Hugging Face tokenizer.json form")


def _config_json(tok: Tokenizer) -> dict:
    roles = {key: tok.special_tokens[r] for key, r in ROLE_KEYS.items() if r in tok.special_tokens}
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", **roles}
    if isinstance(getattr(tok, "base", tok), WordPieceTokenizer):
        tok = getattr(tok, "base", tok)
        cfg.update(model_max_length=tok.model_max_length, do_lower_case=tok.do_lower_case,
                   strip_accents=tok.strip_accents,
                   tokenize_chinese_chars=tok.tokenize_chinese_chars)
    return cfg


def save_pretrained(tok: Tokenizer, directory) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (WordPiece: also ``vocab.txt``)
    into ``directory``, each atomically."""
    directory = Path(directory)
    doc = to_tokenizer_json(tok)
    atomic_write_text(directory / TOKENIZER_FILE, json.dumps(doc, ensure_ascii=False, indent=1))
    atomic_write_text(directory / CONFIG_FILE, json.dumps(_config_json(tok), indent=1) + "\n")
    if isinstance(tok, WordPieceTokenizer):
        atomic_write_text(directory / "vocab.txt", "\n".join(tok.itos) + "\n")


# ------------------------------------------------------------------------------------ reading
def _fail(where, what):
    raise TokenizerError(f"{where}: {what}")


def _read_config(directory: Path) -> dict:
    """``tokenizer_config.json`` (or ``special_tokens_map.json``), ``{}`` when neither exists."""
    for name in (CONFIG_FILE, "special_tokens_map.json"):
        path = directory / name
        if path.is_file():
            cfg = read_json(path, "JSON")
            if not isinstance(cfg, dict):
                _fail(path, f"holds a JSON {type(cfg).__name__}, expected an object")
            return cfg
    return {}


def _roles(cfg: dict, where) -> dict[str, str]:
    out = {}
    for key, role in ROLE_KEYS.items():
        val = cfg.get(key)
        if isinstance(val, dict):
            val = val.get("content")
        if val is not None and not isinstance(val, str):
            _fail(where, f"'{key}' must be a token string, got {val!r}")
        if val is not None:
            out[role] = val
    return out


_OBJECT_OR_NULL = (dict, type(None))


def _section(d: dict, key: str, where, types=_OBJECT_OR_NULL):
    val = d.get(key)
    if not isinstance(val, types):
        _fail(where, f"'{key}' must be a JSON object, got {type(val).__name__}")
    return val


def _dense_vocab(vocab, added, where) -> list[str]:
    """id -> token for ``vocab`` (token -> id) and the added tokens, which must cover 0..N-1."""
    if not isinstance(vocab, dict):
        _fail(where, f"'model.vocab' must be a JSON object of token -> id, got "
                     f"{type(vocab).__name__}")
    by_id = {}
    for t, i in [*vocab.items(), *((a["content"], a["id"]) for a in added)]:
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            _fail(where, f"token {t!r} has id {i!r}, not a non-negative integer")
        if by_id.setdefault(i, t) != t:
            _fail(where, f"id {i} is given to both {by_id[i]!r} and {t!r}")
    n = len(by_id)
    if sorted(by_id) != list(range(n)):
        gap = next(i for i in range(n + 1) if i not in by_id)
        _fail(where, f"the ids are not 0..{n - 1}: no token has id {gap}")
    return [by_id[i] for i in range(n)]


def _added_tokens(d: dict, where) -> list[dict]:
    added = d.get("added_tokens") or []
    if not isinstance(added, list) or not all(
            isinstance(a, dict) and isinstance(a.get("content"), str) and "id" in a
            for a in added):
        _fail(where, "'added_tokens' must be a list of objects with 'id' and 'content'")
    return sorted(added, key=lambda a: a["id"])


def _char_from_json(d, added, where, cfg) -> CharTokenizer:
    pre = _section(d, "pre_tokenizer", where)
    if d.get("normalizer") is not None or not pre or pre.get("type") != "Split" or \
            pre.get("pattern") != {"Regex": CHAR_SPLIT} or pre.get("behavior") != "Isolated":
        _fail(where, f"a WordLevel model is read only as tinyllm's character tokenizer (no "
                     f"normalizer, pre_tokenizer Split on {CHAR_SPLIT!r}, Isolated); this file "
                     f"has normalizer {d.get('normalizer')!r} and pre_tokenizer {pre!r}")
    model = d["model"]
    itos = _dense_vocab(model.get("vocab"), added, where)
    specials = [a["content"] for a in added if a.get("special", True)]
    tok = CharTokenizer([t for t in itos if t not in specials], unk_token=model.get("unk_token"),
                        special_tokens=specials)
    if tok.itos != itos:
        _fail(where, "the ids are not CharTokenizer's (special tokens first, then the characters "
                     "in sorted order), so tinyllm would encode differently")
    wrong = {r: t for r, t in _roles(cfg, where).items() if tok.special_tokens.get(r) != t}
    if wrong:
        _fail(where, f"roles {wrong} of tokenizer_config.json differ from the names "
                     "CharTokenizer gives its special tokens (<pad>, <unk>, <bos>, <eos>, <mask>)")
    return tok


def _check_byte_level(d, where) -> None:
    model, pre = d["model"], _section(d, "pre_tokenizer", where)
    bad = {k: model.get(k) for k in ("dropout", "unk_token", "continuing_subword_prefix",
                                     "end_of_word_suffix") if model.get(k) not in (None, "")}
    bad.update({k: model[k] for k in ("byte_fallback", "ignore_merges") if model.get(k)})
    if d.get("normalizer") is not None:
        bad["normalizer"] = d["normalizer"]
    if not pre or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or \
            not pre.get("use_regex", True):
        bad["pre_tokenizer"] = pre
    if bad:
        _fail(where, f"BPE option(s) {bad} are not supported: tinyllm reads GPT-2's byte-level "
                     "BPE (no normalizer, ByteLevel pre-tokenizer without a prefix space, no "
                     "dropout, no unknown token)")


def _merge_pairs(merges, where) -> list[tuple[str, str]]:
    out = []
    for r, m in enumerate(merges):
        pair = m.split(" ") if isinstance(m, str) else m
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            _fail(where, f"merge {r} is {m!r}: expected 'a b' or [a, b]")
        out.append((pair[0], pair[1]))
    return out


def _bpe(itos, merges, specials, cfg, where) -> ByteBPETokenizer:
    roles = _roles(cfg, where)
    try:
        return ByteBPETokenizer.from_vocab(itos, merges, specials, roles.get("eos"),
                                           roles.get("bos"))
    except TokenizerError as e:
        _fail(where, str(e))


def _bpe_from_json(d, added, where, cfg) -> ByteBPETokenizer:
    _check_byte_level(d, where)
    model = d["model"]
    itos = _dense_vocab(model.get("vocab"), added, where)
    merges = model.get("merges")
    if not isinstance(merges, list):
        _fail(where, "'model.merges' must be a JSON list")
    return _bpe(itos, _merge_pairs(merges, where), [a["content"] for a in added], cfg, where)


def _wordpiece(itos, cfg, norm, where, unk=None, max_chars=100) -> WordPieceTokenizer:
    specials = {**DEFAULT_SPECIAL_TOKENS, **_roles(cfg, where)}
    if unk is not None:
        specials["unk"] = unk
    mml = cfg.get("model_max_length", 512)
    try:
        return WordPieceTokenizer(
            itos, do_lower_case=bool(norm.get("lowercase", True)),
            strip_accents=norm.get("strip_accents"),
            tokenize_chinese_chars=bool(norm.get("handle_chinese_chars", True)),
            model_max_length=mml if isinstance(mml, int) and mml < 10**6 else 512,
            special_tokens=specials, max_input_chars_per_word=max_chars)
    except TokenizerError as e:
        _fail(where, str(e))


def _wordpiece_from_json(d, added, where, cfg) -> WordPieceTokenizer:
    model, norm = d["model"], _section(d, "normalizer", where) or {}
    pre = _section(d, "pre_tokenizer", where) or {}
    problems = {}
    if model.get("continuing_subword_prefix", "##") != "##":
        problems["model.continuing_subword_prefix"] = model["continuing_subword_prefix"]
    if norm.get("type") != "BertNormalizer" or not norm.get("clean_text", True):
        problems["normalizer"] = norm or None
    if pre.get("type") != "BertPreTokenizer":
        problems["pre_tokenizer"] = pre or None
    if problems:
        _fail(where, f"WordPiece option(s) {problems} are not supported: tinyllm reads BERT's "
                     "WordPiece (BertNormalizer with clean_text, BertPreTokenizer, prefix '##')")
    itos = _dense_vocab(model.get("vocab"), added, where)
    return _wordpiece(itos, cfg, norm, where, model.get("unk_token"),
                      int(model.get("max_input_chars_per_word", 100)))


def from_tokenizer_json(d: dict, path, cfg: dict | None = None) -> Tokenizer:
    """The tinyllm tokenizer of a parsed ``tokenizer.json`` (``cfg``: its
    ``tokenizer_config.json``, read from beside ``path`` when not given)."""
    path = Path(path)
    cfg = _read_config(path.parent) if cfg is None else cfg
    model = _section(d, "model", path, dict)
    added = _added_tokens(d, path)
    reader = {"WordLevel": _char_from_json, "BPE": _bpe_from_json,
              "WordPiece": _wordpiece_from_json}.get(model.get("type"))
    if reader is None:
        _fail(path, f"model type {model.get('type')!r} is not one tinyllm implements (WordLevel "
                    "characters, byte-level BPE, WordPiece)")
    vocab = model.get("vocab")
    ids = set(vocab.values()) if isinstance(vocab, dict) else set()
    beyond = [a for a in added if a["id"] not in ids]
    if not any(a["content"] in CHAT_TOKENS for a in beyond):
        return reader(d, added, path, cfg)
    # tokens added after the vocabulary with the chat format's among them: a ChatTokenizer
    base = reader(d, [a for a in added if a not in beyond], path, cfg)
    tok = ChatTokenizer(base, [a["content"] for a in beyond])
    wrong = {a["content"]: a["id"] for a in beyond if tok.added_to_id[a["content"]] != a["id"]}
    if wrong:
        _fail(path, f"the chat tokens {wrong} do not follow the vocabulary's {base.vocab_size} "
                    "ids in order, as ChatTokenizer numbers them")
    return tok


def _from_gpt2_files(directory: Path, cfg: dict) -> ByteBPETokenizer:
    where = directory / "vocab.json"
    vocab = read_json(where, "JSON")
    itos = _dense_vocab(vocab, [], where)
    lines = (directory / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    roles = _roles(cfg, directory / CONFIG_FILE)
    specials = [t for t in dict.fromkeys(roles.values()) if t in vocab]
    if not specials and "<|endoftext|>" in vocab:
        specials = ["<|endoftext|>"]
    return _bpe(itos, _merge_pairs(merges, directory / "merges.txt"), specials, cfg, where)


def _from_vocab_txt(directory: Path, cfg: dict) -> WordPieceTokenizer:
    where = directory / "vocab.txt"
    vocab = where.read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    norm = {"lowercase": cfg.get("do_lower_case", True), "strip_accents": cfg.get("strip_accents"),
            "handle_chinese_chars": cfg.get("tokenize_chinese_chars", True)}
    return _wordpiece([t.rstrip("\r") for t in vocab], cfg, norm, where)


def from_pretrained(directory: str | os.PathLike) -> Tokenizer:
    """Read a Hugging Face tokenizer folder (see the module docstring for what is read)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder: from_pretrained expects a Hugging "
                                "Face tokenizer folder (tokenizer.json, or vocab.json + "
                                "merges.txt, or vocab.txt)")
    cfg = _read_config(directory)
    if (directory / TOKENIZER_FILE).is_file():
        path = directory / TOKENIZER_FILE
        d = read_json(path)
        if not isinstance(d, dict):
            _fail(path, f"holds a JSON {type(d).__name__}, not a tokenizer object")
        return from_tokenizer_json(d, path, cfg)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return _from_gpt2_files(directory, cfg)
    if (directory / "vocab.txt").is_file():
        return _from_vocab_txt(directory, cfg)
    raise FileNotFoundError(f"{directory} holds no tokenizer: expected tokenizer.json, or "
                            f"vocab.json + merges.txt (GPT-2), or vocab.txt (BERT); found "
                            f"{sorted(p.name for p in directory.iterdir())}")

