"""``tinyllm.functional`` (import as ``F``): the neural-network operations, each one fused Function.

Every one of these could be written with the primitive tensor ops (the lessons do that first),
but as a single Function with a hand-derived backward it runs in a few NumPy calls, keeps no
intermediate graph, and is numerically safer (softmax subtracts the row maximum, cross-entropy
never forms log(0)). The tests check each against its composed form and finite differences.

Shapes: ``B`` batch, ``T`` query positions, ``S`` key positions, ``C`` channels, ``V`` vocabulary.

The functions take tensors (anything built on ``autograd.Node``); this module sits above
``tinyllm.tensor`` (whose ``softmax``/``log_softmax`` methods call it), so it never imports the
Tensor class. GELU, SiLU and leaky ReLU live in ``tinyllm.activations``, attention in
``tinyllm.attention``; both are re-exported here.
"""

from __future__ import annotations

from tinyllm import backend, ops, shape_ops
from tinyllm.activations import erf, gelu, leaky_relu, silu
from tinyllm.attention import ScaledDotProductAttention, causal_mask, scaled_dot_product_attention
from tinyllm.autograd import Function, Node, operand_data
from tinyllm.backend import get_array_module
from tinyllm.ids import check_ids

__all__ = [
    "linear", "relu", "gelu", "tanh", "sigmoid", "silu", "leaky_relu", "softmax", "log_softmax",
    "cross_entropy", "mse_loss", "layer_norm", "embedding", "dropout", "pad",
    "scaled_dot_product_attention", "causal_mask", "erf", "ScaledDotProductAttention",
]


def _dim(axis, dim):
    return axis if dim is None else dim


