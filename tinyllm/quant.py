"""Weight quantization: integer weights and a scale, so a model takes 4x to 7x less memory.

A weight row w (one output channel of a Linear) is stored as small integers q and a scale s
with w ~ q * s:

* **absmax, symmetric** (int8 per channel): s = max|w| / (2^(b-1) - 1), q = round(w / s), so
  q lies in [-127, 127] for b = 8 and the largest weight is exact. The error of each weight is
  at most s / 2: one outlier in a row makes s, and every weight's error, large.
* **group-wise with a zero point** (int4): each row is cut into groups of ``group_size``
  weights, each with its own range [lo, hi] (widened to hold 0): s = (hi - lo) / (2^b - 1),
  z = round(-lo / s), q = clip(round(w / s) + z, 0, 2^b - 1), w ~ (q - z) * s. Sixteen levels
  spent on each group's own range instead of the whole row's.

A ``QuantizedLinear`` keeps q (two 4-bit values per byte), s and z, and either dequantizes the
weight on the fly (weight-only: ``F.linear(x, (q - z) s)``, the usual way to run a quantized
LLM) or also quantizes its input per row (``activations=True``, LLM.int8()'s vector-wise
scheme without its outlier split, Dettmers et al. 2022) and multiplies int8 by int8 with int32
accumulation, rescaling the result by both scales.

    model = tinyllm.quant.quantize(model, bits=4, group_size=32)    # in place; returns it

Group scales are stored in float16 (as GPTQ and llama.cpp do; 0.5 bit per weight at groups of
32), per-channel scales in float32. Biases, LayerNorms and position tables stay float32.
"""

from __future__ import annotations

from tinyllm import functional as F
from tinyllm.backend import get_array_module
from tinyllm.nn.layers import Embedding, Linear
from tinyllm.nn.module import Module, Parameter
from tinyllm.tensor import Tensor, as_tensor

__all__ = ["absmax_quantize", "absmax_dequantize", "groupwise_quantize", "groupwise_dequantize",
           "pack_int4", "unpack_int4", "int8_matmul", "QuantizedLinear", "QuantizedEmbedding",
           "quantize", "quantization_config", "weight_bytes"]


# ------------------------------------------------------------------------------ the formulas
def absmax_quantize(w, bits: int = 8):
    """Symmetric absmax quantization along the last axis: w (..., n) -> (q, scale).

    q (..., n) int8 in [-(2^(b-1) - 1), 2^(b-1) - 1] and scale (..., 1) float32, with
    w ~ q * scale; a row of zeros gets scale 1 (and q = 0).
    """
    xp = get_array_module(w)
    qmax = 2 ** (bits - 1) - 1
    # BEGIN SOLUTION
    scale = xp.abs(w).max(axis=-1, keepdims=True) / qmax
    scale = xp.where(scale == 0, 1.0, scale)
    q = xp.clip(xp.rint(w / scale), -qmax, qmax).astype(xp.int8)
    # END SOLUTION
    return q, scale.astype(xp.float32)


def absmax_dequantize(q, scale):
    """q * scale in float32 (the inverse of ``absmax_quantize`` up to rounding)."""
    xp = get_array_module(q)
    return q.astype(xp.float32) * scale.astype(xp.float32)


