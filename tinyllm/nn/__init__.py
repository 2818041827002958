"""``tinyllm.nn``: modules with parameters, PyTorch-style."""

from tinyllm.nn import init
from tinyllm.nn.attention import KVCache, MultiHeadAttention, merge_heads, split_heads
from tinyllm.nn.layers import GELU, Dropout, Embedding, LayerNorm, Linear, ReLU, Tanh
from tinyllm.nn.llama_layers import (
    GroupedQueryAttention,
    LlamaBlock,
    RMSNorm,
    RotaryEmbedding,
    SwiGLUFeedForward,
)
from tinyllm.nn.module import Module, ModuleList, Parameter, Sequential
from tinyllm.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_table
from tinyllm.nn.transformer import FeedForward, TransformerBlock

__all__ = [
    # the Module tree (module.py) and initialisers (init.py)
    "Module", "Parameter", "ModuleList", "Sequential", "init",
    # layers (layers.py) and positions (positional.py)
    "Linear", "Embedding", "LayerNorm", "Dropout", "GELU", "ReLU", "Tanh",
    "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "sinusoidal_table",
    # attention (attention.py) and the Transformer block (transformer.py)
    "MultiHeadAttention", "KVCache", "split_heads", "merge_heads", "FeedForward",
    "TransformerBlock",
    # today's decoder (llama_layers.py)
    "RMSNorm", "RotaryEmbedding", "SwiGLUFeedForward", "GroupedQueryAttention", "LlamaBlock",
]
