"""Scaled dot-product attention, the operation at the heart of the Transformer.

    softmax(Q K^T / sqrt(D) + mask) V

One fused ``Function``: the forward keeps the attention weights P, the backward derives the
gradients of Q, K and V from them. ``tinyllm.functional`` re-exports everything here (``F.``);
``tinyllm.nn.attention`` builds multi-head attention on top.

Shapes: q (..., T, D), k (..., S, D), v (..., S, Dv); the leading axes are usually (B, n_head).
"""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm.autograd import Function, operand_data
from tinyllm.backend import get_array_module
from tinyllm.ops import unbroadcast

__all__ = ["causal_mask", "scaled_dot_product_attention", "ScaledDotProductAttention"]

_causal_cache: dict = {}


def causal_mask(t: int, s: int | None = None, xp=None):
    """Boolean (T, S) mask, True where query i may attend key j: j <= i + (S - T).

    With S > T (a key/value cache holding S - T earlier positions) the queries are the last T
    positions of the sequence.
    """
    s = t if s is None else s
    xp = xp or backend.np
    # BEGIN SOLUTION
    return xp.tril(xp.ones((t, s), dtype=bool), k=s - t)
    # END SOLUTION


def _attention_bias(xp, mask, is_causal, t, s, dtype):
    """Turn a boolean mask (True = attend) into an additive bias: 0 or a very large negative.

    A finite negative (not -inf) keeps a row whose keys are all masked finite (uniform weights,
    as Hugging Face's BERT does) instead of NaN. The causal-only bias is cached per shape.
    """
    neg = xp.finfo(dtype).min
    if is_causal and t == 1:  # one query, the last position (decoding with a cache): sees all
        is_causal = False
    if is_causal and mask is None:
        # one square bias per dtype and array module, grown (to a multiple of 256) only for a
        # longer sequence; (T, S) is its rows S-T..S-1, columns 0..S-1 (a view), so the memory
        # is bounded by the longest sequence, whatever shapes come (a cache per shape grew)
        if t > s:
            return xp.where(causal_mask(t, s, xp), dtype.type(0), neg).astype(dtype)
        key = (dtype, xp.__name__)
        bias = _causal_cache.get(key)
        if bias is None or bias.shape[1] < s:
            n = -(-s // 256) * 256
            bias = _causal_cache[key] = xp.where(causal_mask(n, n, xp), dtype.type(0), neg).astype(dtype)
        return bias[s - t:s, :s]
    if is_causal:
        mask = mask & causal_mask(t, s, xp)
    if mask is None:
        return None
    return xp.where(mask, dtype.type(0), neg).astype(dtype)


class ScaledDotProductAttention(Function):
    """out = softmax(q k^T * scale + bias) v.

    q (..., T, D), k (..., S, D), v (..., S, Dv) -> (..., T, Dv). Backward, with P the
    attention weights and dO the output gradient:
    dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = dS K * scale, dK = dS^T Q * scale.

    ``fast_forward``/``fast_backward`` compute the same in place, reusing the (..., T, S) buffer
    of the scores (the largest array of attention); they save the same arrays as the plain forms.
    """

    def __init__(self, bias, scale, dropout_p):
        self.bias, self.scale, self.dropout_p = bias, float(scale), dropout_p

    def forward(self, q, k, v):
        xp = get_array_module(q)
        # BEGIN SOLUTION
        s = q @ k.swapaxes(-1, -2) * self.scale
        if self.bias is not None:
            s = s + self.bias
        e = xp.exp(s - s.max(axis=-1, keepdims=True))  # the row max subtracted: no overflow
        p = e / e.sum(axis=-1, keepdims=True)
        # END SOLUTION
        return self._weigh(xp, p, q, k, v)

    def _weigh(self, xp, p, q, k, v):
        """Save what backward needs, apply dropout to the weights, and return P V."""
        self.p, self.q, self.k, self.v = p, q, k, v
        if self.dropout_p > 0:
            self.mask = backend.dropout_mask(xp, p.shape, self.dropout_p, p.dtype)
            p = p * self.mask
        self.p_used = p
        return p @ v

    def backward(self, gy):
        p, q, k, v, scale = self.p, self.q, self.k, self.v, self.scale
        gq = gk = gv = None
        # BEGIN SOLUTION
        if self.needs_grad[2]:
            gv = unbroadcast(self.p_used.swapaxes(-1, -2) @ gy, v.shape)
        dp = gy @ v.swapaxes(-1, -2)
        if self.dropout_p > 0:
            dp = dp * self.mask
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) * scale
        if self.needs_grad[0]:
            gq = unbroadcast(ds @ k, q.shape)
        if self.needs_grad[1]:
            gk = unbroadcast(ds.swapaxes(-1, -2) @ q, k.shape)
        # END SOLUTION
        return gq, gk, gv

    def fast_forward(self, q, k, v):
        xp = get_array_module(q)
        s = self._scores(q, k)
        if xp is backend.np and _unshifted_safe(s):
            if _softmax_unshifted(xp, s):
                return self._weigh(xp, s, q, k, v)
            s = self._scores(q, k)  # a row summed to almost 0, and exp overwrote s: again
        s -= s.max(axis=-1, keepdims=True)  # the plain softmax: each row shifted by its maximum
        p = xp.exp(s, out=s)
        p /= p.sum(axis=-1, keepdims=True)
        return self._weigh(xp, p, q, k, v)

    def _scores(self, q, k):
        s = q @ k.swapaxes(-1, -2)
        s *= q.dtype.type(self.scale)
        if self.bias is not None:
            s += self.bias
        return s

    def fast_backward(self, gy):
        p, q, k, v = self.p, self.q, self.k, self.v
        gq = gk = gv = None
        if self.needs_grad[2]:
            gv = unbroadcast(self.p_used.swapaxes(-1, -2) @ gy, v.shape)
        ds = gy @ v.swapaxes(-1, -2)  # dP, then dS in the same buffer
        if self.dropout_p > 0:
            ds *= self.mask
        ds -= (ds * p).sum(axis=-1, keepdims=True)
        ds *= p
        ds *= ds.dtype.type(self.scale)
        if self.needs_grad[0]:
            gq = unbroadcast(ds @ k, q.shape)
        if self.needs_grad[1]:
            gk = unbroadcast(ds.swapaxes(-1, -2) @ q, k.shape)
        return gq, gk, gv


