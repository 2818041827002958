"""The hand-written NumPy reference: a GPT and an MLP, forward AND backward by hand, no autograd.

This is the floor for tinyllm on NumPy: the same arithmetic as the engine's fused ops, written as
straight-line NumPy with no graph, no Python objects per op, in-place updates where they are
safe, and every parameter and gradient a view into one flat float32 buffer (so AdamW and the
global-norm clipping are a handful of vector operations over all 0.8M numbers at once).

GPT (GPT-2 / nanoGPT shape, the layout and parameter names of ``tinyllm.models.gpt.GPT``):
token + position embeddings, pre-LN blocks (LayerNorm, fused qkv Linear, causal attention with
an additive mask, output projection, residual; LayerNorm, Linear, GELU, Linear, residual), final
LayerNorm, LM head tied to the token embedding, mean cross-entropy. The activation is GPT-2's
tanh approximation of GELU (``activation="gelu_tanh"`` in ``GPTConfig``), so the comparison is
fair only against a tinyllm model built with the same activation. No dropout (p = 0).

float32 throughout: Python float scalars keep float32 under NumPy 2 and the only integer arrays
are the ids (used as indices, never multiplied into float arrays).
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm.bench.numpy_adamw import FlatParams, NumpyAdamW

__all__ = ["NumpyGPT", "NumpyMLP", "NumpyAdamW", "FlatParams", "gpt_param_shapes"]

F32 = np.float32
_C_GELU = math.sqrt(2.0 / math.pi)


def gpt_param_shapes(vocab_size, block_size, n_layer, n_embd) -> dict:
    """Parameter name -> shape, with the names of tinyllm's ``GPT.named_parameters()``."""
    v, t, c = vocab_size, block_size, n_embd
    shapes = {"wte.weight": (v, c), "wpe.weight": (t, c)}
    for i in range(n_layer):
        p = f"blocks.{i}."
        shapes.update({
            p + "ln_1.weight": (c,), p + "ln_1.bias": (c,),
            p + "attn.qkv.weight": (3 * c, c), p + "attn.qkv.bias": (3 * c,),
            p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
            p + "ln_2.weight": (c,), p + "ln_2.bias": (c,),
            p + "mlp.fc.weight": (4 * c, c), p + "mlp.fc.bias": (4 * c,),
            p + "mlp.proj.weight": (c, 4 * c), p + "mlp.proj.bias": (c,),
        })
    shapes.update({"ln_f.weight": (c,), "ln_f.bias": (c,)})
    return shapes


# ---------------------------------------------------------------------------- GPT pieces
def _linear(x, w, b):
    y = x @ w.T
    y += b
    return y


def _linear_back(dy, x, w, gw, gb, need_dx=True):
    """dW = dy^T x and db = sum dy written into the gradient views; returns dx = dy W."""
    np.matmul(dy.T, x, out=gw)
    np.sum(dy, axis=0, out=gb)
    return dy @ w if need_dx else None


