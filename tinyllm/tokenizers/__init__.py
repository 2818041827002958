"""Tokenizers: character-level, GPT-2 byte-level BPE and BERT WordPiece, one interface; the chat
format's special tokens added to any of them (``ChatTokenizer``)."""

from .base import Tokenizer
from .bpe import ByteBPETokenizer, best_pair, bpe_merge_loop, merge_word, pretokenize, train_bpe
from .char import CharTokenizer
from .chat import CHAT_TOKENS, ChatTokenizer
from .wordpiece import WordPieceTokenizer, basic_tokenize, wordpiece_split

__all__ = ["Tokenizer", "CharTokenizer", "ByteBPETokenizer", "WordPieceTokenizer",
           "ChatTokenizer", "CHAT_TOKENS",
           "train_bpe", "merge_word", "bpe_merge_loop", "best_pair", "pretokenize",
           "wordpiece_split", "basic_tokenize"]
