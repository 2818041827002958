"""The DeZero GPT: the benchmark's GPT written with DeZero 0.0.13's own API, as a DeZero user would.

The model is the one of ``tinyllm.models.gpt.GPT`` with ``activation="gelu_tanh"`` (the layout
of ``numpy_gpt`` and ``torch_ref``): token + position embeddings, pre-LN blocks (LayerNorm, fused
qkv Linear, causal attention, output projection, residual; LayerNorm, Linear, tanh GELU, Linear,
residual), final LayerNorm, LM head tied to the token embedding, mean cross-entropy (DeZero's
``softmax_cross_entropy``). Trained with DeZero's ``optimizers.Adam`` (0.0.13 has no AdamW: the
decoupled weight decay of the matrices is a subclass that shrinks them before Adam's update) and
DeZero's own ``optimizers.ClipGrad`` hook for the global-norm clipping. Every backward is DeZero's
autograd: the model is composed of ``dezero.functions`` only, with no Function of our own.

What DeZero lacks, composed from its Functions:

- LayerNorm: mean and variance from ``F.sum`` over the last axis, ``(var + eps) ** 0.5``.
- tanh GELU: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` from ``F.tanh`` and products.
- Batched matmul: ``F.matmul`` is 2-D only (``x.dot(W)`` forward, ``W.T`` reversing *all* axes
  in backward), and DeZero has no concatenation. Attention therefore loops over the heads and
  the sequences of the batch: each (sequence, head) is a 2-D ``q @ k.T`` (T x T) and
  ``att @ v`` (T x D) on ``F.get_item`` slices of one (B, T, 3C) qkv tensor; each head's output
  goes straight through its rows of the output projection (``sum_h y_h @ W_proj[h]``, which is
  ``concat_h(y_h) @ W_proj``), and the sequences are put back together with DeZero's
  ``GetItemGrad`` Function (the scatter that is ``get_item``'s backward, so its backward is
  ``get_item``), the concatenation DeZero does not have.
- Causal softmax: an additive (T, T) mask (0 on and below the diagonal, float32's most negative
  number above it), then ``F.softmax(axis=-1)``.

dtypes: the weights are float32 (as the MLP benchmark's DeZero model) and every constant in the
model is a ``np.float32``: DeZero turns a Python scalar operand into a 0-d NumPy array, which
NumPy 2 (NEP 50) promotes like a float64/int64 array, so ``1 + x`` or ``0.5 * x`` would make the
forward float64. DeZero's own backward is float64 regardless, as installed: the gradient of
``softmax_cross_entropy`` is ``gy * (1/N)`` (a 0-d float64) minus an int64 one-hot, and
``Tanh``'s ``1 - y * y`` and ``Pow``'s ``c * x ** (c - 1)`` promote the same way, so the
gradients from the logits down are float64 (the optimizer's in-place updates keep the
parameters float32). That is measured as it is, not patched.

The cube in the GELU is ``x * x * x``: ``x ** 3`` (DeZero's ``Pow``) hits NumPy's float power
for negative bases, ~50x slower than for positive ones (~23 ms per (768, 512) activation, about
+95 ms a baby step, 1 thread) -- a NumPy cliff, not DeZero's cost.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm.bench.numpy_gpt import check_reference_config
from tinyllm.bench.suites import _import_dezero

dezero = _import_dezero()  # ImportError when DeZero is absent (the callers check first)
import dezero.functions as F  # noqa: E402
from dezero import Layer, Model, Parameter, optimizers  # noqa: E402

__all__ = ["DezeroGPT", "DezeroAdamW", "make_dezero_gpt"]

F32 = np.float32
_C_GELU = F32(math.sqrt(2.0 / math.pi))


def _p(a):
    """A float32, C-ordered DeZero Parameter from an array (tinyllm state values)."""
    return Parameter(np.ascontiguousarray(a, dtype=F32))


class LayerNorm(Layer):
    def __init__(self, c, eps=1e-5):
        super().__init__()
        self.gamma = _p(np.ones(c))
        self.beta = _p(np.zeros(c))
        self.eps = F32(eps)

    def forward(self, x):
        inv_c = F32(1 / x.shape[-1])
        xc = x - F.sum(x, axis=-1, keepdims=True) * inv_c
        var = F.sum(xc * xc, axis=-1, keepdims=True) * inv_c
        return xc / (var + self.eps) ** 0.5 * self.gamma + self.beta


class Linear(Layer):
    """``y = x W + b`` with DeZero's W layout (in, out); ``F.linear`` does forward and backward."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.W = _p(np.zeros((n_in, n_out)))
        self.b = _p(np.zeros(n_out))

    def forward(self, x):
        return F.linear(x, self.W, self.b)


def gelu_tanh(x):
    # x * x * x, not x ** 3: see the module docstring
    return F32(0.5) * x * (F32(1) + F.tanh(_C_GELU * (x + F32(0.044715) * (x * x * x))))


