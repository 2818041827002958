"""``tinyllm.optim``: optimizers, gradient clipping and learning-rate schedules."""

from tinyllm.optim.adam import Adam, AdamW
from tinyllm.optim.clip import clip_grad_norm_
from tinyllm.optim.lr_scheduler import ConstantLR, CosineWithWarmup, LRScheduler, cosine_with_warmup
from tinyllm.optim.optimizer import Optimizer, decay_groups
from tinyllm.optim.sgd import SGD

__all__ = ["Optimizer", "decay_groups", "SGD", "Adam", "AdamW", "clip_grad_norm_", "LRScheduler",
           "CosineWithWarmup", "ConstantLR", "cosine_with_warmup"]