# ---------------------------------------------------------------------------- linear
class Linear(Function):
    """y = x W^T + b with x (..., in), W (out, in), b (out,).

    The batch axes are flattened so that each matmul is one large 2-D GEMM:
    dx = dy W, dW = dy^T x, db = sum of dy over all rows.
    """

    def forward(self, x, w, b=None):
        if x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input of shape {tuple(x.shape)} has {x.shape[-1]} features "
                             f"but the weight {tuple(w.shape)} expects {w.shape[1]}")
        self.x, self.w = x, w
        y = x.reshape(-1, x.shape[-1]) @ w.T
        if b is not None:
            y += b
        return y.reshape(*x.shape[:-1], w.shape[0])

    def backward(self, gy):
        x, w = self.x, self.w
        g2 = gy.reshape(-1, w.shape[0])
        gx = (g2 @ w).reshape(x.shape) if self.needs_grad[0] else None
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if self.needs_grad[1] else None
        gb = g2.sum(axis=0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """Affine map ``x @ weight.T + bias``; x (..., in), weight (out, in) -> (..., out)."""
    return Linear()(x, weight) if bias is None else Linear()(x, weight, bias)


# ---------------------------------------------------------------------------- activations
def relu(x):
    return ops.ReLU()(x)


def tanh(x):
    return ops.Tanh()(x)


def sigmoid(x):
    return ops.Sigmoid()(x)


# ---------------------------------------------------------------------------- softmax family
class Softmax(Function):
    """y_i = exp(x_i - m) / sum_j exp(x_j - m), m = max_j x_j; dx = y * (dy - sum(dy * y))."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        e = get_array_module(x).exp(x - x.max(axis=self.axis, keepdims=True))
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy):
        y = self.y
        return (y * (gy - (gy * y).sum(axis=self.axis, keepdims=True)),)


def softmax(x, axis: int = -1, *, dim=None):
    """Softmax along ``axis`` (numerically stable); integers are turned into float32 first."""
    return Softmax(_dim(axis, dim))(_float_node(x))


def _float_node(x):
    """An integer tensor as float32 (PyTorch's promotion for a fractional result)."""
    return x if backend.is_float(x.dtype) else x.to(dtype="float32")


class LogSoftmax(Function):
    """y = x - logsumexp(x) along an axis; dx = dy - softmax(x) * sum(dy)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        # BEGIN SOLUTION
        shifted = x - x.max(axis=self.axis, keepdims=True)  # largest entry 0: exp cannot overflow
        y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        self.y = y
        return y
        # END SOLUTION

    def backward(self, gy):
        xp = get_array_module(gy)
        # BEGIN SOLUTION
        return (gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)
        # END SOLUTION


def log_softmax(x, axis: int = -1, *, dim=None):
    """log(softmax(x)) along ``axis``, computed stably (never log of 0 for finite logits)."""
    return LogSoftmax(_dim(axis, dim))(_float_node(x))


class CrossEntropy(Function):
    """Mean (or sum) of -log softmax(logits)[target] over rows whose target != ignore_index.

    logits (N, V), targets (N,). With p = softmax(logits): d loss_i / d logits_i = p_i - onehot(t_i),
    zero on ignored rows; the mean divides by the number of counted rows.
    """

    def __init__(self, ignore_index=-100, reduction="mean"):
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, logits, targets):
        xp = get_array_module(logits)
        n = logits.shape[0]
        rows = xp.arange(n)
        # BEGIN SOLUTION
        valid = targets != self.ignore_index
        safe_t = targets * valid  # ignored rows point at class 0, then get weight 0
        shifted = logits - logits.max(axis=1, keepdims=True)
        p = xp.exp(shifted)
        sums = p.sum(axis=1, keepdims=True)
        p /= sums
        losses = (xp.log(sums[:, 0]) - shifted[rows, safe_t]) * valid
        self.p, self.safe_t, self.valid, self.rows = p, safe_t, valid, rows
        # END SOLUTION
        if self.reduction == "none":
            self.scale = None
            return losses
        if self.reduction == "sum":
            self.scale = 1.0
        else:  # the count stays where the data is (no host copy on a GPU); no rows: NaN
            count = valid.sum()
            self.scale = xp.where(count > 0, 1.0 / xp.maximum(count, 1), xp.nan).astype(logits.dtype)
        return (losses.sum() * self.scale).astype(logits.dtype)

    def backward(self, gy):
        # BEGIN SOLUTION
        g = self.p.copy()
        g[self.rows, self.safe_t] -= 1
        if self.scale is None:
            g *= (gy * self.valid)[:, None]
        else:
            g *= (gy * self.scale) * self.valid[:, None]
        # END SOLUTION
        return g, None


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """Cross-entropy between ``logits`` (..., V) and integer ``targets`` (...), fused with log-softmax.

    The class axis is the last one: (B, T, V) logits go with (B, T) targets. Targets equal to
    ``ignore_index`` (default -100, the masked-LM convention) count neither in the loss nor in
    the mean. ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"`` (per-position losses, shape of targets).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    if not isinstance(logits, Node):
        raise TypeError(f"cross_entropy: logits must be a tensor, got {type(logits).__name__} "
                        "(wrap them with tl.tensor)")
    device, what = logits.device, "cross_entropy's targets"
    t = (operand_data(targets, device, what) if isinstance(targets, Node)  # host targets are
         else backend.as_array(targets, device=backend.get_device(targets)))  # checked there
    lshape = tuple(logits.shape)
    if lshape[:-1] != tuple(t.shape):
        raise ValueError(f"cross_entropy: logits of shape {lshape} need targets of shape "
                         f"{lshape[:-1]} (the class axis is last), got {tuple(t.shape)}")
    if backend.is_float(t.dtype):
        raise TypeError(f"cross_entropy targets must be integer class ids, got {t.dtype}")
    v = lshape[-1]
    check_ids(t, v, "targets", kind="target id", ignore_index=ignore_index,
              hint=f" (logits with {v} classes; use ignore_index={ignore_index} to skip one)")
    t = t.reshape(-1)
    t = operand_data(t, device, what)  # then moved beside the logits
    out = CrossEntropy(ignore_index, reduction)(logits.reshape(-1, v), t)  # t: a constant
    return out.reshape(lshape[:-1]) if reduction == "none" else out


def mse_loss(input, target, reduction: str = "mean"):
    """Mean (or sum, or each) of (input - target)^2. The shapes must be equal: PyTorch only
    warns when they broadcast, which is nearly always a mistake (a (N, 1) beside a (N,))."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"mse_loss: input of shape {tuple(input.shape)} and target of shape "
                         f"{tuple(target.shape)} differ; reshape one so that they match")
    d = input - target
    sq = d * d
    return sq if reduction == "none" else sq.sum() if reduction == "sum" else sq.mean()


# ---------------------------------------------------------------------------- normalisation
class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last axis (C).

    With xhat the normalised input and g = dy * w:
    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps), dw = sum(dy * xhat), db = sum(dy).
    """

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, w, b):
        xp = get_array_module(x)
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=-1, keepdims=True)
        rstd = 1 / xp.sqrt(var + self.eps)
        xhat = xc * rstd
        self.xhat, self.rstd, self.w = xhat, rstd, w
        return xhat * w + b

    def fast_forward(self, x, w, b):
        """The same in fewer passes: the variance as row dot products (einsum, no squared
        temporary), sums instead of x.mean (whose Python wrapper costs more than the arithmetic
        when decoding one token at a time), and in place."""
        xp = get_array_module(x)
        c = x.shape[-1]
        mean = x.sum(axis=-1, keepdims=True)
        mean *= 1 / c
        xhat = x - mean
        var = xp.einsum("...i,...i->...", xhat, xhat)[..., None]
        var *= 1 / c
        var += self.eps
        rstd = xp.sqrt(var, out=var)
        xp.reciprocal(rstd, out=rstd)
        xhat *= rstd
        self.xhat, self.rstd, self.w = xhat, rstd, w
        y = xhat * w
        y += b
        return y

    def backward(self, gy):
        xhat, rstd, w = self.xhat, self.rstd, self.w
        c = xhat.shape[-1]
        gx = gw = gb = None
        if self.needs_grad[0]:
            # BEGIN SOLUTION
            g = gy * w
            gx = g - g.mean(axis=-1, keepdims=True)
            gx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
            gx *= rstd
            # END SOLUTION
        if self.needs_grad[1]:
            gw = (gy * xhat).reshape(-1, c).sum(axis=0)
        if self.needs_grad[2]:
            gb = gy.reshape(-1, c).sum(axis=0)
        return gx, gw, gb

    def fast_backward(self, gy):
        """The same in fewer passes: row means and row dot products as einsum (no product
        temporaries), dw as one einsum over the rows, in place."""
        xhat, rstd, w = self.xhat, self.rstd, self.w
        xp = get_array_module(gy)
        c = xhat.shape[-1]
        gx = gw = gb = None
        if self.needs_grad[0]:
            gx = gy * w
            mean_g = xp.einsum("...i->...", gx)[..., None]
            mean_gx = xp.einsum("...i,...i->...", gx, xhat)[..., None]
            mean_g *= 1 / c
            mean_gx *= 1 / c
            gx -= mean_g
            mean_gx = xhat * mean_gx
            gx -= mean_gx
            gx *= rstd
        if self.needs_grad[1]:
            gw = xp.einsum("ij,ij->j", gy.reshape(-1, c), xhat.reshape(-1, c))
        if self.needs_grad[2]:
            gb = gy.reshape(-1, c).sum(axis=0)
        return gx, gw, gb


