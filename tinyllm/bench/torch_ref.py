"""The PyTorch reference: a nanoGPT-style GPT and the MLP, with tinyllm's parameter names.

Imported only when PyTorch is installed (``tinyllm.bench`` checks first). The GPT is nanoGPT's
model with the same config as ``tinyllm.models.gpt.GPT``: token + position embeddings, pre-LN
blocks with one fused qkv Linear and ``F.scaled_dot_product_attention(is_causal=True)``, GELU
(tanh approximation by default, as the NumPy reference), a final LayerNorm and an LM head tied
to the token embedding. Parameter names equal tinyllm's, so ``load_state_dict`` takes a tinyllm
state dict (as NumPy arrays) directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TorchGPT", "TorchMLP", "torch_state", "make_gpt_optimizer"]


class _Attention(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class _MLP(nn.Module):
    def __init__(self, c, approximate):
        super().__init__()
        self.fc = nn.Linear(c, 4 * c)
        self.proj = nn.Linear(4 * c, c)
        self.approximate = approximate

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class _Block(nn.Module):
    def __init__(self, c, n_head, eps, approximate):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c, eps=eps)
        self.attn = _Attention(c, n_head)
        self.ln_2 = nn.LayerNorm(c, eps=eps)
        self.mlp = _MLP(c, approximate)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """``TorchGPT(vocab_size, block_size, n_layer, n_head, n_embd, activation="gelu_tanh")``."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, activation="gelu_tanh",
                 eps=1e-5):
        super().__init__()
        approximate = "tanh" if activation in ("gelu_tanh", "gelu_new") else "none"
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(_Block(n_embd, n_head, eps, approximate)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=eps)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    @classmethod
    def from_config(cls, config) -> TorchGPT:
        return cls(config.vocab_size, config.block_size, config.n_layer, config.n_head,
                   config.n_embd, config.activation, config.layer_norm_eps)

    def forward(self, idx, targets=None):
        t = idx.shape[1]
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


class TorchMLP(nn.Sequential):
    """Linear-ReLU-...-Linear with names ``0.weight``, ``2.weight``, ... (tinyllm's Sequential)."""

    def __init__(self, sizes=(784, 1000, 1000, 10)):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


def torch_state(state: dict, device="cpu") -> dict:
    """``{name: NumPy array}`` -> ``{name: torch tensor}`` (copies)."""
    return {k: torch.tensor(v, device=device) for k, v in state.items()}


def make_gpt_optimizer(model, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1):
    """nanoGPT's AdamW groups: matrices decayed, vectors not (as ``GPT.configure_optimizers``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)
