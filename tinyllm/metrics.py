"""Evaluation metrics on the host: NumPy in, NumPy (or a float) out.

* ``confusion_matrix(pred, labels, num_classes)``: ``C[i, j]`` counts the examples of true
  class ``i`` predicted as ``j`` (rows: truth, columns: prediction).
* ``balanced_accuracy(pred, labels, num_classes)``: the mean, over the classes present in
  ``labels``, of each class's recall ``C[c, c] / sum_j C[c, j]``. Unlike plain accuracy it does
  not reward always answering the most frequent class: that scores ``1 / (classes present)``.
"""

from __future__ import annotations

import numpy as np


def _check(pred, labels, num_classes):
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape or pred.ndim != 1:
        raise ValueError(f"pred and labels must be 1-d arrays of the same length, got shapes "
                         f"{pred.shape} and {labels.shape}")
    for name, a in (("pred", pred), ("labels", labels)):
        if a.size and (a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must hold class ids in [0, {num_classes}), got "
                             f"{a.dtype} values {a.min()}..{a.max()}")
    return pred.astype(np.int64), labels.astype(np.int64)


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    pred, labels = _check(pred, labels, num_classes)
    # BEGIN SOLUTION
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    # END SOLUTION
    return cm


def balanced_accuracy(pred, labels, num_classes: int) -> float:
    """Mean recall over the classes that occur in ``labels`` (classes absent from the labels
    are left out: their recall is undefined)."""
    cm = confusion_matrix(pred, labels, num_classes)
    if not cm.sum():
        raise ValueError("balanced_accuracy of no examples is undefined")
    # BEGIN SOLUTION
    support = cm.sum(axis=1)
    present = support > 0
    recall = np.diag(cm)[present] / support[present]
    return float(recall.mean())
    # END SOLUTION