def layer_norm(x, weight, bias, eps: float = 1e-5):
    """Layer normalisation over the last axis: x (..., C), weight and bias (C,)."""
    c = x.shape[-1]
    if tuple(weight.shape) != (c,) or tuple(bias.shape) != (c,):
        raise ValueError(f"layer_norm: input (..., {c}) needs weight and bias of shape ({c},), "
                         f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
    return LayerNorm(eps)(x, weight, bias)


# ---------------------------------------------------------------------------- embedding
class Embedding(Function):
    """out[..., :] = W[ids[...], :]; dW[v] = sum of dy over the positions where ids == v."""

    def __init__(self, ids):
        self.ids = ids

    def forward(self, w):
        self.w_shape, self.dtype = w.shape, w.dtype
        return w[self.ids]

    def backward(self, gy):
        xp = get_array_module(gy)
        gw = xp.zeros(self.w_shape, dtype=self.dtype)
        # BEGIN SOLUTION
        backend.scatter_add(gw, self.ids.reshape(-1), gy.reshape(-1, self.w_shape[1]))
        # END SOLUTION
        return (gw,)


def embedding(ids, weight):
    """Look up rows of ``weight`` (V, C) for integer ``ids`` of any shape -> (*ids.shape, C)."""
    what = "embedding's ids"  # host ids are checked on the host, then moved
    i = (operand_data(ids, weight.device, what) if isinstance(ids, Node)
         else backend.as_array(ids, device=backend.get_device(ids)))
    v = weight.shape[0]
    check_ids(i, v, "ids", kind="token id", within="the vocabulary",
              hint=f" of the {tuple(weight.shape)} embedding table")
    return Embedding(operand_data(i, weight.device, what))(weight)


# ---------------------------------------------------------------------------- dropout
class Dropout(Function):
    def __init__(self, p):
        self.p = p

    def forward(self, x):
        self.mask = backend.dropout_mask(get_array_module(x), x.shape, self.p, x.dtype)
        return x * self.mask

    def backward(self, gy):
        return (gy * self.mask,)


def dropout(x, p: float = 0.1, training: bool = True):
    """Zero each entry with probability ``p`` and scale the rest by 1/(1-p); identity in eval."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return Dropout(p)(x)


# ---------------------------------------------------------------------------- padding
def pad(x, pad, mode: str = "constant", value: float = 0.0):
    """Pad with ``value``. ``pad`` lists (before, after) pairs from the last axis backwards, as
    PyTorch's ``F.pad``: ``(1, 2)`` pads the last axis, ``(1, 2, 0, 3)`` also the one before."""
    if mode != "constant":
        raise NotImplementedError(f"pad mode {mode!r}: only 'constant' is implemented")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim or min(pad, default=0) < 0:
        raise ValueError(f"pad {pad} for a tensor of shape {tuple(x.shape)}: give non-negative "
                         f"(before, after) pairs, at most one per axis ({x.ndim})")
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)][::-1]  # first axis first
    widths = [(0, 0)] * (x.ndim - len(pairs)) + pairs
    return shape_ops.Pad(widths, value)(x)
