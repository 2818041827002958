"""Mixed precision: number formats, the rounding Function, a training policy, the loss scaler.

A float is ``(-1)^s * 2^(e - bias) * 1.m``: the exponent bits set the range, the mantissa bits
the precision. Three formats matter for training:

    format     exponent  mantissa  largest     smallest normal  step near 1 (eps)
    float32        8        23     3.4e38      1.2e-38          1.2e-7
    bfloat16       8         7     3.4e38      1.2e-38          7.8e-3     (float32's range)
    float16        5        10     65504       6.1e-5           9.8e-4     (subnormals to 6e-8)

Mixed precision (Micikevicius et al. 2018) keeps float32 *master weights* (the optimizer
updates them: an update of 1e-4 of a weight of 1 vanishes in bfloat16), and runs the matmuls on
low-precision inputs with float32 accumulation, the activations and their gradients in the low
format, softmax and LayerNorm statistics in float32. float16's small range needs *loss
scaling*: gradients below 6e-8 underflow to zero, so the loss is multiplied by S before the
backward pass and the gradients divided by S in float32 before the update.

Here a low-precision value is *emulated*: a float32 array whose values are exactly those the
format can hold, made by rounding to nearest, ties to even (``round_to``). The arithmetic that
follows is float32 arithmetic on those values, which is what a tensor core does (low-precision
inputs, float32 accumulators); memory is not saved by emulation, only the numerics are real.
float16's overflow to inf and underflow to zero are real too (NumPy's float16 does the
rounding). The same rounding runs on a GPU (CuPy float32 arrays).

    policy = Precision("bfloat16")
    policy.apply(model)             # every Linear: rounded inputs, weights and outputs
    scaler = DynamicLossScaler()    # float16 only: see its docstring
"""

from __future__ import annotations

import threading

from tinyllm.autograd import Function
from tinyllm.backend import get_array_module, np

try:  # NumPy's bfloat16 dtype: a faster rounding on the CPU (the bit-level one is the same)
    import ml_dtypes
except ImportError:  # pragma: no cover - the bit-level rounding below does the same
    ml_dtypes = None

__all__ = ["FORMATS", "round_bfloat16", "round_to", "Round", "Precision", "DynamicLossScaler",
           "precision_policy"]

FORMATS = ("float32", "bfloat16", "float16")


def round_bfloat16(x):
    """Round a float32 array to the nearest bfloat16 value, ties to even; float32 out.

    bfloat16 is the top 16 bits of a float32 (sign, 8 exponent bits, 7 mantissa bits), so
    rounding drops the low 16 bits: add half of the dropped range, 0x7FFF, plus the lowest kept
    bit (a tie then rounds up exactly when that bit is odd, landing on an even one), and clear
    the low 16 bits. A carry out of the mantissa moves the exponent up, correctly; past the
    largest bfloat16 it reaches the infinity pattern. NaN is kept as it is (adding to its bits
    could turn it into infinity).
    """
    xp = get_array_module(x)
    x = x.astype(xp.float32, copy=False)
    bits = x.view(xp.uint32)  # the same 32 bits read as an unsigned integer
    # BEGIN SOLUTION
    lowest_kept = (bits >> 16) & 1
    rounded = (bits + (0x7FFF + lowest_kept)) & 0xFFFF0000
    out = rounded.view(xp.float32)
    return xp.where(xp.isnan(x), x, out)
    # END SOLUTION


def round_to(x, fmt: str):
    """``x`` rounded to format ``fmt`` ("float32", "bfloat16", "float16"), in x's dtype.

    "float32" returns ``x`` itself (no copy); float16 overflow gives +-inf and underflow +-0
    (or a subnormal), as the hardware does.
    """
    if fmt == "float32":
        return x
    if fmt == "float16":
        xp = get_array_module(x)
        with np.errstate(over="ignore"):  # overflow to inf is float16's behaviour, kept
            return x.astype(xp.float16).astype(x.dtype)
    if fmt == "bfloat16":
        if ml_dtypes is not None and isinstance(x, np.ndarray):
            return x.astype(ml_dtypes.bfloat16).astype(x.dtype)
        return round_bfloat16(x).astype(x.dtype, copy=False)
    raise ValueError(f"unknown number format {fmt!r}; choose from {', '.join(FORMATS)}")


