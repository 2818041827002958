"""LoRA: low-rank adapters on chosen Linear layers (Hu et al. 2021), the base weights frozen.

Fine-tuning changes a pretrained weight W (out, in) by some ΔW. LoRA bets that the change a
task needs has a low rank and trains it as a product of two thin matrices:

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T,      A (r, in), B (out, r), r << min(in, out)

W and b stay frozen; only A and B are trained: r (in + out) numbers instead of in * out. B
starts at zero, so the adapted model starts as the pretrained one; A starts random (PyTorch's
Linear initialisation, as in the paper's code). The scale alpha / r keeps the size of the update
about the same when r changes, so a learning rate tuned for one rank suits another.

For inference the adapter is **merged**: W' = W + (alpha / r) B A is a plain weight of the
original shape, and the merged layer costs exactly what the pretrained one did.

    names = apply_lora(model, rank=8, alpha=16)          # every Linear in the blocks
    names = apply_lora(model, targets=["attn.qkv"], rank=4, alpha=8)
    ... train: only the adapters have requires_grad ...
    merge_lora(model)                                    # plain Linear layers again

``targets`` name layers by the end of their dotted names (``attn.qkv`` matches
``blocks.0.attn.qkv``, ``proj`` matches every ``...proj``); ``"all-linear"`` (the default, as in
PEFT) is every Linear layer but the output head. Exercise 20.2 is ``LoRALinear.forward`` and
``LoRALinear.merged_weight``.
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.nn import init
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module, Parameter

__all__ = ["LoRALinear", "apply_lora", "merge_lora", "lora_parameters", "find_linear_layers"]


class LoRALinear(Linear):
    """A Linear layer with a low-rank adapter: ``x W^T + b + (alpha / rank) x A^T B^T``.

    ``weight`` and ``bias`` keep their Linear names (so a pretrained state dict loads as it is)
    and are frozen; ``lora_A`` (rank, in) and ``lora_B`` (out, rank) are the trained ones.
    ``dropout`` applies to the adapter's input only (the paper's setting).
    """

    def __init__(self, in_features: int, out_features: int, rank: int = 8, alpha: float = 16.0,
                 bias: bool = True, dropout: float = 0.0, init_std=None):
        super().__init__(in_features, out_features, bias=bias, init_std=init_std)
        _init_adapter(self, rank, alpha, dropout)

    @classmethod
    def from_linear(cls, linear: Linear, rank: int = 8, alpha: float = 16.0,
                    dropout: float = 0.0) -> LoRALinear:
        """An adapter around ``linear``: its weight and bias Parameters are shared (and frozen)."""
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        _init_adapter(layer, rank, alpha, dropout)
        layer.train(linear.training)
        return layer

    def forward(self, x):
        """x (..., in) -> (..., out): the frozen layer plus the scaled low-rank update."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LoRALinear({self.in_features}, {self.out_features}) got input of "
                             f"shape {tuple(x.shape)}: its last axis must be {self.in_features}")
        # BEGIN SOLUTION
        y = F.linear(x, self.weight, self.bias)
        h = F.dropout(x, self.dropout, self.training)
        return y + F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling
        # END SOLUTION

    def merged_weight(self):
        """W + (alpha / rank) B A, the (out, in) weight of the merged layer (a Tensor, no graph)."""
        # BEGIN SOLUTION
        return (self.weight + (self.lora_B @ self.lora_A) * self.scaling).detach()
        # END SOLUTION

    def merge(self) -> Linear:
        """A plain ``Linear`` computing what this layer computes (in eval mode)."""
        out = Linear.__new__(Linear)
        Module.__init__(out)
        out.in_features, out.out_features = self.in_features, self.out_features
        out.weight = Parameter(self.merged_weight().data)
        out.bias = None if self.bias is None else Parameter(self.bias.data.copy())
        return out

    def extra_repr(self):
        return (f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}, "
                f"rank={self.rank}, alpha={self.alpha:g}")


def _init_adapter(layer: LoRALinear, rank, alpha, dropout) -> None:
    """Check the settings, freeze ``layer``'s weight and bias, and add its adapter: ``lora_A``
    PyTorch-Linear-uniform, ``lora_B`` zeros, beside the weight (its dtype and device)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"LoRA alpha must be a positive number, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    layer.rank, layer.alpha, layer.dropout = rank, float(alpha), float(dropout)
    layer.scaling = layer.alpha / rank
    layer.weight.requires_grad = False
    if layer.bias is not None:
        layer.bias.requires_grad = False
    w = layer.weight
    a = init.kaiming_uniform((rank, layer.in_features), layer.in_features, str(w.dtype))
    b = init.zeros((layer.out_features, rank), str(w.dtype))
    layer.lora_A = Parameter(backend.to_device(a, w.device))
    layer.lora_B = Parameter(backend.to_device(b, w.device))


def _owner(model: Module, name: str):
    """(the module holding submodule ``name``, its attribute name)."""
    owner = model
    parent, _, child = name.rpartition(".")
    for part in parent.split(".") if parent else ():
        owner = owner._modules[part]
    return owner, child


# ------------------------------------------------------------------------------ on a model
def find_linear_layers(model: Module, targets="all-linear") -> list[str]:
    """Dotted names of the Linear layers of ``model`` that ``targets`` selects (see the module
    doc). ValueError when a target matches nothing, listing the Linear layers there are."""
    linears = [n for n, m in model.named_modules() if isinstance(m, Linear) and n]
    if targets == "all-linear":
        head = {"lm_head", "head", "classifier"}
        return [n for n in linears if n.split(".")[-1] not in head]
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    chosen = []
    for t in targets:
        hits = [n for n in linears if n == t or n.endswith("." + t)]
        if not hits:
            kinds = sorted({".".join(n.split(".")[-2:]) for n in linears})
            raise ValueError(f"LoRA target {t!r} matches no Linear layer of "
                             f"{type(model).__name__}; its Linear layers end in {kinds}")
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in linears if n in chosen]


def apply_lora(model: Module, targets="all-linear", rank: int = 8, alpha: float = 16.0,
               dropout: float = 0.0) -> list[str]:
    """Freeze every parameter of ``model`` and put a ``LoRALinear`` adapter in place of each
    Linear layer ``targets`` selects (in place). Returns the adapted layers' names."""
    names = find_linear_layers(model, targets)
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear layer to adapt")
    model.requires_grad_(False)
    for name in names:
        owner, child = _owner(model, name)
        layer = getattr(owner, child)
        if isinstance(layer, LoRALinear):
            raise ValueError(f"{name} already has a LoRA adapter")
        setattr(owner, child, LoRALinear.from_linear(layer, rank, alpha, dropout))
    return names


def merge_lora(model: Module) -> int:
    """Replace every ``LoRALinear`` in ``model`` by its merged plain ``Linear`` (in place);
    returns how many were merged. The merged weights keep requires_grad off."""
    count = 0
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            owner, child = _owner(model, name)
            merged = m.merge()
            merged.requires_grad_(False)
            merged.train(m.training)
            setattr(owner, child, merged)
            count += 1
    return count


def lora_parameters(model: Module) -> list:
    """The adapters' parameters (``lora_A``, ``lora_B`` of every LoRALinear), in model order."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]

