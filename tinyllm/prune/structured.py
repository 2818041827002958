"""Structured pruning: remove whole attention heads and MLP neurons, ranked by measured importance.

Unstructured zeros save nothing on ordinary hardware: a matrix with half its entries zero costs
a dense matmul all the same. Removing a *unit* removes whole rows and columns, so the matrices
could simply be smaller. The two units of a Transformer block:

* an **attention head** h of a layer with head size D: its query, key and value rows of the
  packed projection ``qkv.weight`` (3C, C), rows ``hD:(h+1)D`` of each third, and its columns
  ``hD:(h+1)D`` of the output projection ``proj.weight`` (C, C);
* an **MLP neuron** j: row j of ``fc.weight`` (4C, C) and column j of ``proj.weight`` (C, 4C).

Zeroing a unit's output columns already removes its contribution; zeroing its input rows too
makes the unit's whole computation removable. (The biases stay: a removed unit's bias only
reaches the zeroed columns.)

**Importance** is measured, not guessed (Michel et al., 2019, "Are Sixteen Heads Really Better
than One?"): the importance of a unit is the change of the loss, on a few fixed batches, when
that unit alone is removed, ``I = L(without the unit) - L(model)``. Units whose removal costs
least are pruned first. Each unit costs one evaluation of the loss: cheap for 16 heads, a minute
for the baby GPT's 2,048 neurons.

A *unit* is a list of ``(name, parameter, index)``: the entries ``parameter.data[index]`` it owns.
"""

from __future__ import annotations

from tinyllm.autograd import no_grad
from tinyllm.backend import get_array_module
from tinyllm.nn.attention import MultiHeadAttention
from tinyllm.nn.transformer import FeedForward
from tinyllm.prune.masks import n_pruned

__all__ = ["head_units", "neuron_units", "ablation_importance", "head_importance",
           "neuron_importance", "unit_masks", "prune_units"]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def head_units(model) -> list[list]:
    """The attention heads of every self-attention layer, in layer order: (L * H) units."""
    units = []
    for name, m in model.named_modules():
        if not isinstance(m, MultiHeadAttention) or m.cross:
            continue
        c, h = m.d_model, m.n_head
        d = c // h
        qkv, proj = _join(name, "qkv.weight"), _join(name, "proj.weight")
        for i in range(h):
            rows = [slice(part * c + i * d, part * c + (i + 1) * d) for part in range(3)]
            units.append([(qkv, m.qkv.weight, (r,)) for r in rows]
                         + [(proj, m.proj.weight, (slice(None), slice(i * d, (i + 1) * d)))])
    if not units:
        raise ValueError(f"{type(model).__name__} has no self-attention heads to prune")
    return units


def neuron_units(model) -> list[list]:
    """The hidden neurons of every feed-forward block, in layer order: (L * d_ff) units."""
    units = []
    for name, m in model.named_modules():
        if not isinstance(m, FeedForward):
            continue
        fc, proj = _join(name, "fc.weight"), _join(name, "proj.weight")
        for j in range(m.fc.weight.shape[0]):
            units.append([(fc, m.fc.weight, (j,)), (proj, m.proj.weight, (slice(None), j))])
    if not units:
        raise ValueError(f"{type(model).__name__} has no feed-forward blocks to prune")
    return units


def ablation_importance(units: list, loss_fn) -> list[float]:
    """The loss change when each unit alone is removed: ``loss_fn() - base`` with the unit's
    entries set to zero, then put back exactly as they were before the next unit.

    ``loss_fn()`` returns the mean loss (a float) on fixed batches; ``base`` is its value
    with every unit in place. Positive: the unit helps. Runs under ``no_grad``.
    """
    with no_grad():
        base = float(loss_fn())
        scores = []
        # BEGIN SOLUTION
        for unit in units:
            saved = [p.data[index].copy() for _, p, index in unit]
            for _, p, index in unit:
                p.data[index] = 0
            try:
                scores.append(float(loss_fn()) - base)
            finally:
                for (_, p, index), old in zip(unit, saved):
                    p.data[index] = old
        # END SOLUTION
    return scores


def _per_layer(scores, units):
    """Scores of units listed layer by layer (each layer's units share their first tensor)
    -> an (n_layers, units per layer) float64 array."""
    n_layers = len(dict.fromkeys(u[0][0] for u in units))
    xp = get_array_module(units[0][0][1].data)
    return xp.asarray(scores, dtype=xp.float64).reshape(n_layers, -1)


def head_importance(model, loss_fn):
    """(n_layer, n_head) array: the loss increase when each head alone is removed."""
    units = head_units(model)
    return _per_layer(ablation_importance(units, loss_fn), units)


def neuron_importance(model, loss_fn):
    """(n_layer, d_ff) array: the loss increase when each MLP neuron alone is removed."""
    units = neuron_units(model)
    return _per_layer(ablation_importance(units, loss_fn), units)


def unit_masks(units: list) -> dict:
    """``{name: mask}`` (True = keep) that removes every unit in ``units``."""
    xp = get_array_module(units[0][0][1].data)
    masks = {}
    for unit in units:
        for name, p, index in unit:
            if name not in masks:
                masks[name] = xp.ones(p.shape, dtype=bool)
            masks[name][index] = False
    return masks


def prune_units(units: list, scores, fraction: float) -> tuple[dict, list[int]]:
    """Masks removing the ``n_pruned(fraction, len(units))`` units of lowest score (ties: the
    earlier unit first), and those units' positions in ``units``."""
    if len(scores) != len(units):
        raise ValueError(f"{len(scores)} importance scores for {len(units)} units")
    k = n_pruned(fraction, len(units))
    order = sorted(range(len(units)), key=lambda i: float(scores[i]))[:k]  # sorted() is stable
    if not order:
        return {}, []
    return unit_masks([units[i] for i in order]), sorted(order)