def _groups(w, group_size):
    """(out, n) -> (out, n // g, g), checking that the groups tile the rows."""
    out, n = w.shape
    if group_size <= 0 or n % group_size:
        raise ValueError(f"group_size={group_size} must divide the rows' length {n} (weight "
                         f"of shape {tuple(w.shape)}); choose a divisor such as 32 or 64")
    return w.reshape(out, n // group_size, group_size)


def groupwise_quantize(w, bits: int = 4, group_size: int = 32):
    """Asymmetric quantization with a zero point, per group of ``group_size`` along each row.

    w (out, n) -> q (out, n) uint8 in [0, 2^b - 1], scale (out, n / g) float32 and zero
    (out, n / g) uint8, with w ~ (q - zero) * scale in each group. The group's range is
    widened to include 0, so that zero is an integer level and 0 is stored exactly; a group
    of zeros gets scale 1 (zero point 0, levels 0).
    """
    xp = get_array_module(w)
    g = _groups(w, group_size)
    levels = 2 ** bits - 1
    # BEGIN SOLUTION
    lo = xp.minimum(g.min(axis=-1, keepdims=True), 0.0)
    hi = xp.maximum(g.max(axis=-1, keepdims=True), 0.0)
    scale = (hi - lo) / levels
    scale = xp.where(scale == 0, 1.0, scale)
    zero = xp.clip(xp.rint(-lo / scale), 0, levels)
    q = xp.clip(xp.rint(g / scale) + zero, 0, levels)
    # END SOLUTION
    return (q.astype(xp.uint8).reshape(w.shape), scale[..., 0].astype(xp.float32),
            zero[..., 0].astype(xp.uint8))


def groupwise_dequantize(q, scale, zero, group_size: int):
    """(q - zero) * scale, group by group: q (out, n), scale and zero (out, n / g) -> float32."""
    xp = get_array_module(q)
    g = _groups(q, group_size).astype(xp.float32)
    w = (g - zero[..., None].astype(xp.float32)) * scale[..., None].astype(xp.float32)
    return w.reshape(q.shape)


def pack_int4(q):
    """Two 4-bit values per byte: q (..., n) uint8 in [0, 15], n even -> (..., n / 2) uint8,
    the even positions in the low nibble."""
    xp = get_array_module(q)
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last axis, got shape {tuple(q.shape)}")
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(xp.uint8)


def unpack_int4(packed):
    """The inverse of ``pack_int4``: (..., m) uint8 -> (..., 2m) uint8 in [0, 15]."""
    xp = get_array_module(packed)
    out = xp.empty(packed.shape[:-1] + (2 * packed.shape[-1],), dtype=xp.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def int8_matmul(xq, x_scale, wq, w_scale):
    """y ~ x @ w.T from int8 operands: xq (N, n) with per-row scales x_scale (N, 1), wq
    (out, n) with per-channel scales w_scale (out, 1) -> y (N, out) float32.

    The products of int8 values are summed in int32 (as integer tensor cores do) and the
    sum is rescaled once: y_ij = (sum_k xq_ik wq_jk) * x_scale_i * w_scale_j.
    """
    xp = get_array_module(xq)
    # BEGIN SOLUTION
    acc = xq.astype(xp.int32) @ wq.astype(xp.int32).T
    return acc.astype(xp.float32) * x_scale * w_scale.T
    # END SOLUTION


def _int8_matmul_fast(xq, x_scale, wq, w_scale):
    """``int8_matmul`` through a float matmul (BLAS): exact, because each product of int8
    values and every partial sum is an integer below 2^24 (float32) or 2^53 (float64)."""
    xp = get_array_module(xq)
    bound = xq.shape[-1] * 127 * 127
    ft = xp.float32 if bound < 2 ** 24 else xp.float64
    acc = xq.astype(ft) @ wq.astype(ft).T
    return acc.astype(xp.float32) * x_scale * w_scale.T


# ------------------------------------------------------------------------------ the modules
class _QuantizedWeight(Module):
    """The integer form of one (out, n) weight matrix, in buffers ``qweight``, ``scale`` and
    (asymmetric) ``zero``; ``weight_array()`` dequantizes it (float32)."""

    def _quantize(self, w, bits: int, group_size, symmetric: bool):
        xp = get_array_module(w)
        out, n = w.shape
        g = n if group_size is None else int(group_size)
        self.bits, self.group_size, self.symmetric, self.shape = bits, g, symmetric, (out, n)
        if symmetric:
            q, scale = absmax_quantize(_groups(w, g), bits)
            q, scale, zero = q.reshape(out, n), scale[..., 0], None
            if bits <= 4:  # stored as unsigned nibbles, offset by 2^(b-1)
                q = (q.astype(xp.int16) + 2 ** (bits - 1)).astype(xp.uint8)
        else:
            q, scale, zero = groupwise_quantize(w, bits, g)
        if bits <= 4:
            if n % 2:
                raise ValueError(f"{bits}-bit weights are packed two per byte: the rows' "
                                 f"length {n} must be even")
            q = pack_int4(q)
        if g < n:
            scale = scale.astype(xp.float16)
        self.register_buffer("qweight", as_tensor(q))
        self.register_buffer("scale", as_tensor(scale))
        self.register_buffer("zero", None if zero is None else as_tensor(zero))

    def weight_array(self):
        q, scale = self.qweight.data, self.scale.data
        xp = get_array_module(q)
        if self.bits <= 4:
            q = unpack_int4(q)
            if self.symmetric:
                q = q.astype(xp.int16) - 2 ** (self.bits - 1)
        if self.symmetric:
            return groupwise_dequantize(q, scale, xp.zeros(scale.shape, xp.int8), self.group_size)
        return groupwise_dequantize(q, scale, self.zero.data, self.group_size)

    def quant_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "zero point"
        return f"{self.bits}-bit, groups of {self.group_size}, {kind}"


class QuantizedLinear(_QuantizedWeight):
    """A ``Linear`` with an integer weight: y = x W^T + b, W dequantized from (q, scale, zero).

    ``activations=True`` (8-bit symmetric weights per channel only) quantizes x per row too and
    computes ``int8_matmul``: int8 x int8 products, int32 sums, one rescale. That path gives no
    gradient (inference only); the weight-only path passes gradients to x and the bias.
    """

    def __init__(self, linear: Linear, bits: int = 8, group_size=None, symmetric=None,
                 activations: bool = False):
        super().__init__()
        symmetric = bits == 8 if symmetric is None else bool(symmetric)
        if activations and not (bits == 8 and symmetric and group_size is None):
            raise ValueError("activations=True needs 8-bit symmetric per-channel weights "
                             f"(bits=8, group_size=None), got bits={bits}, group_size="
                             f"{group_size}, symmetric={symmetric}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activations = activations
        self._quantize(linear.weight.data, bits, group_size, symmetric)
        self.bias = None if linear.bias is None else Parameter(linear.bias.data.copy())

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear({self.in_features}, {self.out_features}) got "
                             f"input of shape {tuple(x.shape)}: its last axis must be "
                             f"{self.in_features}")
        if not self.activations:
            return F.linear(x, as_tensor(self.weight_array()), self.bias)
        x2 = x.data.reshape(-1, self.in_features)
        xq, x_scale = absmax_quantize(x2, 8)
        y = _int8_matmul_fast(xq, x_scale, self.qweight.data, self.scale.data[:, None])
        if self.bias is not None:
            y += self.bias.data
        return as_tensor(y.reshape(*x.shape[:-1], self.out_features))

    def extra_repr(self) -> str:
        act = ", int8 activations" if self.activations else ""
        return f"in={self.in_features}, out={self.out_features}, {self.quant_repr()}{act}"


class QuantizedEmbedding(_QuantizedWeight):
    """An ``Embedding`` whose table is quantized row by row; ``.weight`` is the dequantized
    table (a constant), so a head tied to it (GPT's) reads the same values."""

    def __init__(self, emb: Embedding, bits: int = 8, group_size=None, symmetric=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = emb.num_embeddings, emb.embedding_dim
        self._quantize(emb.weight.data, bits, group_size, bits == 8 if symmetric is None
                       else bool(symmetric))

    @property
    def weight(self) -> Tensor:
        return as_tensor(self.weight_array())

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.quant_repr()}"


# ------------------------------------------------------------------------------ the model
def quantize(model, bits: int = 8, group_size=None, symmetric=None, activations: bool = False,
             embeddings: bool = False):
    """Replace every ``Linear`` of ``model`` (and with ``embeddings`` every ``Embedding``) by
    its quantized form, in place; returns the model.

    ``bits`` 2 to 8. ``group_size`` None: one scale per output channel; else a scale (and zero
    point) per group of that many input weights. ``symmetric`` None: absmax for 8 bits, a zero
    point below. ``activations``: int8 activations and the int8 x int8 -> int32 matmul.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                   or group_size < 1):
        raise ValueError(f"group_size must be a positive integer or None, got {group_size!r}")
    if quantization_config(model) is not None:
        raise ValueError("this model is already quantized; quantize the float32 model instead")
    for _, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if type(child) is Linear:
                setattr(parent, name, QuantizedLinear(child, bits, group_size, symmetric,
                                                      activations))
            elif embeddings and type(child) is Embedding:
                setattr(parent, name, QuantizedEmbedding(child, bits, group_size, symmetric))
    config = {"bits": bits, "group_size": group_size, "symmetric": symmetric,
              "activations": activations, "embeddings": embeddings}
    object.__setattr__(model, "quantization", config)
    return model


def quantization_config(model):
    """The keywords ``quantize`` was called with on ``model``, or None for a float model."""
    return getattr(model, "quantization", None)


def weight_bytes(model) -> int:
    """Bytes of every parameter and buffer of ``model`` as stored (a weight file's payload)."""
    return sum(t.data.nbytes for _, t in model.named_parameters()) + \
        sum(t.data.nbytes for _, t in model.named_buffers())
