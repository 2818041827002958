"""``tinyllm.nn``: modules with parameters, PyTorch-style."""

from tinyllm.nn import init
from tinyllm.nn.layers import GELU, Dropout, Embedding, LayerNorm, Linear, ReLU, Tanh
from tinyllm.nn.module import Module, ModuleList, Parameter, Sequential
from tinyllm.nn.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
)

__all__ = [
    "Module", "Parameter", "ModuleList", "Sequential", "Linear", "Embedding", "LayerNorm",
    "Dropout", "GELU", "ReLU", "Tanh", "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding", "sinusoidal_table", "init",
]
