"""``prune(model, method, sparsity)``: one entry point for every pruning method.

=============  ==============================================================================
method         what is zeroed
=============  ==============================================================================
magnitude      in every Linear weight, its ``sparsity`` fraction of smallest |w| (per layer)
global         the ``sparsity`` fraction of smallest |w| over all Linear weights together
N:M (``2:4``)  in every group of M consecutive weights of a row, all but the N largest
heads          the ``sparsity`` fraction of attention heads whose removal raises the loss least
neurons        the ``sparsity`` fraction of MLP neurons whose removal raises the loss least
=============  ==============================================================================

For ``heads`` and ``neurons`` the ranking is global over the layers and needs ``loss_fn``
(no arguments, returns the mean loss on fixed batches). For N:M the sparsity is the pattern's,
1 - N/M. The masks are applied to the model in place and returned with a JSON-able record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyllm.prune.masks import (
    apply_masks,
    global_magnitude_masks,
    layer_magnitude_masks,
    nm_masks,
    parse_nm,
    prunable_weights,
    sparsity_of,
)
from tinyllm.prune.structured import ablation_importance, head_units, neuron_units, prune_units

__all__ = ["METHODS", "PruneResult", "prune", "check_method"]

METHODS = ("magnitude", "global", "N:M", "heads", "neurons")


@dataclass
class PruneResult:
    masks: dict  # name -> boolean mask (True = kept), only the tensors that lost entries
    record: dict  # JSON-able: method, sparsity, weight_sparsity, params, removed units
    importance: list = field(default_factory=list)  # structured methods: one score per unit


def check_method(method: str, sparsity) -> float | None:
    """Validate ``method`` and ``sparsity``; returns the sparsity the method will reach."""
    if ":" in str(method):
        n, m = parse_nm(method)
        implied = 1 - n / m
        if sparsity is not None and abs(float(sparsity) - implied) > 1e-9:
            raise ValueError(f"method {method} prunes {implied:g} of the weights by definition; "
                             f"leave out the sparsity (got {sparsity})")
        return implied
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose from magnitude, global, "
                         "heads, neurons or an N:M pattern such as 2:4")
    if sparsity is None:
        raise ValueError(f"method {method!r} needs a sparsity (the fraction to remove, e.g. 0.5)")
    if isinstance(sparsity, bool) or not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    return float(sparsity)


def prune(model, method: str = "magnitude", sparsity: float | None = None,
          loss_fn=None) -> PruneResult:
    """Prune ``model`` in place by ``method`` (see the module docstring)."""
    sparsity = check_method(method, sparsity)
    weights = prunable_weights(model)
    importance, removed = [], None
    if method in ("magnitude", "global"):
        pick = layer_magnitude_masks if method == "magnitude" else global_magnitude_masks
        masks = pick(weights, sparsity)
    elif ":" in str(method):
        masks = nm_masks(weights, *parse_nm(method))
    else:
        if loss_fn is None:
            raise ValueError(f"method {method!r} ranks units by the loss change when each is "
                             "removed: pass loss_fn (the mean loss on a few fixed batches)")
        units = head_units(model) if method == "heads" else neuron_units(model)
        importance = ablation_importance(units, loss_fn)
        masks, removed = prune_units(units, importance, sparsity)
    masks = {k: v for k, v in masks.items() if not bool(v.all())}
    apply_masks(weights, masks)
    record = {"method": method, "sparsity": sparsity,
              "weight_sparsity": round(sparsity_of(weights), 6), "params": sorted(masks)}
    if removed is not None:
        record["removed_units"] = _unit_names(model, method, removed)
    return PruneResult(masks, record, [float(s) for s in importance])


def _unit_names(model, method: str, removed: list[int]) -> list[list[int]]:
    """[[layer, index], ...] of the removed units (units are listed layer by layer)."""
    units = head_units(model) if method == "heads" else neuron_units(model)
    first = list(dict.fromkeys(u[0][0] for u in units))
    per_layer = len(units) // len(first)
    return [[i // per_layer, i % per_layer] for i in removed]
