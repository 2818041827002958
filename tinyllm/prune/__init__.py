"""Pruning and sparsity: fewer nonzero weights, fewer attended pairs.

    from tinyllm.prune import prune, prunable_weights, MaskedOptimizer
    result = prune(model, "magnitude", 0.5)               # or "global", "2:4", "heads", "neurons"
    opt = MaskedOptimizer(model.configure_optimizers(), prunable_weights(model), result.masks)

* ``masks``: magnitude (per layer and global), N:M, the optimizer that keeps zeros at zero;
* ``structured``: attention heads and MLP neurons ranked by the loss change when removed;
* ``sparse_attention``: the local and strided patterns of the Sparse Transformer as masks;
* ``methods``: ``prune(model, method, sparsity)``, one entry point.

The ``tinyllm prune`` command (``tinyllm.train.prune_cmd``) prunes a run folder and fine-tunes it.
"""

from tinyllm.prune.masks import (
    MaskedOptimizer,
    apply_masks,
    global_magnitude_masks,
    layer_magnitude_masks,
    magnitude_mask,
    masks_from_zeros,
    n_pruned,
    nm_mask,
    nm_masks,
    parse_nm,
    prunable_weights,
    sparsity_of,
)
from tinyllm.prune.methods import METHODS, PruneResult, check_method, prune
from tinyllm.prune.sparse_attention import (
    AttentionCost,
    attention_cost,
    lm_logits_with_attention_mask,
    local_attention_mask,
    strided_attention_mask,
)
from tinyllm.prune.structured import (
    ablation_importance,
    head_importance,
    head_units,
    neuron_importance,
    neuron_units,
    prune_units,
    unit_masks,
)

__all__ = [
    "MaskedOptimizer", "apply_masks", "global_magnitude_masks", "layer_magnitude_masks",
    "magnitude_mask", "masks_from_zeros", "n_pruned", "nm_mask", "nm_masks", "parse_nm",
    "prunable_weights", "sparsity_of", "METHODS", "PruneResult", "check_method", "prune",
    "AttentionCost", "attention_cost", "lm_logits_with_attention_mask", "local_attention_mask",
    "strided_attention_mask", "ablation_importance", "head_importance", "head_units",
    "neuron_importance", "neuron_units", "prune_units", "unit_masks",
]
