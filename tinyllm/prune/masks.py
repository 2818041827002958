"""Unstructured and N:M pruning masks, and the optimizer that keeps pruned weights at zero.

A *mask* is a boolean array shaped like its weight: True = kept, False = pruned (set to zero).

* magnitude pruning (Han et al., 2015): zero the weights of smallest |w|, per tensor
  (``magnitude_mask``: every matrix gets the same sparsity) or over all matrices at once
  (``global_magnitude_masks``: one threshold, so layers with many small weights lose more);
* N:M semi-structured pruning (Mishra et al., 2021): in every group of M consecutive weights
  of a row keep the N largest (``nm_mask``; 2:4 is what sparse tensor cores run);
* ``MaskedOptimizer``: fine-tuning that keeps the pruned weights exactly zero.

Which weights are prunable: the matrices of the ``Linear`` layers (``prunable_weights``). The
embeddings (in GPT also the tied LM head), LayerNorms and biases stay dense: they are a small
part of the compute and the model is far more sensitive to them.

Ties: pruning takes the weights in order of ``|w|`` by a *stable* sort, so among equal
magnitudes the one earlier in row-major order is pruned first. The count is exact:
``n_pruned(sparsity, size)`` weights, ``floor(sparsity * size + 1/2)``.
"""

from __future__ import annotations

import math

from tinyllm.backend import get_array_module
from tinyllm.nn.layers import Linear
from tinyllm.tensor import Tensor

__all__ = ["prunable_weights", "n_pruned", "magnitude_mask", "layer_magnitude_masks",
           "global_magnitude_masks", "nm_mask", "nm_masks", "parse_nm", "apply_masks",
           "masks_from_zeros", "MaskedOptimizer", "sparsity_of"]


def _array(w):
    return w.data if isinstance(w, Tensor) else w


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) \
            or not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1] (the fraction of weights set to "
                         f"zero), got {sparsity!r}")
    return float(sparsity)


def prunable_weights(model) -> dict:
    """``{state_dict name: Parameter}`` of every ``Linear`` weight matrix in ``model``, in
    module order (``blocks.0.attn.qkv.weight``, ...)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, Linear):
            out[f"{name}.weight" if name else "weight"] = module.weight
    if not out:
        raise ValueError(f"{type(model).__name__} has no Linear layers to prune")
    return out


def n_pruned(sparsity: float, size: int) -> int:
    """How many of ``size`` weights a ``sparsity`` prunes: the nearest integer, halves up."""
    return min(size, math.floor(_check_sparsity(sparsity) * size + 0.5))


def magnitude_mask(w, sparsity: float):
    """Mask (True = keep) pruning the ``n_pruned(sparsity, w.size)`` entries of smallest
    ``|w|``; ties go to the entry earlier in row-major order. w: any shape (array or Tensor)."""
    w = _array(w)
    xp = get_array_module(w)
    k = n_pruned(sparsity, w.size)
    # BEGIN SOLUTION
    order = xp.argsort(xp.abs(w).reshape(-1), kind="stable")  # smallest first, ties by index
    mask = xp.ones(w.size, dtype=bool)
    mask[order[:k]] = False
    return mask.reshape(w.shape)
    # END SOLUTION


def layer_magnitude_masks(weights: dict, sparsity: float) -> dict:
    """Per-layer magnitude pruning: every tensor of ``weights`` (name -> array) to ``sparsity``."""
    return {name: magnitude_mask(w, sparsity) for name, w in weights.items()}


def global_magnitude_masks(weights: dict, sparsity: float) -> dict:
    """Global magnitude pruning: one ranking of ``|w|`` over all tensors of ``weights`` together.

    The ``n_pruned(sparsity, total size)`` smallest weights anywhere are pruned, so the
    sparsity differs from layer to layer. Ties: earlier tensor (dict order), then row-major.
    """
    arrays = [_array(w) for w in weights.values()]
    xp = get_array_module(arrays[0])
    flat = xp.concatenate([xp.abs(a).reshape(-1) for a in arrays])
    keep = xp.ones(flat.size, dtype=bool)
    keep[xp.argsort(flat, kind="stable")[:n_pruned(sparsity, flat.size)]] = False
    out, start = {}, 0
    for name, a in zip(weights, arrays):
        out[name] = keep[start:start + a.size].reshape(a.shape)
        start += a.size
    return out


def parse_nm(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> (2, 4): keep N of every M."""
    try:
        n, m = (int(v) for v in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"an N:M pattern looks like '2:4' (keep N of every M weights), "
                         f"got {pattern!r}") from None
    if not 0 < n <= m:
        raise ValueError(f"N:M pattern {pattern!r} needs 0 < N <= M")
    return n, m


