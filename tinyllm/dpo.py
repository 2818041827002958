"""Direct preference optimisation (DPO; Rafailov et al. 2023): the loss, as one Function.

RLHF (Ouyang et al. 2022) fits a reward model r(x, y) to human preferences and then tunes the
policy pi to maximise E[r(x, y)] - beta KL(pi || pi_ref), the KL term keeping it near the
reference model pi_ref (the fine-tuned model it starts from). That objective has a closed-form
optimum, pi*(y | x) = pi_ref(y | x) exp(r(x, y) / beta) / Z(x), so the reward a policy implies is

    r(x, y) = beta log(pi(y | x) / pi_ref(y | x)) + beta log Z(x).

Put that into the Bradley-Terry model of a preference, P(y_w > y_l) = sigmoid(r_w - r_l): the
partition function Z(x) cancels, and the preference data's negative log-likelihood is a loss on
the policy alone, no reward model and no sampling while training:

    z = beta [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]
    L = mean over pairs of -log sigmoid(z) = mean softplus(-z)

with y_w the chosen and y_l the rejected response, each log-probability the sum over the
response's tokens (``sequence_logprobs``). The gradient,

    dL/d log pi(y_w) = -beta sigmoid(-z) / N,      dL/d log pi(y_l) = +beta sigmoid(-z) / N,

raises the chosen response and lowers the rejected one, weighted by how wrong the implied
reward's order still is (sigmoid(-z) -> 0 once the pair is ranked right by a wide margin). The
reference log-probabilities are constants: the reference model is frozen, no gradient reaches it.

Exercise 20.3 is ``DPOLoss.forward`` and ``DPOLoss.backward``.
"""

from __future__ import annotations

from tinyllm import functional as F
from tinyllm.autograd import Function
from tinyllm.backend import get_array_module
from tinyllm.tensor import Tensor

__all__ = ["DPOLoss", "dpo_loss", "dpo_rewards", "sequence_logprobs"]


def _softplus_and_sigmoid(z):
    """(softplus(-z), sigmoid(-z)) computed without overflow: softplus(-z) = log(1 + e^-z)."""
    xp = get_array_module(z)
    e = xp.exp(-xp.abs(z))  # in (0, 1]
    softplus = xp.maximum(-z, 0) + xp.log1p(e)
    sig = xp.where(z >= 0, e / (1 + e), 1 / (1 + e))
    return softplus, sig


class DPOLoss(Function):
    """mean(softplus(-beta ((pc - rc) - (pr - rr)))) over N pairs; inputs (N,) each.

    ``pc``, ``pr``: the policy's log-probabilities of the chosen and rejected responses;
    ``rc``, ``rr``: the reference model's. Only the policy's receive a gradient.
    """

    def __init__(self, beta: float = 0.1):
        if not (isinstance(beta, (int, float)) and beta > 0):
            raise ValueError(f"DPO beta must be a positive number, got {beta!r}")
        self.beta = float(beta)

    def forward(self, pc, pr, rc, rr):
        n = pc.shape[0]
        # BEGIN SOLUTION
        z = self.beta * ((pc - rc) - (pr - rr))
        losses, self.sig = _softplus_and_sigmoid(z)
        self.n = n
        return (losses.sum() / n).astype(pc.dtype)
        # END SOLUTION

    def backward(self, gy):
        # BEGIN SOLUTION
        g = (gy * self.beta / self.n) * self.sig
        return -g, g, None, None  # the reference model's log-probabilities are constants
        # END SOLUTION


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1):
    """The DPO loss (a scalar Tensor) of N preference pairs, from four (N,) log-probabilities:
    the policy's of the chosen and rejected responses (Tensors in the graph) and the frozen
    reference model's (arrays or Tensors; their gradient is stopped)."""
    shapes = [tuple(getattr(a, "shape", ())) for a in
              (policy_chosen, policy_rejected, ref_chosen, ref_rejected)]
    if len(set(shapes)) != 1 or len(shapes[0]) != 1 or shapes[0][0] == 0:
        raise ValueError(f"dpo_loss takes four log-probability vectors of one shape (N,), N >= 1 "
                         f"(policy chosen, policy rejected, reference chosen, reference "
                         f"rejected), got shapes {shapes}")
    refs = [r.detach() if isinstance(r, Tensor) else r for r in (ref_chosen, ref_rejected)]
    return DPOLoss(beta)(policy_chosen, policy_rejected, *refs)


def dpo_rewards(policy_logps, ref_logps, beta: float = 0.1):
    """The implied rewards beta (log pi(y) - log pi_ref(y)) (up to beta log Z), a host array."""
    p = policy_logps.numpy() if isinstance(policy_logps, Tensor) else policy_logps
    r = ref_logps.numpy() if isinstance(ref_logps, Tensor) else ref_logps
    return beta * (p - r)


def sequence_logprobs(logits, labels, ignore_index: int = -100):
    """Sum over t of log softmax(logits[:, t])[labels[:, t]], skipping ``ignore_index``:
    logits (N, T, V), labels (N, T) -> (N,), the log-probability of each row's labelled tokens
    (a response, when the labels are the chat format's loss mask)."""
    per_token = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    return -per_token.sum(axis=-1)
