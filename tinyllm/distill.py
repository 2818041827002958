"""Knowledge distillation (Hinton et al., 2015): a small student learns from a large teacher.

The teacher's distribution over the next token says more than the one observed token: that
"thee" was nearly as likely as "the", that after "q" comes "u". The student is trained on the
teacher's distribution *softened* by a temperature T,

    p = softmax(z_teacher / T),   q_T = softmax(z_student / T),

through the Kullback-Leibler divergence KL(p || q_T) = sum_j p_j (log p_j - log q_T,j), mixed
with the ordinary cross-entropy to the data (the "hard labels"):

    L = alpha * T^2 * KL(p || q_T) + (1 - alpha) * CE(softmax(z_student), y),

averaged over the positions whose target is not ``ignore_index``. The gradient of the soft term
with respect to the student's logits is (q_T - p) / T: it shrinks as 1/T, and T^2 brings it back
to the scale of the hard term, so that changing T does not silently reweight the two.

``DistillationLoss`` is one fused Function (forward and hand-derived backward side by side);
the teacher's logits are a constant, no gradient flows to them. ``student_loss`` is the loss of
one training step of a student against a frozen teacher.

Shapes: ``N`` positions (B * T flattened), ``V`` vocabulary.
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.autograd import Function, no_grad
from tinyllm.backend import get_array_module
from tinyllm.tensor import Tensor

__all__ = ["DistillationLoss", "distillation_loss", "soft_log_probs", "student_loss"]


def soft_log_probs(logits, temperature: float = 1.0):
    """log softmax(logits / T) along the last axis, on a backend array (stable: max shifted)."""
    xp = get_array_module(logits)
    z = logits / logits.dtype.type(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


class DistillationLoss(Function):
    """alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, y), mean over valid rows.

    Input: student logits s (N, V). The teacher's logits t (N, V) and the targets y (N,) are
    constants given to the constructor. With p = softmax(t/T), q_T = softmax(s/T),
    q = softmax(s) and w_i = [y_i != ignore_index] / (number of valid rows):
    dL/ds_i = w_i (alpha T (q_T,i - p_i) + (1 - alpha) (q_i - onehot(y_i))).
    """

    def __init__(self, teacher_logits, targets, temperature=2.0, alpha=0.5, ignore_index=-100):
        self.t, self.y = teacher_logits, targets
        self.temperature, self.alpha, self.ignore_index = temperature, alpha, ignore_index

    def forward(self, s):
        xp = get_array_module(s)
        temp, alpha, y = self.temperature, self.alpha, self.y
        valid = y != self.ignore_index
        safe_y = y * valid  # ignored rows point at class 0, then get weight 0
        rows = xp.arange(s.shape[0])
        # BEGIN SOLUTION
        log_p = soft_log_probs(self.t, temp)  # the teacher, softened
        log_q_t = soft_log_probs(s, temp)  # the student, softened
        log_q = soft_log_probs(s, 1.0)  # the student at T = 1, for the hard labels
        p = xp.exp(log_p)
        kl = (p * (log_p - log_q_t)).sum(axis=-1)  # KL(p || q_T) per row
        ce = -log_q[rows, safe_y]
        per_row = alpha * temp * temp * kl + (1 - alpha) * ce
        # END SOLUTION
        count = int(valid.sum())
        self.weight = valid / count if count else valid * float("nan")
        self.p, self.log_q_t, self.log_q, self.safe_y, self.rows = p, log_q_t, log_q, safe_y, rows
        return (per_row * self.weight).sum().astype(s.dtype)

    def backward(self, gy):
        xp = get_array_module(gy)
        temp, alpha = self.temperature, self.alpha
        # BEGIN SOLUTION
        g = (alpha * temp) * (xp.exp(self.log_q_t) - self.p)
        g += (1 - alpha) * xp.exp(self.log_q)
        g[self.rows, self.safe_y] -= 1 - alpha
        g *= (gy * self.weight)[:, None].astype(g.dtype)
        # END SOLUTION
        return (g,)


def _check(student_logits, teacher_logits, targets, temperature, alpha):
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be positive, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha (the weight of the teacher's term) must be in "
                         f"[0, 1], got {alpha!r}")
    s, t = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if s != t:
        raise ValueError(f"student logits {s} and teacher logits {t} differ: distillation needs "
                         "the same positions and the same vocabulary (one tokenizer)")
    if tuple(targets.shape) != s[:-1]:
        raise ValueError(f"distillation targets of shape {tuple(targets.shape)} do not fit "
                         f"logits {s} (the targets need shape {s[:-1]})")
    if backend.is_float(targets.dtype):
        raise TypeError(f"distillation targets must be integer token ids, got {targets.dtype}")


def distillation_loss(student_logits, teacher_logits, targets, temperature: float = 2.0,
                      alpha: float = 0.5, ignore_index: int = -100) -> Tensor:
    """The distillation loss of ``student_logits`` (..., V), a Tensor, against the constant
    ``teacher_logits`` (..., V) (array or Tensor: no gradient reaches it) and integer
    ``targets`` (...). ``alpha`` weighs the teacher's term, 1 - alpha the data's; see
    ``DistillationLoss``. alpha = 0 is plain cross-entropy."""
    s = student_logits if isinstance(student_logits, Tensor) else Tensor(student_logits)
    dev = s.device
    t = teacher_logits.data if isinstance(teacher_logits, Tensor) else \
        backend.as_array(teacher_logits, device=dev)
    y = targets.data if isinstance(targets, Tensor) else backend.as_array(targets, device=dev)
    _check(s, t, y, temperature, alpha)
    v = s.shape[-1]
    fn = DistillationLoss(t.reshape(-1, v).astype(s.dtype, copy=False), y.reshape(-1),
                          float(temperature), float(alpha), ignore_index)
    return fn(s.reshape(-1, v))


def student_loss(student, teacher, idx, targets, temperature: float = 2.0,
                 alpha: float = 0.5) -> Tensor:
    """The loss of one training step of ``student`` against a frozen ``teacher``.

    Both are language models mapping ids (B, T) to logits (B, T, V). The teacher's logits are
    computed under ``no_grad`` (no graph is recorded for the teacher, and no gradient could
    reach its weights); the student's with the graph, so ``loss.backward()`` trains the student
    alone. Putting the teacher in eval mode (no dropout) is the caller's job, once.
    """
    # BEGIN SOLUTION
    with no_grad():
        teacher_logits = teacher(idx)
    logits = student(idx)
    return distillation_loss(logits, teacher_logits, targets, temperature, alpha)
    # END SOLUTION
