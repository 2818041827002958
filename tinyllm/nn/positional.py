"""Position encodings: where a token is, added to what it is.

Attention by itself is blind to order. The original Transformer adds a fixed sinusoidal table,
GPT-2 and BERT learn one vector per position.
"""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm.ids import check_ids
from tinyllm.nn import init
from tinyllm.nn.module import Module, Parameter
from tinyllm.tensor import Tensor


def sinusoidal_table(n_positions: int, dim: int, base: float = 10000.0):
    """The (n_positions, dim) table PE[pos, 2i] = sin(pos / base^(2i/dim)), PE[pos, 2i+1] = cos(...).

    Each pair of columns is a rotation at its own frequency, so PE[pos + k] is a fixed linear
    function of PE[pos]: relative offsets are easy for attention to read.
    """
    np = backend.np
    if dim % 2:
        raise ValueError(f"the sinusoidal table needs an even dimension, got {dim}")
    # BEGIN SOLUTION
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(base) * np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((n_positions, dim))
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)
    # END SOLUTION
    return table.astype(np.float32)


class SinusoidalPositionalEncoding(Module):
    """Fixed table, not learned: positions (T,) or a length -> (T, dim)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len, self.dim = max_len, dim
        self.register_buffer("table", Tensor(sinusoidal_table(max_len, dim)))

    def forward(self, t: int, offset: int = 0):
        if offset + t > self.max_len:
            raise ValueError(f"sequence of length {offset + t} is longer than the positional table "
                             f"({self.max_len}); build the model with a larger max_len")
        return self.table[offset:offset + t]


class LearnedPositionalEmbedding(Module):
    """One learned vector per position (GPT-2, BERT): ``max_len`` rows of size ``dim``.

    ``forward(positions)``: ``range(a, b)`` gives the rows a .. b-1, (b - a, dim), a slice of the
    table; an integer array (e.g. (B, T): one position per token, as a padded batch needs) gives
    (*positions.shape, dim), each position checked. ``forward(t, offset=0)`` is
    ``forward(range(offset, offset + t))``.
    """

    def __init__(self, max_len: int, dim: int, init_std: float = 0.02):
        super().__init__()
        self.max_len, self.dim = max_len, dim
        self.weight = Parameter(init.normal((max_len, dim), init_std))

    def forward(self, positions, offset: int = 0):
        if isinstance(positions, int):
            positions = range(offset, offset + positions)
        if not isinstance(positions, range):
            return self.weight[check_ids(positions, self.max_len, "positions", kind="position")]
        if positions.stop > self.max_len:
            raise ValueError(f"sequence of length {positions.stop} is longer than the "
                             f"{self.max_len} learned positions of this model")
        return self.weight[positions.start:positions.stop]
