"""The op table's rows of ``tinyllm.functional`` (``F.*``): linear, softmax, losses, LayerNorm,
embedding, attention, ... (the Tensor ops' rows and the rules of a row are in ``tests/op_table.py``)."""

from __future__ import annotations

import numpy as np
from op_row import TARGETS, O, as_torch, torch_

import tinyllm.functional as F


def _tsdpa(q, k, v, mask=None, is_causal=False):
    TF = torch_().nn.functional
    return TF.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else as_torch(mask),
                                           is_causal=is_causal)


def _ce(x, reduction="mean"):
    TF = torch_().nn.functional
    out = TF.cross_entropy(x.reshape(-1, x.shape[-1]), as_torch(TARGETS).reshape(-1),
                           reduction=reduction)
    return out.reshape(TARGETS.shape) if reduction == "none" else out


FUNCTIONAL_ROWS = [
    O("F.linear", ("F.linear",), lambda x, w, b: F.linear(x, w, b),
      lambda x, w, b: torch_().nn.functional.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)]),
    O("F.linear_nobias_1d", ("F.linear",), lambda x, w: F.linear(x, w),
      lambda x, w: torch_().nn.functional.linear(x, w), [(4,), (2, 4)]),
    O("F.relu", ("F.relu",), lambda a: F.relu(a), lambda a: torch_().relu(a), [(2, 3)], kind="away"),
    O("F.tanh_sigmoid", ("F.tanh", "F.sigmoid"), lambda a: F.tanh(a) * F.sigmoid(a),
      lambda a: torch_().tanh(a) * torch_().sigmoid(a), [(2, 3)]),
    O("F.gelu", ("F.gelu",), lambda a: F.gelu(a), lambda a: torch_().nn.functional.gelu(a),
      [(3, 4)], fast_path="GELU"),
    O("F.gelu_wide", ("F.gelu",), lambda a: F.gelu(a * 4), lambda a: torch_().nn.functional.gelu(a * 4),
      [(20,)], fd=False, fast_path="GELU"),
    O("F.gelu_tanh", ("F.gelu",), lambda a: F.gelu(a, approximate="tanh"),
      lambda a: torch_().nn.functional.gelu(a, approximate="tanh"), [(2, 3)], fast_path="GELU"),
    O("F.gelu_0d", ("F.gelu",), lambda a: F.gelu(a) + F.gelu(a, "tanh"),
      lambda a: torch_().nn.functional.gelu(a) + torch_().nn.functional.gelu(a, approximate="tanh"),
      [()], fast_path="GELU"),
    O("F.erf", ("F.erf",), lambda a: F.erf(a.data * 3), lambda a: torch_().erf(a * 3), [(40,)],
      grad=False),
    O("F.silu", ("F.silu",), lambda a: F.silu(a), lambda a: torch_().nn.functional.silu(a),
      [(2, 3)]),
    O("F.leaky_relu", ("F.leaky_relu",), lambda a: F.leaky_relu(a) + F.leaky_relu(a, 0.2),
      lambda a: torch_().nn.functional.leaky_relu(a) + torch_().nn.functional.leaky_relu(a, 0.2),
      [(2, 3)], kind="away"),
    O("F.softmax", ("F.softmax",), lambda a: F.softmax(a, axis=1),
      lambda a: torch_().softmax(a, dim=1), [(2, 3, 2)]),
    O("F.softmax_0d", ("F.softmax",), lambda a: F.softmax(a), lambda a: torch_().softmax(a, dim=-1),
      [()]),
    O("F.log_softmax", ("F.log_softmax",), lambda a: F.log_softmax(a, dim=0),
      lambda a: torch_().log_softmax(a, dim=0), [(3, 2)]),
    O("F.cross_entropy", ("F.cross_entropy",), lambda x: F.cross_entropy(x, TARGETS),
      lambda x: _ce(x), [(2, 3, 4)]),
    O("F.cross_entropy_sum_none", ("F.cross_entropy",),
      lambda x: F.cross_entropy(x, TARGETS, reduction="none") + F.cross_entropy(x, TARGETS,
                                                                                reduction="sum"),
      lambda x: _ce(x, "none") + _ce(x, "sum"), [(2, 3, 4)]),
    O("F.mse_loss", ("F.mse_loss",),
      lambda a, b: F.mse_loss(a, b) + F.mse_loss(a, b, reduction="sum")
      + F.mse_loss(a, b, reduction="none").sum(axis=0),
      lambda a, b: torch_().nn.functional.mse_loss(a, b) + torch_().nn.functional.mse_loss(
          a, b, reduction="sum") + torch_().nn.functional.mse_loss(a, b, reduction="none").sum(0),
      [(2, 3), (2, 3)]),
    O("F.layer_norm", ("F.layer_norm",), lambda x, w, b: F.layer_norm(x, w, b),
      lambda x, w, b: torch_().nn.functional.layer_norm(x, (x.shape[-1],), w, b),
      [(2, 3, 5), (5,), (5,)], noncontig=True, fast_path="LayerNorm"),
    O("F.layer_norm_1d", ("F.layer_norm",), lambda x, w, b: F.layer_norm(x, w, b, eps=0.1),
      lambda x, w, b: torch_().nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps=0.1),
      [(4,), (4,), (4,)], fast_path="LayerNorm"),
    O("F.embedding", ("F.embedding",), lambda w: F.embedding(np.array([[0, 2, 2], [1, 0, 2]]), w),
      lambda w: torch_().nn.functional.embedding(as_torch(np.array([[0, 2, 2], [1, 0, 2]])), w), [(3, 2)]),
    O("F.dropout_identity", ("F.dropout",), lambda a: F.dropout(a, 0.0) + F.dropout(a, 0.5, False),
      lambda a: 2 * a, [(2, 3)]),
    O("F.pad", ("F.pad",), lambda a: F.pad(a, (1, 2)) + F.pad(a, (1, 2, 0, 0), value=0.5),
      lambda a: torch_().nn.functional.pad(a, (1, 2)) + torch_().nn.functional.pad(a, (1, 2, 0, 0),
                                                                           value=0.5),
      [(2, 3)], ints=False),
    O("F.pad_two_axes", ("F.pad",), lambda a: F.pad(a, (0, 1, 2, 0)),
      lambda a: torch_().nn.functional.pad(a, (0, 1, 2, 0)), [(2, 2, 3)], noncontig=True),
    O("F.sdpa", ("F.scaled_dot_product_attention",),
      lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
      lambda q, k, v: _tsdpa(q, k, v), [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)],
      fast_path="ScaledDotProductAttention"),
    O("F.sdpa_causal", ("F.scaled_dot_product_attention",),
      lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
      lambda q, k, v: _tsdpa(q, k, v, is_causal=True), [(2, 4, 3), (2, 4, 3), (2, 4, 2)],
      fast_path="ScaledDotProductAttention"),
    O("F.sdpa_mask_unbatched", ("F.scaled_dot_product_attention",),
      lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=np.array([True, False, True])),
      lambda q, k, v: _tsdpa(q, k, v, mask=np.array([True, False, True])),
      [(2, 4), (3, 4), (3, 2)], fast_path="ScaledDotProductAttention"),
    O("F.causal_mask", ("F.causal_mask",), lambda: F.causal_mask(3, 5) * 1,
      lambda: torch_().ones(3, 5, dtype=torch_().int64).tril(2), [], floats=("float32",), grad=False),
]