_STATS_LOCK = threading.Lock()


class Round(Function):
    """y = round(x) to a format; its gradient is the incoming one rounded to the format too.

    Rounding is the identity up to the format's precision, so its local derivative is 1 (the
    straight-through rule); rounding the gradient as well is what makes the *activation
    gradients* live in the format, where float16's underflow happens.
    """

    def __init__(self, fmt: str, stats: dict | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown number format {fmt!r}; choose from {', '.join(FORMATS)}")
        self.fmt, self.stats = fmt, stats

    def forward(self, x):
        return round_to(x, self.fmt)

    def backward(self, gy):
        g = round_to(gy, self.fmt)
        if self.stats is not None:  # count the gradient values that rounding made zero
            xp = get_array_module(g)
            nonzero = int(xp.count_nonzero(gy))
            flushed = int(xp.count_nonzero((g == 0) & (gy != 0)))
            with _STATS_LOCK:  # the parts of a step may backpropagate on threads at once
                self.stats["nonzero"] += nonzero
                self.stats["flushed"] += flushed
        return (g,)


class Precision:
    """A training precision policy: ``Precision("float32" | "bfloat16" | "float16")``.

    ``apply(model)`` makes every ``nn.Linear`` of the model compute
    ``round(round(x) @ round(W)^T + b)``: low-precision matmul inputs (the weight's float32
    master copy stays untouched, each forward rounds it afresh), float32 accumulation (the
    matmul itself), and a low-precision output, so the activations between layers (q, k, v, the
    MLP's hidden layer, the residual branches) and, through ``Round``'s backward, their
    gradients are low-precision values. The residual stream, LayerNorm, softmax, attention's
    probabilities, the cross-entropy and the tied head that multiplies by the embedding table
    are left in float32 (autocast keeps reductions and the loss in float32 as well).
    "float32" is the identity policy. ``remove(model)`` undoes ``apply``.
    """

    def __init__(self, fmt: str = "float32", track_underflow: bool = False):
        if fmt not in FORMATS:
            raise ValueError(f"precision must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.fmt = fmt
        # with track_underflow, the activation gradients' count of nonzero values and of
        # those that rounding flushed to zero (``underflow()``; ``reset_stats()`` clears them)
        self.stats = {"nonzero": 0, "flushed": 0} if track_underflow else None

    def underflow(self) -> float:
        """The fraction of nonzero activation-gradient values that rounding made zero."""
        s = self.stats or {}
        return s.get("flushed", 0) / max(s.get("nonzero", 0), 1)

    def reset_stats(self) -> None:
        if self.stats is not None:
            self.stats.update(nonzero=0, flushed=0)

    @property
    def needs_loss_scaling(self) -> bool:
        return self.fmt == "float16"  # bfloat16 has float32's range: gradients do not underflow

    def cast(self, t):
        """The tensor rounded to the policy's format (differentiable; the identity in float32)."""
        return t if self.fmt == "float32" else Round(self.fmt, self.stats)(t)

    def linear(self, module, x):
        """``module`` (an ``nn.Linear``) applied to x under this policy."""
        from tinyllm import functional as F  # noqa: PLC0415  (functional imports tensor, as we do)

        if x.shape[-1] != module.in_features:
            return type(module).forward(module, x)  # Linear's own error message
        return self.cast(F.linear(self.cast(x), self.cast(module.weight), module.bias))

    def apply(self, model):
        """Put the policy on every ``nn.Linear`` of ``model`` (in place); returns the model."""
        from tinyllm.nn.layers import Linear  # noqa: PLC0415  (precision sits beside nn)

        for m in model.modules():
            if isinstance(m, Linear):
                if self.fmt == "float32":
                    _restore(m)
                else:
                    object.__setattr__(m, "forward", _PolicyForward(self, m))
        return model

    @staticmethod
    def remove(model):
        """Back to plain float32 Linears."""
        for m in model.modules():
            _restore(m)
        return model

    def __repr__(self) -> str:
        return f"Precision({self.fmt!r})"


class _PolicyForward:
    """``module.forward`` under a policy: an instance attribute, so state_dict is unchanged."""

    def __init__(self, policy: Precision, module):
        self.policy, self.module = policy, module

    def __call__(self, x):
        return self.policy.linear(self.module, x)


def _restore(module) -> None:
    if isinstance(module.__dict__.get("forward"), _PolicyForward):
        object.__delattr__(module, "forward")


def precision_policy(model) -> str:
    """The format the Linears of ``model`` compute in ("float32" when no policy is applied)."""
    for m in model.modules():
        f = m.__dict__.get("forward")
        if isinstance(f, _PolicyForward):
            return f.policy.fmt
    return "float32"


class DynamicLossScaler:
    """Dynamic loss scaling for float16 training (Micikevicius et al. 2018; PyTorch's GradScaler).

    Backpropagate ``loss * scale``: every gradient is ``scale`` times larger, lifting small ones
    above float16's underflow. Then ``unscale_(params)`` divides the float32 gradients by
    ``scale`` and reports whether any is inf or NaN; ``update(found_inf)`` adapts the scale:
    an overflow halves it (``backoff_factor``) and that step is skipped, and after
    ``growth_interval`` clean steps in a row it doubles (``growth_factor``), so it stays near the
    largest scale that does not overflow.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000):
        if not init_scale > 0 or not growth_factor > 1 or not 0 < backoff_factor < 1:
            raise ValueError(f"DynamicLossScaler needs init_scale > 0, growth_factor > 1 and "
                             f"0 < backoff_factor < 1, got {init_scale}, {growth_factor}, "
                             f"{backoff_factor}")
        if int(growth_interval) < 1:
            raise ValueError(f"growth_interval must be a positive number of steps, got "
                             f"{growth_interval!r}")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.good_steps = 0  # clean steps since the last change of scale
        self.skipped = 0     # steps skipped for an overflow, in all

    def scale_loss(self, loss):
        return loss * self.scale

    def unscale_(self, params) -> bool:
        """Divide every gradient by the scale, in place; True when one holds an inf or a NaN."""
        found_inf = False
        inv = 1.0 / self.scale
        for p in params:
            if p.grad is None:
                continue
            xp = get_array_module(p.grad)
            p.grad *= p.grad.dtype.type(inv)
            if not found_inf and not bool(xp.isfinite(p.grad).all()):
                found_inf = True
        return found_inf

    def update(self, found_inf: bool) -> None:
        """After a step: halve the scale on an overflow (the step was skipped), else count a
        clean step and grow the scale once ``growth_interval`` of them have passed."""
        # BEGIN SOLUTION
        if found_inf:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            self.skipped += 1
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0
        # END SOLUTION

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped,
                "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval}

    def load_state_dict(self, state: dict) -> None:
        keys = ("scale", "good_steps", "skipped")
        missing = [k for k in keys if not isinstance(state.get(k), (int, float))]
        if missing or not state["scale"] > 0:
            raise ValueError(f"loss scaler state {state!r} is not one DynamicLossScaler saved "
                             f"(needs numbers {', '.join(keys)}, a positive scale)")
        self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])
        self.skipped = int(state["skipped"])

    def __repr__(self) -> str:
        return (f"DynamicLossScaler(scale={self.scale:g}, good_steps={self.good_steps}, "
                f"growth_interval={self.growth_interval})")