def nm_mask(w, n: int = 2, m: int = 4):
    """N:M mask (True = keep): in every group of ``m`` consecutive entries along the last axis
    (a Linear weight's input features, the axis the matmul sums over) keep the ``n`` largest
    ``|w|``. Ties: the entry earlier in the group is pruned first. w (..., K), K % m == 0."""
    w = _array(w)
    xp = get_array_module(w)
    if not 0 < n <= m:
        raise ValueError(f"an N:M mask keeps 0 < n <= m entries per group, got n={n}, m={m}")
    if w.ndim < 1 or w.shape[-1] % m:
        raise ValueError(f"an {n}:{m} mask needs the last axis of the weight {tuple(w.shape)} "
                         f"to be a multiple of {m}")
    # BEGIN SOLUTION
    groups = xp.abs(w).reshape(-1, m)
    order = xp.argsort(groups, axis=1, kind="stable")  # per group, smallest first
    mask = xp.ones(groups.shape, dtype=bool)
    rows = xp.arange(groups.shape[0])[:, None]
    mask[rows, order[:, :m - n]] = False
    return mask.reshape(w.shape)
    # END SOLUTION


def nm_masks(weights: dict, n: int = 2, m: int = 4) -> dict:
    return {name: nm_mask(w, n, m) for name, w in weights.items()}


def apply_masks(weights: dict, masks: dict) -> None:
    """Zero the pruned entries of each named weight in place (weights: name -> Parameter)."""
    for name, mask in masks.items():
        w = weights[name]
        if tuple(mask.shape) != tuple(w.shape):
            raise ValueError(f"the mask of {name} has shape {tuple(mask.shape)}, the weight "
                             f"{tuple(w.shape)}")
        w.data *= mask


def masks_from_zeros(weights: dict) -> dict:
    """The masks of weights pruned earlier: True where the weight is not exactly zero.

    A trained float32 weight is essentially never exactly 0.0 unless pruning put it there (and
    one that is stays at zero harmlessly), so a run folder needs no separate mask file.
    """
    return {name: _array(w) != 0 for name, w in weights.items()}


def sparsity_of(weights: dict) -> float:
    """Fraction of exactly-zero entries over all ``weights`` (name -> array or Parameter)."""
    arrays = [_array(w) for w in weights.values()]
    zeros = sum(int((a == 0).sum()) for a in arrays)
    return zeros / max(1, sum(a.size for a in arrays))


class MaskedOptimizer:
    """Wraps an optimizer so that masked weights stay exactly zero while the rest train.

    ``step()`` zeroes the pruned entries' gradients (so Adam's moments there stay zero), runs
    the wrapped optimizer, then zeroes the pruned weights again: AdamW's decoupled decay
    (``p *= 1 - lr wd``) keeps a zero at zero, and moments carried over from a dense run cannot
    move it either. Everything else (``param_groups``, ``zero_grad``, ``state_dict``, ...) is
    the wrapped optimizer's, so a checkpoint of a pruned run looks like any other.

    Gradient clipping (off in the baby preset) runs before ``step`` and so still counts the
    pruned entries' gradients in the global norm.
    """

    def __init__(self, optimizer, params: dict, masks: dict):
        self.optimizer = optimizer
        self.pairs = []
        for name, mask in masks.items():
            p = params[name]
            if tuple(mask.shape) != tuple(p.shape) or mask.dtype != bool:
                raise ValueError(f"the mask of {name} must be boolean of shape "
                                 f"{tuple(p.shape)}, got {mask.dtype} {tuple(mask.shape)}")
            self.pairs.append((p, mask))

    def step(self) -> None:
        for p, mask in self.pairs:
            if p.grad is not None:
                p.grad *= mask
        self.optimizer.step()
        for p, mask in self.pairs:
            p.data *= mask

    def __getattr__(self, name):  # param_groups, state, zero_grad, state_dict, load_state_dict
        if name == "optimizer":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"MaskedOptimizer({type(self.optimizer).__name__}, {len(self.pairs)} masks)"