def _ln(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.einsum("ij,ij->i", xc, xc)[:, None]
    var *= 1 / x.shape[-1]
    var += eps
    rstd = np.sqrt(var, out=var)
    np.reciprocal(rstd, out=rstd)
    xc *= rstd  # xhat
    y = xc * w
    y += b
    return y, xc, rstd


def _ln_back(dy, xhat, rstd, w, gw, gb):
    np.einsum("ij,ij->j", dy, xhat, out=gw)
    np.sum(dy, axis=0, out=gb)
    g = dy * w
    inv_c = 1 / g.shape[-1]
    m1 = g.sum(axis=-1, keepdims=True)
    m1 *= inv_c
    m2 = np.einsum("ij,ij->i", g, xhat)[:, None]
    m2 *= inv_c
    g -= m1
    xhat_m2 = xhat * m2
    g -= xhat_m2
    g *= rstd
    return g


def _gelu_tanh(x):
    t = x * x
    t *= 0.044715
    t += 1
    t *= x
    t *= _C_GELU
    np.tanh(t, out=t)
    y = t + 1
    y *= x
    y *= 0.5
    return y, t


def _gelu_tanh_back(dy, x, t):
    # d/dx 0.5 x (1 + t) = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2)
    inner = x * x
    inner *= 3 * 0.044715 * _C_GELU
    inner += _C_GELU
    inner *= x
    s = t * t
    np.subtract(1, s, out=s)
    s *= inner
    s += t
    s += 1
    s *= 0.5
    s *= dy
    return s


def _scatter_rows(target, ids, rows):
    """``target[ids] += rows`` with repeated ids adding up: sort the ids, sum each run with
    ``np.add.reduceat``, add once per distinct id (about 5x faster than ``np.add.at``)."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    target[s[starts]] += np.add.reduceat(rows[order], starts, axis=0)


def check_reference_config(config, who: str) -> None:
    """The baselines implement one configuration: tanh GELU, biases, no dropout."""
    if config.activation not in ("gelu_tanh", "gelu_new"):
        raise ValueError(f"{who} implements the tanh GELU only; build the tinyllm model with "
                         f"activation='gelu_tanh' (got {config.activation!r})")
    if config.dropout or not config.bias:
        raise ValueError(f"{who} has no dropout and always has biases")


class NumpyGPT:
    """``NumpyGPT(vocab_size, block_size, n_layer, n_head, n_embd, eps=1e-5, seed=0)``.

    ``loss_and_grads(idx, targets)`` runs forward and backward and leaves the gradients in
    ``self.grads`` (views of ``self.store.grad_flat``); ``train_step`` adds clipping and AdamW.
    """

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, eps=1e-5, seed=0,
                 lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0):
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.V, self.Tmax, self.L, self.H, self.C = vocab_size, block_size, n_layer, n_head, n_embd
        self.eps = eps
        self.store = FlatParams(gpt_param_shapes(vocab_size, block_size, n_layer, n_embd))
        self.params, self.grads = self.store.params, self.store.grads
        rng = np.random.default_rng(seed)
        proj_std = 0.02 / math.sqrt(2 * n_layer)
        for n, p in self.params.items():
            if n.endswith("ln_1.weight") or n.endswith("ln_2.weight") or n == "ln_f.weight":
                p[...] = 1
            elif p.ndim == 2:
                std = proj_std if n.endswith("proj.weight") else 0.02
                p[...] = rng.standard_normal(p.shape, dtype=F32) * F32(std)
        self.opt = NumpyAdamW(self.store, lr, betas, 1e-8, weight_decay, grad_clip)
        self._masks = {}

    @classmethod
    def from_config(cls, config, **kwargs) -> NumpyGPT:
        """From a ``tinyllm.models.gpt.GPTConfig`` (which must use ``activation="gelu_tanh"``)."""
        check_reference_config(config, "the NumPy reference")
        return cls(config.vocab_size, config.block_size, config.n_layer, config.n_head,
                   config.n_embd, eps=config.layer_norm_eps, **kwargs)

    def load_state(self, state: dict) -> None:
        self.store.load(state)

    def _mask(self, t):
        m = self._masks.get(t)
        if m is None:
            m = np.triu(np.full((t, t), np.finfo(F32).min, dtype=F32), k=1)
            self._masks[t] = m
        return m

    # ------------------------------------------------------------------ forward + backward
    def loss_and_grads(self, idx, targets, backward=True) -> float:
        """One step's loss and, with ``backward``, every gradient into ``self.grads``.

        Written straight through on purpose (about 90 lines): this is the hand-written
        baseline the bench compares tinyllm with, so it has no helper calls or framework
        overhead that a reader would have to discount."""
        P, G = self.params, self.grads
        B, T = idx.shape
        C, H = self.C, self.H
        D, N = C // H, B * T
        scale = F32(1 / math.sqrt(D))
        mask = self._mask(T)

        x = P["wte.weight"][idx.reshape(-1)]  # (N, C), a fresh array
        x += np.tile(P["wpe.weight"][:T], (B, 1))
        saved = []
        for i in range(self.L):
            p = f"blocks.{i}."
            h, xhat1, rstd1 = _ln(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], self.eps)
            qkv = _linear(h, P[p + "attn.qkv.weight"], P[p + "attn.qkv.bias"])
            qkv5 = qkv.reshape(B, T, 3, H, D)
            q = qkv5[:, :, 0].transpose(0, 2, 1, 3)  # (B, H, T, D) views
            k = qkv5[:, :, 1].transpose(0, 2, 1, 3)
            v = qkv5[:, :, 2].transpose(0, 2, 1, 3)
            s = q @ k.swapaxes(-1, -2)  # (B, H, T, T)
            s *= scale
            s += mask
            s -= s.max(axis=-1, keepdims=True)
            att = np.exp(s, out=s)
            att /= att.sum(axis=-1, keepdims=True)
            y = (att @ v).transpose(0, 2, 1, 3).reshape(N, C)
            x += _linear(y, P[p + "attn.proj.weight"], P[p + "attn.proj.bias"])
            h2, xhat2, rstd2 = _ln(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], self.eps)
            f = _linear(h2, P[p + "mlp.fc.weight"], P[p + "mlp.fc.bias"])
            g, t = _gelu_tanh(f)
            x += _linear(g, P[p + "mlp.proj.weight"], P[p + "mlp.proj.bias"])
            saved.append((h, xhat1, rstd1, qkv, att, y, h2, xhat2, rstd2, f, g, t))
        xf, xhatf, rstdf = _ln(x, P["ln_f.weight"], P["ln_f.bias"], self.eps)
        wte = P["wte.weight"]
        logits = xf @ wte.T  # (N, V)
        # cross-entropy, mean over the N positions
        tg = targets.reshape(-1)
        rows = np.arange(N)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        sums = probs.sum(axis=1)
        loss = float(np.log(sums).sum() - logits[rows, tg].sum()) / N
        if not backward:
            return loss

        # ---------------------------------------------------------------- backward
        probs /= sums[:, None]
        probs[rows, tg] -= 1
        probs *= F32(1 / N)
        dlogits = probs
        np.matmul(dlogits.T, xf, out=G["wte.weight"])  # the tied head's share of dwte
        dxf = dlogits @ wte
        dx = _ln_back(dxf, xhatf, rstdf, P["ln_f.weight"], G["ln_f.weight"], G["ln_f.bias"])
        for i in reversed(range(self.L)):
            p = f"blocks.{i}."
            h, xhat1, rstd1, qkv, att, y, h2, xhat2, rstd2, f, g, t = saved.pop()
            # MLP
            dg = _linear_back(dx, g, P[p + "mlp.proj.weight"], G[p + "mlp.proj.weight"],
                              G[p + "mlp.proj.bias"])
            df = _gelu_tanh_back(dg, f, t)
            dh2 = _linear_back(df, h2, P[p + "mlp.fc.weight"], G[p + "mlp.fc.weight"],
                               G[p + "mlp.fc.bias"])
            dx += _ln_back(dh2, xhat2, rstd2, P[p + "ln_2.weight"], G[p + "ln_2.weight"],
                           G[p + "ln_2.bias"])
            # attention
            dy = _linear_back(dx, y, P[p + "attn.proj.weight"], G[p + "attn.proj.weight"],
                              G[p + "attn.proj.bias"])
            dy = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
            qkv5 = qkv.reshape(B, T, 3, H, D)
            q = qkv5[:, :, 0].transpose(0, 2, 1, 3)
            k = qkv5[:, :, 1].transpose(0, 2, 1, 3)
            v = qkv5[:, :, 2].transpose(0, 2, 1, 3)
            dqkv = np.empty((B, T, 3, H, D), dtype=F32)
            dqkv[:, :, 2] = (att.swapaxes(-1, -2) @ dy).transpose(0, 2, 1, 3)
            dp = dy @ v.swapaxes(-1, -2)
            rowdot = np.einsum("bhij,bhij->bhi", dp, att)[..., None]
            dp -= rowdot
            dp *= att
            dp *= scale  # dS
            dqkv[:, :, 0] = (dp @ k).transpose(0, 2, 1, 3)
            dqkv[:, :, 1] = (dp.swapaxes(-1, -2) @ q).transpose(0, 2, 1, 3)
            dh = _linear_back(dqkv.reshape(N, 3 * C), h, P[p + "attn.qkv.weight"],
                              G[p + "attn.qkv.weight"], G[p + "attn.qkv.bias"])
            dx += _ln_back(dh, xhat1, rstd1, P[p + "ln_1.weight"], G[p + "ln_1.weight"],
                           G[p + "ln_1.bias"])
        # embeddings: rows of wte picked by the ids, positions summed over the batch
        _scatter_rows(G["wte.weight"], idx.reshape(-1), dx)
        gpe = G["wpe.weight"]
        np.sum(dx.reshape(B, T, C), axis=0, out=gpe[:T])
        gpe[T:] = 0
        return loss

    def train_step(self, idx, targets) -> float:
        loss = self.loss_and_grads(idx, targets)
        self.opt.clip()
        self.opt.step()
        return loss


# ---------------------------------------------------------------------------- MLP
class NumpyMLP:
    """784-1000-1000-10 (sizes configurable) ReLU MLP, mean cross-entropy, plain SGD."""

    def __init__(self, sizes=(784, 1000, 1000, 10), lr=0.01, seed=0):
        self.sizes, self.lr = tuple(sizes), lr
        shapes = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"{2 * i}.weight"] = (b, a)
            shapes[f"{2 * i}.bias"] = (b,)
        self.store = FlatParams(shapes, decay_all=True)
        self.params, self.grads = self.store.params, self.store.grads
        rng = np.random.default_rng(seed)
        for n, p in self.params.items():
            fan_in = sizes[int(n.split(".")[0]) // 2]
            bound = F32(1 / math.sqrt(fan_in))
            p[...] = rng.uniform(-bound, bound, p.shape).astype(F32)
        self.n_layers = len(sizes) - 1

    def load_state(self, state: dict) -> None:
        self.store.load(state)

    def loss_and_grads(self, x, targets) -> float:
        P, G = self.params, self.grads
        acts = [x]
        h = x
        for i in range(self.n_layers):
            h = _linear(h, P[f"{2 * i}.weight"], P[f"{2 * i}.bias"])
            if i < self.n_layers - 1:
                np.maximum(h, 0, out=h)
            acts.append(h)
        n = h.shape[0]
        rows = np.arange(n)
        h -= h.max(axis=1, keepdims=True)
        probs = np.exp(h)
        sums = probs.sum(axis=1)
        loss = float(np.log(sums).sum() - h[rows, targets].sum()) / n
        probs /= sums[:, None]
        probs[rows, targets] -= 1
        probs *= F32(1 / n)
        d = probs
        for i in reversed(range(self.n_layers)):
            d = _linear_back(d, acts[i], P[f"{2 * i}.weight"], G[f"{2 * i}.weight"],
                             G[f"{2 * i}.bias"], need_dx=i > 0)
            if i > 0:
                d *= acts[i] > 0
        return loss

    def train_step(self, x, targets) -> float:
        loss = self.loss_and_grads(x, targets)
        self.store.grad_flat *= -self.lr
        self.store.flat += self.store.grad_flat
        return loss
