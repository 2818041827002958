"""Data: corpora by name, cleaning, cached token streams and batches for each objective."""

from .batches import get_batch
from .chat import IGNORE_INDEX, chat_prompt_ids, collate_chat, fit_to_window, render_chat
from .classification import author_classification, stratified_split
from .cleaning import dedupe, normalize_unicode, normalize_whitespace, train_val_split
from .corpora import (
    CORPORA,
    CorpusError,
    Poem,
    cache_dir,
    corpus_path,
    download,
    load_corpus,
    load_tang_poems,
)
from .instructions import Example, instruction_splits, quatrain_form
from .mlm import MLMBatcher, make_nsp_pairs, mask_tokens, nsp_batch
from .seq2seq import (
    DigitVocab,
    collate_seq2seq,
    couplet_pairs,
    encode_text_pairs,
    synthetic_seq2seq,
)
from .tokens import TokenStream, encode_to_cache

__all__ = [
    "CORPORA", "CorpusError", "Poem", "cache_dir", "corpus_path", "download", "load_corpus",
    "load_tang_poems",
    "dedupe", "normalize_unicode", "normalize_whitespace", "train_val_split",
    "TokenStream", "encode_to_cache", "get_batch",
    "mask_tokens", "MLMBatcher", "make_nsp_pairs", "nsp_batch",
    "couplet_pairs", "synthetic_seq2seq", "collate_seq2seq", "DigitVocab", "encode_text_pairs",
    "author_classification", "stratified_split",
    "render_chat", "chat_prompt_ids", "collate_chat", "fit_to_window", "IGNORE_INDEX",
    "Example", "instruction_splits", "quatrain_form",
]
