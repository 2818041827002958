"""Learning-rate schedules: functions of the step, applied to an optimizer's groups."""

from __future__ import annotations

import math


def cosine_with_warmup(step: int, max_lr: float, min_lr: float, warmup_steps: int,
                       decay_steps: int) -> float:
    """Linear warm-up from 0 to ``max_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``
    at ``decay_steps``, constant after (nanoGPT's schedule)."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


class LRScheduler:
    """Sets ``group["lr"]`` from ``fn(step)`` on every ``step()`` call (call it once per update)."""

    def __init__(self, optimizer, fn):
        self.optimizer, self.fn, self.last_step = optimizer, fn, 0
        self._apply()

    def _apply(self):
        lr = self.fn(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self._apply()


class CosineWithWarmup(LRScheduler):
    def __init__(self, optimizer, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int):
        super().__init__(optimizer, lambda s: cosine_with_warmup(s, max_lr, min_lr, warmup_steps,
                                                                 decay_steps))


class ConstantLR(LRScheduler):
    def __init__(self, optimizer, lr: float):
        super().__init__(optimizer, lambda s: lr)
