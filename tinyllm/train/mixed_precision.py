"""A run's precision (``--set precision=bfloat16``): the policy on its model and, for
float16, the loss scaler in its update step and its checkpoints.

    precision   float32 (default) | bfloat16 | float16        (``tinyllm.precision``)
    loss_scale  None: dynamic loss scaling for float16, none otherwise;
                a number: that fixed scale (1 = no scaling, to see float16's underflow)

The scaled step (``step``): backpropagate ``loss * scale``, divide the gradients by the scale
in float32, and skip the update when one is inf or NaN; the dynamic scaler then halves its
scale, or doubles it after ``growth_interval`` clean steps. Its state (scale, clean-step count,
skipped steps) is saved in ``state.json``, so a resumed run continues with the same scale and
ends with the same bits. With ``grad_accum_steps``, ``threads``, ``zero_stage`` or several
ranks the data-parallel step does the same (``attach``): each part backpropagates its loss
times the scale, the summed gradients are unscaled, and an overflow skips the update on every
rank alike. Each evaluation records ``loss_scale``, ``skipped_steps`` and
``grad_underflow``, the fraction of nonzero gradient values that rounding to the format turned
into zero (since the last evaluation).
"""

from __future__ import annotations

from tinyllm.backend import np
from tinyllm.precision import DynamicLossScaler, Precision
from tinyllm.train.checkpoint import CheckpointError

__all__ = ["RunPrecision", "FixedLossScaler", "unscaled_step"]


class FixedLossScaler(DynamicLossScaler):
    """A loss scale that never changes; a step whose gradients overflow is still skipped."""

    def update(self, found_inf: bool) -> None:
        self.skipped += bool(found_inf)


class RunPrecision:
    """The precision of one training run (see the module docstring)."""

    def __init__(self, cfg, model, state: dict, where: str = "state.json"):
        self.fmt = cfg.precision
        self.policy = Precision(cfg.precision, track_underflow=cfg.precision != "float32")
        self.policy.apply(model)
        self.scaler = None
        if cfg.loss_scale is not None:
            self.scaler = FixedLossScaler(cfg.loss_scale)
        elif self.policy.needs_loss_scaling:
            self.scaler = DynamicLossScaler()
        saved = state.get("loss_scaler")
        if self.scaler is not None and saved is not None:
            try:
                self.scaler.load_state_dict(saved)
            except (ValueError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{where}: the loss scaler's state cannot be restored "
                                      f"({e})") from None

    def attach(self, data_parallel) -> None:
        """Hand the loss scaler to the data-parallel step (grad_accum_steps, threads, ranks),
        which scales every part's loss, unscales the summed gradients and skips an overflowing
        update on every rank alike (``DataParallel.update``)."""
        if data_parallel is not None:
            data_parallel.scaler = self.scaler

    def step(self, loss, optimizer, params, lr: float, grad_clip: float) -> float:
        """One update from ``loss``, as ``train_step`` does, with the loss scaled when a scaler
        is in use (an overflowing step changes nothing but the scale)."""
        from tinyllm.train.step import train_step

        if self.scaler is None:
            return train_step(loss, optimizer, params, lr, grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is found just below
            self.scaler.scale_loss(loss).backward()
        return unscaled_step(self.scaler, optimizer, params, grad_clip)

    def state(self) -> dict:
        """What ``state.json`` keeps of it."""
        return {} if self.scaler is None else {"loss_scaler": self.scaler.state_dict()}

    def metrics(self) -> dict:
        """Figures for the evaluation record (and a fresh start of the underflow count)."""
        if self.fmt == "float32" and self.scaler is None:
            return {}
        rec = {"grad_underflow": self.policy.underflow()}
        self.policy.reset_stats()
        if self.scaler is not None:
            rec.update(loss_scale=self.scaler.scale, skipped_steps=self.scaler.skipped)
        return rec


def unscaled_step(scaler, optimizer, params, grad_clip: float) -> float:
    """After the backward of ``loss * scaler.scale``: divide the gradients by the scale, then
    clip and step unless one is inf or NaN, and tell the scaler which it was. Returns the
    gradient norm (0.0 when clipping is off or the step was skipped). The plain scaled step
    and the data-parallel one (``DataParallel.update``) both end with it."""
    from tinyllm.optim import clip_grad_norm_

    found_inf = scaler.unscale_(params)
    norm = 0.0
    if not found_inf:
        if grad_clip > 0:
            norm = clip_grad_norm_(params, grad_clip)
        optimizer.step()
    scaler.update(found_inf)
    return norm
