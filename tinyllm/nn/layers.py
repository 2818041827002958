"""The basic layers: Linear, Embedding, LayerNorm, Dropout and the activations."""

from __future__ import annotations

from tinyllm import functional as F
from tinyllm.nn import init
from tinyllm.nn.module import Module, Parameter


class Linear(Module):
    """y = x W^T + b. x (..., in_features) -> (..., out_features); W (out, in), b (out,).

    Initialised like PyTorch (uniform +-1/sqrt(in)); ``init_std`` gives GPT-2's N(0, std) instead.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_std=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features, in_features)
        w = init.normal(shape, init_std) if init_std else init.kaiming_uniform(shape, in_features)
        self.weight = Parameter(w)
        if bias:
            self.bias = Parameter(init.zeros(out_features) if init_std else
                                  init.kaiming_uniform((out_features,), in_features))
        else:
            self.bias = None

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) got input of shape "
                             f"{tuple(x.shape)}: its last axis must be {self.in_features}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``; ids (...) -> (..., dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float = 0.02):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim), init_std))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale and shift (C,)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(init.ones(dim))
        self.bias = Parameter(init.zeros(dim), requires_grad=bias) if bias else None

    def forward(self, x):
        if self.bias is None:
            # a bias-free LayerNorm (GPT configs with bias=False): a constant zero shift
            from tinyllm.tensor import zeros

            return F.layer_norm(x, self.weight, zeros(self.dim, dtype=x.dtype, device=x.device), self.eps)
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Zero entries with probability p in training mode (scaled by 1/(1-p)); identity in eval."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)