class CausalSelfAttention(Layer):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = Linear(c, 3 * c)
        self.proj = Linear(c, c)
        self._masks = {}

    def _mask(self, t):
        if t not in self._masks:
            self._masks[t] = np.triu(np.full((t, t), np.finfo(F32).min, dtype=F32), k=1)
        return self._masks[t]

    def forward(self, x):
        """x (B, T, C) -> (B * T, C)."""
        b, t, c = x.shape
        h = self.n_head
        d = c // h
        scale, mask = F32(1 / math.sqrt(d)), self._mask(t)
        qkv = F.reshape(self.qkv(F.reshape(x, (b * t, c))), (b, t, 3 * c))
        w_heads = [self.proj.W[i * d:(i + 1) * d] for i in range(h)]  # (D, C) rows per head
        rows = []
        for s in range(b):
            seq = qkv[s]  # (T, 3C)
            out = None
            for i in range(h):
                q = seq[:, i * d:(i + 1) * d]
                k = seq[:, c + i * d:c + (i + 1) * d]
                v = seq[:, 2 * c + i * d:2 * c + (i + 1) * d]
                att = F.softmax(F.matmul(q, F.transpose(k)) * scale + mask, axis=-1)
                y = F.matmul(F.matmul(att, v), w_heads[i])  # (T, C): this head's projection
                out = y if out is None else out + y
            rows.append(F.GetItemGrad(s, (b, t, c))(out))  # sequence s into a (B, T, C) zero
        y = rows[0]
        for r in rows[1:]:
            y = y + r
        return F.reshape(y, (b * t, c)) + self.proj.b


class Block(Layer):
    def __init__(self, c, n_head, eps):
        super().__init__()
        self.ln_1 = LayerNorm(c, eps)
        self.attn = CausalSelfAttention(c, n_head)
        self.ln_2 = LayerNorm(c, eps)
        self.fc = Linear(c, 4 * c)
        self.proj = Linear(4 * c, c)

    def forward(self, x):
        """x (B, T, C), the residual stream (DeZero's ``Layer.__call__`` takes Variables only).

        F.linear is 2-D only, so the Linears see (B * T, C)."""
        b, t, c = x.shape
        x = F.reshape(x, (b * t, c)) + self.attn(self.ln_1(x))
        x = x + self.proj(gelu_tanh(self.fc(self.ln_2(x))))
        return F.reshape(x, (b, t, c))


class DezeroGPT(Model):
    """``DezeroGPT(vocab_size, block_size, n_layer, n_head, n_embd, eps=1e-5)``; the weights are
    zeros until ``load_state`` (a tinyllm ``state_dict`` as NumPy arrays)."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, eps=1e-5):
        super().__init__()
        self.n_layer = n_layer
        self.wte = _p(np.zeros((vocab_size, n_embd)))
        self.wpe = _p(np.zeros((block_size, n_embd)))
        for i in range(n_layer):
            setattr(self, f"block{i}", Block(n_embd, n_head, eps))
        self.ln_f = LayerNorm(n_embd, eps)

    @classmethod
    def from_config(cls, config) -> DezeroGPT:
        check_reference_config(config, "the DeZero GPT")
        return cls(config.vocab_size, config.block_size, config.n_layer, config.n_head,
                   config.n_embd, eps=config.layer_norm_eps)

    def named_params(self) -> dict:
        """tinyllm's parameter names -> (DeZero Parameter, transposed?)."""
        out = {"wte.weight": (self.wte, False), "wpe.weight": (self.wpe, False),
               "ln_f.weight": (self.ln_f.gamma, False), "ln_f.bias": (self.ln_f.beta, False)}
        for i in range(self.n_layer):
            blk, p = getattr(self, f"block{i}"), f"blocks.{i}."
            for name, layer in (("ln_1", blk.ln_1), ("ln_2", blk.ln_2)):
                out[p + name + ".weight"] = (layer.gamma, False)
                out[p + name + ".bias"] = (layer.beta, False)
            for name, layer in (("attn.qkv", blk.attn.qkv), ("attn.proj", blk.attn.proj),
                                ("mlp.fc", blk.fc), ("mlp.proj", blk.proj)):
                out[p + name + ".weight"] = (layer.W, True)  # tinyllm (out, in), DeZero (in, out)
                out[p + name + ".bias"] = (layer.b, False)
        return out

    def load_state(self, state: dict) -> None:
        for name, (param, transposed) in self.named_params().items():
            a = np.asarray(state[name])
            a = a.T if transposed else a
            if a.shape != param.shape:
                raise ValueError(f"parameter {name}: shape {a.shape}, expected {param.shape}")
            param.data = np.ascontiguousarray(a, dtype=F32)

    def forward(self, idx, targets):
        b, t = idx.shape
        c = self.wte.shape[1]
        x = F.reshape(self.wte[idx.reshape(-1)], (b, t, c)) + self.wpe[:t]  # (B, T, C)
        for i in range(self.n_layer):
            x = getattr(self, f"block{i}")(x)
        x = self.ln_f(F.reshape(x, (b * t, c)))
        logits = F.matmul(x, F.transpose(self.wte))  # tied LM head, (N, V)
        return F.softmax_cross_entropy(logits, targets.reshape(-1))


class DezeroAdamW(optimizers.Adam):
    """DeZero's Adam plus decoupled weight decay (``p -= lr * wd * p`` before the Adam update)
    on the parameters with 2+ dimensions (nanoGPT's grouping). DeZero's Adam puts eps outside
    the bias correction of v (``alpha * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``)."""

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(alpha, beta1, beta2, eps)
        self.weight_decay = weight_decay

    def update_one(self, param):
        if self.weight_decay and param.ndim >= 2:
            param.data *= F32(1 - self.alpha * self.weight_decay)
        super().update_one(param)


def make_dezero_gpt(cfg, state, batch, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1,
                    grad_clip=1.0):
    """The DeZero model loaded with ``state``, its optimizer, and one train-step closure."""
    model = DezeroGPT.from_config(cfg)
    model.load_state(state)
    opt = DezeroAdamW(lr, betas[0], betas[1], 1e-8, weight_decay).setup(model)
    if grad_clip:
        opt.add_hook(optimizers.ClipGrad(grad_clip))
    x, y = (np.asarray(a) for a in batch)

    def step():
        loss = model(x, y)
        model.cleargrads()
        loss.backward()
        opt.update()
        return loss

    return model, opt, step
