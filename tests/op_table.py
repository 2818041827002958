"""The op table: every public op and Tensor method of tinyllm, with sample inputs and its
PyTorch twin (in the spirit of PyTorch's OpInfo). ``tests/test_op_table.py`` runs every row:
forward against PyTorch, gradients against PyTorch and central differences (float64), output
and gradient dtypes, on the ``device`` fixture. A new op joins by adding a row here; a public op
without a row (and not in ``EXEMPT``) fails ``test_every_public_op_has_a_row``.

A row is ``Op(id, covers, fn, ref, shapes, ...)``: ``fn`` takes tinyllm tensors, ``ref`` the same
values as torch tensors, ``shapes`` one shape per input. Inputs are drawn by ``kind``: None
(standard normal), "pos" (> 0.5), "away" (|x| > 0.3, away from kinks at 0), "unit" (in
(-0.9, 0.9)). ``ints``: also run on int64 inputs (forward and dtype only); ``grad=False``: no
gradient (comparisons, indices); ``noncontig``: the first input is a non-contiguous view.
Shapes are tiny so that float64 central differences stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import tinyllm as tl
import tinyllm.functional as F

IDX = np.array([2, 0, 2])
MASK3 = np.array([True, False, True])
GATHER = np.array([[0, 2, 2, 1], [1, 0, 0, 0]])
TARGETS = np.array([[1, 0, 3], [-100, 2, 2]])


@dataclass
class Op:
    id: str
    covers: tuple
    fn: object
    ref: object  # a function of torch tensors (the module is passed as ``T`` through ``torch``)
    shapes: list
    kind: str | None = None
    ints: bool = False
    grad: bool = True
    noncontig: bool = False
    fd: bool = True
    floats: tuple = ("float32", "float64")
    fast_path: str | None = None  # the Function whose fast path this row also runs plain
    tags: dict = field(default_factory=dict)

    def dtypes(self):
        return list(self.floats) + (["int64"] if self.ints else [])


def _t():
    import torch

    return torch


def _th(a):
    return _t().from_numpy(np.array(a))  # a contiguous copy (keeps 0-d arrays 0-d)


def _tsdpa(q, k, v, mask=None, is_causal=False):
    TF = _t().nn.functional
    return TF.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else _th(mask),
                                           is_causal=is_causal)


def _ce(x, reduction="mean"):
    TF = _t().nn.functional
    out = TF.cross_entropy(x.reshape(-1, x.shape[-1]), _th(TARGETS).reshape(-1),
                           reduction=reduction)
    return out.reshape(TARGETS.shape) if reduction == "none" else out


def O(*args, **kw):  # noqa: E743, N802
    return Op(*args, **kw)


ROWS = [
    # ------------------------------------------------------------------ arithmetic operators
    O("add_bcast", ("Tensor.__add__",), lambda a, b: a + b, lambda a, b: a + b,
      [(2, 3), (3,)], ints=True),
    O("add_0d", ("Tensor.__add__",), lambda a, b: a + b, lambda a, b: a + b, [(), (2, 1)]),
    O("radd", ("Tensor.__radd__",), lambda a: 2 + a, lambda a: 2 + a, [(2, 3)], ints=True),
    O("add_method", ("Tensor.add",), lambda a, b: a.add(b, alpha=0.5),
      lambda a, b: a.add(b, alpha=0.5), [(2, 3), (2, 1)]),
    O("sub_bcast", ("Tensor.__sub__",), lambda a, b: a - b, lambda a, b: a - b,
      [(3,), (2, 1, 3)], ints=True),
    O("rsub", ("Tensor.__rsub__",), lambda a: 1.5 - a, lambda a: 1.5 - a, [(2, 3)]),
    O("sub_method", ("Tensor.sub",), lambda a, b: a.sub(b, alpha=2), lambda a, b: a.sub(b, alpha=2),
      [(2, 3), (3,)]),
    O("mul_bcast", ("Tensor.__mul__",), lambda a, b: a * b, lambda a, b: a * b,
      [(2, 1, 3), (4, 1)], ints=True, noncontig=True),
    O("rmul", ("Tensor.__rmul__",), lambda a: 3 * a, lambda a: 3 * a, [(2, 3)], ints=True),
    O("mul_method", ("Tensor.mul",), lambda a, b: a.mul(b), lambda a, b: a.mul(b), [(3,), ()]),
    O("div_bcast", ("Tensor.__truediv__",), lambda a, b: a / b, lambda a, b: a / b,
      [(2, 3), (3,)], kind="away"),
    O("div_ints", ("Tensor.__truediv__",), lambda a: a / 2, lambda a: a / 2, [(2, 3)],
      ints=True),
    O("rdiv", ("Tensor.__rtruediv__",), lambda a: 2 / a, lambda a: 2 / a, [(2, 3)], kind="away"),
    O("div_method", ("Tensor.div",), lambda a, b: a.div(b), lambda a, b: a.div(b),
      [(2, 3), (2, 3)], kind="away"),
    O("neg", ("Tensor.__neg__",), lambda a: -a, lambda a: -a, [(2, 3)], ints=True),
    O("pow_number", ("Tensor.__pow__",), lambda a: a ** 2 + a ** 3 + a ** 0.5 + a ** -1.5,
      lambda a: a ** 2 + a ** 3 + a ** 0.5 + a ** -1.5, [(2, 3)], kind="pos"),
    O("pow_int", ("Tensor.__pow__",), lambda a: a ** 2, lambda a: a ** 2, [(2, 3)], ints=True),
    O("pow_frac_of_ints", ("Tensor.__pow__",), lambda a: a ** 1.5, lambda a: a ** 1.5,
      [(4,)], kind="pos", ints=True),
    O("pow_zero", ("Tensor.__pow__",), lambda a: a ** 0.0, lambda a: a ** 0.0, [(3,)]),
    O("pow_tensor", ("Tensor.__pow__",), lambda a, b: a ** b, lambda a, b: a ** b,
      [(2, 3), (3,)], kind="pos"),
    O("rpow", ("Tensor.__rpow__",), lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(2, 3)], ints=True),
    O("pow_method", ("Tensor.pow",), lambda a, b: a.pow(b) + a.pow(2),
      lambda a, b: a.pow(b) + a.pow(2), [(3,), ()], kind="pos"),
    O("matmul_2d", ("Tensor.__matmul__",), lambda a, b: a @ b, lambda a, b: a @ b,
      [(3, 4), (4, 2)], noncontig=True),
    O("matmul_batched_1d", ("Tensor.__matmul__",), lambda a, b: a @ b, lambda a, b: a @ b,
      [(2, 3, 4), (4,)]),
    O("matmul_1d_bcast", ("Tensor.__matmul__",), lambda a, b: a @ b, lambda a, b: a @ b,
      [(4,), (2, 4, 3)]),
    O("rmatmul", ("Tensor.__rmatmul__",), lambda b: np.ones((2, 3), b.dtype) @ b,
      lambda b: _th(np.ones((2, 3))).to(b.dtype) @ b, [(3, 2)]),
    O("maximum", ("Tensor.maximum",), lambda a, b: a.maximum(b),
      lambda a, b: _t().maximum(a, b), [(2, 3), (3,)], ints=True),
    O("minimum", ("Tensor.minimum",), lambda a, b: a.minimum(b),
      lambda a, b: _t().minimum(a, b), [(2, 1), (3,)], ints=True),
    O("maximum_ties", ("Tensor.maximum", "Tensor.minimum"),
      lambda a: a.maximum(a * 1.0) + a.minimum(a.detach()),
      lambda a: _t().maximum(a, a * 1.0) + _t().minimum(a, a.detach()), [(3,)], fd=False),
    O("clip", ("Tensor.clip",), lambda a: a.clip(-0.5, 0.7), lambda a: a.clip(-0.5, 0.7),
      [(2, 3)], kind="away", ints=True),
    O("clamp_one_side", ("Tensor.clamp",), lambda a: a.clamp(min=0.1) + a.clamp(max=-0.2),
      lambda a: a.clamp(min=0.1) + a.clamp(max=-0.2), [(4,)], kind="away"),
    # ------------------------------------------------------------------ comparisons
    *[O(f"compare_{name}", (f"Tensor.{name}",), (lambda n: lambda a, b: getattr(a, n)(b))(name),
        (lambda n: lambda a, b: getattr(a, n)(b))(name), [(2, 3), (3,)], ints=True, grad=False)
      for name in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")],
    O("compare_number", ("Tensor.__gt__", "Tensor.__eq__"), lambda a: (a > 0) == (a > 0.5),
      lambda a: (a > 0) == (a > 0.5), [(2, 3)], grad=False),
    O("eq_method", ("Tensor.eq",), lambda a, b: a.eq(b), lambda a, b: a.eq(b), [(3,), (3,)],
      ints=True, grad=False),
    O("isclose", ("Tensor.isclose",),
      lambda a, b: a.isclose(a + b * 1e-9).sum() * 10 + a.isclose(a + 1, atol=2).sum(),
      lambda a, b: a.isclose(a + b * 1e-9).sum() * 10 + a.isclose(a + 1, atol=2).sum(),
      [(2, 3), (3,)], grad=False),
    # ------------------------------------------------------------------ elementwise
    *[O(name, (f"Tensor.{name}",), (lambda n: lambda a: getattr(a, n)())(name),
        (lambda n: lambda a: getattr(a, n)())(name), [shape], kind=kind, ints=ints)
      for name, kind, shape, ints in [
          ("exp", None, (2, 3), True), ("log", "pos", (2, 3), True), ("sqrt", "pos", (3,), True),
          ("tanh", None, (), True), ("sigmoid", None, (2, 3), True), ("relu", "away", (2, 3), True),
          ("abs", "away", (2, 3), True), ("log2", "pos", (2, 3), True), ("exp2", None, (3,), True),
          ("rsqrt", "pos", (2, 3), True)]],
    O("elementwise_noncontig", ("Tensor.exp", "Tensor.tanh"), lambda a: a.exp() * a.tanh(),
      lambda a: a.exp() * a.tanh(), [(3, 4)], noncontig=True),
    O("elementwise_empty", ("Tensor.exp",), lambda a: a.exp(), lambda a: a.exp(), [(0, 3)]),
    O("tl_functions", ("tl.exp", "tl.log", "tl.sqrt", "tl.tanh"),
      lambda a: tl.exp(a) + tl.log(a) + tl.sqrt(a) + tl.tanh(a),
      lambda a: a.exp() + a.log() + a.sqrt() + a.tanh(), [(2, 3)], kind="pos"),
    # ------------------------------------------------------------------ reductions
    O("sum_all", ("Tensor.sum",), lambda a: a.sum(), lambda a: a.sum(), [(2, 3)], ints=True),
    O("sum_axes", ("Tensor.sum",), lambda a: a.sum(axis=(0, -1), keepdims=True),
      lambda a: a.sum(dim=(0, -1), keepdim=True), [(2, 3, 4)], ints=True, noncontig=True),
    O("sum_dim_keepdim", ("Tensor.sum",), lambda a: a.sum(dim=1, keepdim=True),
      lambda a: a.sum(dim=1, keepdim=True), [(2, 3)]),
    O("sum_empty_tuple", ("Tensor.sum",), lambda a: a.sum(axis=()), lambda a: a.sum(dim=()),
      [(2, 3)]),
    O("sum_0d", ("Tensor.sum",), lambda a: a.sum(axis=0), lambda a: a.sum(dim=0), [()]),
    O("sum_size0", ("Tensor.sum",), lambda a: a.sum(axis=0), lambda a: a.sum(dim=0), [(0, 3)],
      ints=True),
    O("mean", ("Tensor.mean",), lambda a: a.mean(axis=-1), lambda a: a.mean(dim=-1), [(2, 3)]),
    O("mean_all_keep", ("Tensor.mean",), lambda a: a.mean(keepdims=True),
      lambda a: a.mean(dim=(0, 1, 2), keepdim=True), [(2, 1, 3)]),
    O("mean_of_ints", ("Tensor.mean",), lambda a: a.mean(), lambda a: a.float().mean(), [(2, 3)],
      ints=True, floats=()),
    O("max_all", ("Tensor.max",), lambda a: a.max(), lambda a: a.max(), [(2, 3)], ints=True),
    O("max_axis", ("Tensor.max",), lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [(2, 3, 2)],
      ints=True, noncontig=True),
    O("max_size0_result", ("Tensor.max",), lambda a: a.max(axis=1), lambda a: a.amax(dim=1),
      [(0, 3)]),
    O("min_axes_keep", ("Tensor.min",), lambda a: a.min(axis=(0, 2), keepdims=True),
      lambda a: a.amin(dim=(0, 2), keepdim=True), [(2, 3, 2)], ints=True),
    O("min_all", ("Tensor.min",), lambda a: a.min(), lambda a: a.min(), [(3,)]),
    O("amax", ("Tensor.amax",), lambda a: a.amax(dim=-1), lambda a: a.amax(dim=-1), [(2, 3)]),
    O("amin", ("Tensor.amin",), lambda a: a.amin(dim=0, keepdim=True),
      lambda a: a.amin(dim=0, keepdim=True), [(2, 3)]),
    O("prod_all", ("Tensor.prod",), lambda a: a.prod(), lambda a: a.prod(), [(2, 3)], ints=True),
    O("prod_axis_with_zero", ("Tensor.prod",), lambda a: (a * tl.tensor(
        np.array([[1.0, 0.0, 1.0]]).astype(a.dtype), device=a.device)).prod(axis=1),
      lambda a: (a * _th(np.array([[1.0, 0.0, 1.0]])).to(a.dtype)).prod(dim=1), [(2, 3)]),
    O("prod_tuple_keep", ("Tensor.prod",), lambda a: a.prod(axis=(0, 2), keepdims=True),
      lambda a: a.prod(dim=2, keepdim=True).prod(dim=0, keepdim=True), [(2, 2, 3)]),
    O("var", ("Tensor.var",), lambda a: a.var(axis=-1), lambda a: a.var(dim=-1, correction=0),
      [(3, 4)]),
    O("var_corrected", ("Tensor.var",), lambda a: a.var(axis=(0, 1), correction=1, keepdims=True),
      lambda a: a.var(dim=(0, 1), correction=1, keepdim=True), [(2, 3, 2)]),
    O("var_of_ints", ("Tensor.var",), lambda a: a.var(), lambda a: a.float().var(correction=0),
      [(2, 3)], ints=True, floats=()),
    O("std", ("Tensor.std",), lambda a: a.std(axis=0) + a.std(correction=1),
      lambda a: a.std(dim=0, correction=0) + a.std(correction=1), [(3, 2)]),
    O("logsumexp", ("Tensor.logsumexp",), lambda a: a.logsumexp(axis=-1),
      lambda a: a.logsumexp(dim=-1), [(2, 3)], ints=True),
    O("logsumexp_keep", ("Tensor.logsumexp",), lambda a: a.logsumexp(dim=(0, 2), keepdim=True),
      lambda a: a.logsumexp(dim=(0, 2), keepdim=True), [(2, 3, 2)], noncontig=True),
    O("cumsum", ("Tensor.cumsum",), lambda a: a.cumsum(axis=1), lambda a: a.cumsum(dim=1),
      [(2, 3)], ints=True),
    O("cumsum_neg", ("Tensor.cumsum",), lambda a: a.cumsum(dim=-1), lambda a: a.cumsum(dim=-1),
      [(2, 3)], noncontig=True),
    O("argmax", ("Tensor.argmax",), lambda a: a.argmax(axis=1) + a.argmax(),
      lambda a: a.argmax(dim=1) + a.argmax(), [(3, 4)], grad=False, ints=True),
    O("argmax_keep", ("Tensor.argmax",), lambda a: a.argmax(dim=0, keepdim=True),
      lambda a: a.argmax(dim=0, keepdim=True), [(3, 4)], grad=False),
    O("softmax_method", ("Tensor.softmax",), lambda a: a.softmax(axis=0),
      lambda a: a.softmax(dim=0), [(3, 2)]),
    O("log_softmax_method", ("Tensor.log_softmax",), lambda a: a.log_softmax(dim=-1),
      lambda a: a.log_softmax(dim=-1), [(2, 3)], noncontig=True),
    O("numel", ("Tensor.numel",), lambda a: a.numel(), lambda a: a.numel(), [(2, 3)],
      grad=False),
    # ------------------------------------------------------------------ shapes
    O("reshape", ("Tensor.reshape",), lambda a: a.reshape(3, -1), lambda a: a.reshape(3, -1),
      [(2, 3, 2)], ints=True, noncontig=True),
    O("view_tuple", ("Tensor.view",), lambda a: a.view((6,)), lambda a: a.reshape(6), [(2, 3)]),
    O("flatten", ("Tensor.flatten",), lambda a: a.flatten(), lambda a: a.flatten(), [(2, 3)]),
    O("transpose_2d", ("Tensor.transpose",), lambda a: a.transpose(0, 1),
      lambda a: a.transpose(0, 1), [(2, 3)], ints=True),
    O("transpose_neg", ("Tensor.transpose",), lambda a: a.transpose(-2, -1),
      lambda a: a.transpose(-2, -1), [(2, 3, 4)], noncontig=True),
    O("transpose_permutation", ("Tensor.transpose",), lambda a: a.transpose(2, 0, 1) + a.transpose(),
      lambda a: a.permute(2, 0, 1) + a.permute(2, 1, 0), [(2, 2, 2)]),
    O("permute", ("Tensor.permute",), lambda a: a.permute(1, 2, 0), lambda a: a.permute(1, 2, 0),
      [(2, 3, 4)]),
    O("swapaxes", ("Tensor.swapaxes",), lambda a: a.swapaxes(0, 2),
      lambda a: a.swapaxes(0, 2), [(2, 3, 4)]),
    O("T", ("Tensor.T",), lambda a: a.T, lambda a: a.T, [(2, 3)]),
    O("squeeze_all", ("Tensor.squeeze",), lambda a: a.squeeze(), lambda a: a.squeeze(),
      [(1, 3, 1)], ints=True),
    O("squeeze_axis", ("Tensor.squeeze",), lambda a: a.squeeze(axis=-1) + a.squeeze(dim=1),
      lambda a: a.squeeze(dim=-1) + a.squeeze(dim=1), [(3, 1)]),
    O("unsqueeze", ("Tensor.unsqueeze",), lambda a: a.unsqueeze(0) * a.unsqueeze(-1),
      lambda a: a.unsqueeze(0) * a.unsqueeze(-1), [(3,)]),
    O("unsqueeze_0d", ("Tensor.unsqueeze",), lambda a: a.unsqueeze(0), lambda a: a.unsqueeze(0),
      [()]),
    O("expand", ("Tensor.expand",), lambda a: a.expand(2, 3, -1), lambda a: a.expand(2, 3, -1),
      [(3, 1)], ints=True),
    O("expand_tuple", ("Tensor.expand",), lambda a: a.expand((2, 4)), lambda a: a.expand(2, 4),
      [(1, 4)]),
    O("flip", ("Tensor.flip",), lambda a: a.flip(0) + a.flip(0, -1),
      lambda a: a.flip(0) + a.flip(0, -1), [(2, 3)], ints=True, noncontig=True),
    O("roll", ("Tensor.roll",), lambda a: a.roll(1, 1) + a.roll((1, -2), dims=(0, 1)),
      lambda a: a.roll(1, 1) + a.roll((1, -2), dims=(0, 1)), [(2, 3)], ints=True),
    O("roll_flat", ("Tensor.roll",), lambda a: a.roll(4), lambda a: a.roll(4), [(2, 3)]),
    O("repeat", ("Tensor.repeat",), lambda a: a.repeat(2, 1, 3), lambda a: a.repeat(2, 1, 3),
      [(2, 2)], ints=True),
    O("split", ("Tensor.split",), lambda a: tl.cat([p * (i + 1) for i, p in enumerate(a.split(2))]),
      lambda a: _t().cat([p * (i + 1) for i, p in enumerate(a.split(2))]), [(5, 2)], ints=True),
    O("split_sections", ("Tensor.split",),
      lambda a: tl.cat([p * (i + 1) for i, p in enumerate(a.split([1, 2], dim=-1))], -1),
      lambda a: _t().cat([p * (i + 1) for i, p in enumerate(a.split([1, 2], dim=-1))], -1),
      [(2, 3)]),
    O("chunk", ("Tensor.chunk",), lambda a: tl.cat([p * (i + 1) for i, p in enumerate(a.chunk(3, 1))], 1),
      lambda a: _t().cat([p * (i + 1) for i, p in enumerate(a.chunk(3, 1))], 1), [(2, 5)]),
    O("gather", ("Tensor.gather",), lambda a: a.gather(1, GATHER),
      lambda a: a.gather(1, _th(GATHER)), [(2, 3)], ints=True),
    O("gather_axis0_shorter", ("Tensor.gather",), lambda a: a.gather(0, GATHER[:, :2]),
      lambda a: a.gather(0, _th(GATHER[:, :2])), [(3, 3)]),
    O("diagonal", ("Tensor.diagonal",), lambda a: a.diagonal() + a.diagonal(1)[:1].sum(),
      lambda a: a.diagonal() + a.diagonal(1)[:1].sum(), [(3, 3)], ints=True),
    O("diagonal_dims", ("Tensor.diagonal",), lambda a: a.diagonal(-1, 0, 2),
      lambda a: a.diagonal(-1, 0, 2), [(3, 2, 4)], noncontig=True),
    O("contiguous", ("Tensor.contiguous",), lambda a: a.contiguous() * 2,
      lambda a: a.contiguous() * 2, [(2, 3)], noncontig=True),
    O("getitem_basic", ("Tensor.__getitem__",), lambda a: a[1:, ::-2] * a[-1, None, 2:],
      lambda a: a[1:, _t().arange(a.shape[1] - 1, -1, -2)] * a[-1, None, 2:], [(3, 4)],
      ints=True),
    O("getitem_repeated", ("Tensor.__getitem__",), lambda a: a[IDX], lambda a: a[_th(IDX)],
      [(3, 2)]),
    O("getitem_pairs", ("Tensor.__getitem__",), lambda a: a[IDX, IDX], lambda a: a[_th(IDX), _th(IDX)],
      [(3, 4)]),
    O("getitem_bool", ("Tensor.__getitem__",), lambda a: a[MASK3], lambda a: a[_th(MASK3)],
      [(3, 2)]),
    O("getitem_int_then_array", ("Tensor.__getitem__",), lambda a: a[1, :, IDX[:2]],
      lambda a: a[1, :, _th(IDX[:2])], [(2, 3, 4)], noncontig=True),
    O("getitem_tensor_0d", ("Tensor.__getitem__",),
      lambda a: a[tl.tensor(np.array(1), device=a.device), :, IDX],
      lambda a: a[_th(np.array(1)), :, _th(IDX)], [(2, 2, 3)]),
    O("masked_fill", ("Tensor.masked_fill",), lambda a: a.masked_fill(MASK3, -1.0),
      lambda a: a.masked_fill(_th(MASK3), -1.0), [(2, 3)]),
    O("cat", ("tl.cat", "tl.concatenate"), lambda a, b: tl.cat([a, b], 1) + tl.concatenate([a, b], -1),
      lambda a, b: 2 * _t().cat([a, b], 1), [(2, 3), (2, 1)], ints=True),
    O("stack", ("tl.stack",), lambda a, b: tl.stack([a, b], axis=-1),
      lambda a, b: _t().stack([a, b], dim=-1), [(2, 3), (2, 3)], ints=True),
    O("where", ("tl.where",), lambda a, b: tl.where(MASK3, a, b),
      lambda a, b: _t().where(_th(MASK3), a, b), [(2, 1), (3,)], ints=True),
    O("where_number", ("tl.where",), lambda a: tl.where(a > 0, a, 0.0),
      lambda a: _t().where(a > 0, a, _t().zeros((), dtype=a.dtype)), [(2, 3)], kind="away"),
    # ------------------------------------------------------------------ making tensors
    O("zeros_ones", ("tl.zeros", "tl.ones"), lambda: tl.zeros(2, 3) + tl.ones((2, 3)),
      lambda: _t().zeros(2, 3) + _t().ones(2, 3), [], floats=("float32",), grad=False),
    O("arange", ("tl.arange",), lambda: tl.arange(5), lambda: _t().arange(5), [],
      floats=("float32",), grad=False),
    # ------------------------------------------------------------------ F.*
    O("F.linear", ("F.linear",), lambda x, w, b: F.linear(x, w, b),
      lambda x, w, b: _t().nn.functional.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)]),
    O("F.linear_nobias_1d", ("F.linear",), lambda x, w: F.linear(x, w),
      lambda x, w: _t().nn.functional.linear(x, w), [(4,), (2, 4)]),
    O("F.relu", ("F.relu",), lambda a: F.relu(a), lambda a: _t().relu(a), [(2, 3)], kind="away"),
    O("F.tanh_sigmoid", ("F.tanh", "F.sigmoid"), lambda a: F.tanh(a) * F.sigmoid(a),
      lambda a: _t().tanh(a) * _t().sigmoid(a), [(2, 3)]),
    O("F.gelu", ("F.gelu",), lambda a: F.gelu(a), lambda a: _t().nn.functional.gelu(a),
      [(3, 4)], fast_path="GELU"),
    O("F.gelu_wide", ("F.gelu",), lambda a: F.gelu(a * 4), lambda a: _t().nn.functional.gelu(a * 4),
      [(20,)], fd=False, fast_path="GELU"),
    O("F.gelu_tanh", ("F.gelu",), lambda a: F.gelu(a, approximate="tanh"),
      lambda a: _t().nn.functional.gelu(a, approximate="tanh"), [(2, 3)], fast_path="GELU"),
    O("F.gelu_0d", ("F.gelu",), lambda a: F.gelu(a) + F.gelu(a, "tanh"),
      lambda a: _t().nn.functional.gelu(a) + _t().nn.functional.gelu(a, approximate="tanh"),
      [()], fast_path="GELU"),
    O("F.erf", ("F.erf",), lambda a: F.erf(a.data * 3), lambda a: _t().erf(a * 3), [(40,)],
      grad=False),
    O("F.silu", ("F.silu",), lambda a: F.silu(a), lambda a: _t().nn.functional.silu(a),
      [(2, 3)]),
    O("F.leaky_relu", ("F.leaky_relu",), lambda a: F.leaky_relu(a) + F.leaky_relu(a, 0.2),
      lambda a: _t().nn.functional.leaky_relu(a) + _t().nn.functional.leaky_relu(a, 0.2),
      [(2, 3)], kind="away"),
    O("F.softmax", ("F.softmax",), lambda a: F.softmax(a, axis=1),
      lambda a: _t().softmax(a, dim=1), [(2, 3, 2)]),
    O("F.softmax_0d", ("F.softmax",), lambda a: F.softmax(a), lambda a: _t().softmax(a, dim=-1),
      [()]),
    O("F.log_softmax", ("F.log_softmax",), lambda a: F.log_softmax(a, dim=0),
      lambda a: _t().log_softmax(a, dim=0), [(3, 2)]),
    O("F.cross_entropy", ("F.cross_entropy",), lambda x: F.cross_entropy(x, TARGETS),
      lambda x: _ce(x), [(2, 3, 4)]),
    O("F.cross_entropy_sum_none", ("F.cross_entropy",),
      lambda x: F.cross_entropy(x, TARGETS, reduction="none") + F.cross_entropy(x, TARGETS,
                                                                                reduction="sum"),
      lambda x: _ce(x, "none") + _ce(x, "sum"), [(2, 3, 4)]),
    O("F.mse_loss", ("F.mse_loss",),
      lambda a, b: F.mse_loss(a, b) + F.mse_loss(a, b, reduction="sum")
      + F.mse_loss(a, b, reduction="none").sum(axis=0),
      lambda a, b: _t().nn.functional.mse_loss(a, b) + _t().nn.functional.mse_loss(
          a, b, reduction="sum") + _t().nn.functional.mse_loss(a, b, reduction="none").sum(0),
      [(2, 3), (2, 3)]),
    O("F.layer_norm", ("F.layer_norm",), lambda x, w, b: F.layer_norm(x, w, b),
      lambda x, w, b: _t().nn.functional.layer_norm(x, (x.shape[-1],), w, b),
      [(2, 3, 5), (5,), (5,)], noncontig=True, fast_path="LayerNorm"),
    O("F.layer_norm_1d", ("F.layer_norm",), lambda x, w, b: F.layer_norm(x, w, b, eps=0.1),
      lambda x, w, b: _t().nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps=0.1),
      [(4,), (4,), (4,)], fast_path="LayerNorm"),
    O("F.embedding", ("F.embedding",), lambda w: F.embedding(np.array([[0, 2, 2], [1, 0, 2]]), w),
      lambda w: _t().nn.functional.embedding(_th(np.array([[0, 2, 2], [1, 0, 2]])), w), [(3, 2)]),
    O("F.dropout_identity", ("F.dropout",), lambda a: F.dropout(a, 0.0) + F.dropout(a, 0.5, False),
      lambda a: 2 * a, [(2, 3)]),
    O("F.pad", ("F.pad",), lambda a: F.pad(a, (1, 2)) + F.pad(a, (1, 2, 0, 0), value=0.5),
      lambda a: _t().nn.functional.pad(a, (1, 2)) + _t().nn.functional.pad(a, (1, 2, 0, 0),
                                                                           value=0.5),
      [(2, 3)], ints=False),
    O("F.pad_two_axes", ("F.pad",), lambda a: F.pad(a, (0, 1, 2, 0)),
      lambda a: _t().nn.functional.pad(a, (0, 1, 2, 0)), [(2, 2, 3)], noncontig=True),
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
      lambda: _t().ones(3, 5, dtype=_t().int64).tril(2), [], floats=("float32",), grad=False),
]


# Public names that are not ops, and why they have no row.
EXEMPT = {
    # conversions and autograd machinery, tested in tests/test_tensor.py
    "Tensor.numpy": "conversion to NumPy, the output side of every row",
    "Tensor.item": "conversion", "Tensor.tolist": "conversion",
    "Tensor.to": "device move / cast: tests/test_tensor.py",
    "Tensor.float": "cast: test_tensor.py", "Tensor.double": "cast: test_tensor.py",
    "Tensor.detach": "graph cut: test_tensor.py", "Tensor.backward": "autograd entry point",
    "Tensor.zero_grad": "autograd bookkeeping", "Tensor.requires_grad_": "autograd bookkeeping",
    "Tensor.retain_grad": "autograd bookkeeping",
    "Tensor.__init__": "constructor", "Tensor.__repr__": "printing",
    "Tensor.__len__": "Python protocol", "Tensor.__bool__": "Python protocol",
    "Tensor.__hash__": "identity hash: test_tensor.py",
    # attributes, not ops
    "Tensor.data": "attribute", "Tensor.grad": "attribute", "Tensor.requires_grad": "attribute",
    "Tensor.grad_fn": "attribute", "Tensor.shape": "attribute", "Tensor.ndim": "attribute",
    "Tensor.dtype": "attribute", "Tensor.size": "attribute (the number of elements)",
    "Tensor.device": "attribute", "Tensor.is_leaf": "attribute",
    # tinyllm namespace
    "tl.Tensor": "the class itself", "tl.tensor": "constructor: test_tensor.py (copies)",
    "tl.as_tensor": "constructor: test_tensor.py (shares)",
    "tl.from_numpy": "constructor: test_tensor.py (shares)",
    "tl.randn": "random values (seeded draws), no reference to compare with",
    "tl.is_tensor": "a type check", "tl.no_grad": "autograd switch: test_tensor.py",
    "tl.enable_grad": "autograd switch", "tl.is_grad_enabled": "autograd switch",
    "tl.Function": "the base class of every op", "tl.gradcheck": "the checker: test_ops_grad.py",
    "tl.GradcheckError": "an exception", "tl.manual_seed": "the RNG",
    "tl.set_default_device": "device setting", "tl.get_default_device": "device setting",
    "tl.fast_paths": "switch: fast paths are checked by the rows with fast_path",
    "tl.checkpoint": "wraps a function, not an op: tests/test_exercises_precision.py (14.1) and "
                     "tests/test_activation_checkpoint.py compare it with the plain run",
    "tl.functional": "the module of the F.* rows", "tl.save": "serialization: its own tests",
    "tl.load": "serialization: its own tests",
    # functional
    "F.ScaledDotProductAttention": "the Function behind F.scaled_dot_product_attention",
}
