"""tinyllm: large language models from scratch, on a small NumPy autograd engine.

    import tinyllm as tl
    import tinyllm.functional as F
    from tinyllm import nn, optim
"""

from tinyllm import functional
from tinyllm.activation_checkpoint import checkpoint
from tinyllm.autograd import Function, enable_grad, is_grad_enabled, no_grad
from tinyllm.backend import fast_paths, get_default_device, manual_seed, set_default_device
from tinyllm.gradcheck import GradcheckError, gradcheck
from tinyllm.tensor import (
    Tensor,
    arange,
    as_tensor,
    cat,
    concatenate,
    exp,
    from_numpy,
    is_tensor,
    log,
    ones,
    randn,
    sqrt,
    stack,
    tanh,
    tensor,
    where,
    zeros,
)

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "as_tensor", "from_numpy", "zeros", "ones", "randn", "arange",
    "concatenate", "cat", "stack", "where", "exp", "log", "sqrt", "tanh", "is_tensor", "no_grad",
    "enable_grad", "is_grad_enabled", "Function", "gradcheck", "GradcheckError", "manual_seed",
    "set_default_device", "get_default_device", "fast_paths", "functional", "save", "load",
    "checkpoint",
]


def __getattr__(name):
    # nn, optim and the weight files load on first use, keeping `import tinyllm` light
    if name in ("nn", "optim", "models", "data", "tokenizers"):
        import importlib

        return importlib.import_module(f"tinyllm.{name}")
    if name in ("save", "load"):
        from tinyllm import serialization

        return getattr(serialization, name)
    raise AttributeError(f"module 'tinyllm' has no attribute {name!r}")