# exp(s) of scores up to this cannot overflow float32, nor can a row sum of up to 10^12 of them
_UNSHIFTED_MAX = 60.0
# A row whose sum is above this keeps its weights down to 1e-12 of its largest out of the
# subnormal range, where float32 loses digits. The small weights count: a key that takes almost
# all of a row's weight gets a gradient made of the others' (dS = P (dP - rowsum(dP P)) nearly
# cancels there), so they must keep float32's relative precision.
_ROW_SUM_MIN = 1e-20


def _unshifted_safe(s) -> bool:
    """Whether exp(s) cannot overflow: float32 scores, none above 60 (one fast reduction)."""
    return s.dtype == "float32" and s.size > 0 and s.flags.c_contiguous and \
        float(s.max()) <= _UNSHIFTED_MAX


def _softmax_unshifted(xp, s) -> bool:
    """softmax(s) along the last axis in place without the per-row maximum, for scores that
    ``_unshifted_safe`` let through; False (s overwritten by exp) when a row sum came out too
    small. NumPy only: the checks read values on the host.

    Any per-row constant cancels in the softmax; the maximum is subtracted only so that exp
    cannot overflow. With no score above 60 nothing can, so the row maxima (a slow reduction
    over short rows) and the subtraction are skipped. Without the shift a row whose scores are
    all very negative (every key masked, or every logit far below 0) would sum to about 0 and
    lose its precision: such a row sends the caller back to the plain form. The row sums are
    a matmul with a vector of ones (one BLAS call, faster than NumPy's sum over short rows)."""
    p = xp.exp(s, out=s)
    sums = p @ xp.ones((s.shape[-1], 1), dtype=s.dtype)
    if float(sums.min()) < _ROW_SUM_MIN:
        return False
    p /= sums
    return True


def scaled_dot_product_attention(q, k, v, mask=None, is_causal: bool = False,
                                 dropout_p: float = 0.0, scale: float | None = None,
                                 return_weights: bool = False):
    """softmax(q k^T / sqrt(D) [masked]) v.

    q (..., T, D), k (..., S, D), v (..., S, Dv) -> (..., T, Dv); the leading axes are usually
    (B, n_head). ``mask`` is boolean and broadcasts to (..., T, S): True = may attend (e.g. a
    padding mask of shape (B, 1, 1, S)). ``is_causal`` lets query i see keys j <= i (aligned at
    the end when S > T). With ``return_weights`` it returns (out, weights) where weights
    (..., T, S) is a detached tensor, for plotting.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} (need q (..., T, D), k (..., S, D), v (..., S, Dv))")
    xp = get_array_module(q.data)
    t, s = q.shape[-2], k.shape[-2]
    m = None
    if mask is not None:
        m = operand_data(mask, q.device, "the attention mask")
        if m.dtype != bool:
            raise TypeError(f"attention mask must be boolean (True = attend), got {m.dtype}")
        try:
            xp.broadcast_shapes(m.shape, (*q.shape[:-2], t, s))
        except ValueError:
            raise ValueError(f"attention mask of shape {tuple(m.shape)} does not broadcast to the "
                             f"scores' shape {(*q.shape[:-2], t, s)}") from None
    bias = _attention_bias(xp, m, is_causal, t, s, q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    fn = ScaledDotProductAttention(bias, scale, dropout_p)
    out = fn(q, k, v)
    if return_weights:
        return out, q._new(fn.p)  # a tensor of q's kind, outside the graph
    return out
