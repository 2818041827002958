"""Grading tests of lesson 17: 17.1 the distillation loss, 17.2 its backward, 17.3 the student's
loss against a frozen teacher.

Checked against PyTorch's ``kl_div``/``cross_entropy`` composition, a hand-computed example that
tells the T^2 factor and the direction of the KL apart, and central differences, on fresh cases
from the seeded ``rng`` fixture (replay a failure with TINYLLM_TEST_SEED=<seed>). No test needs a
later exercise.
"""

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail, fd_grads

import tinyllm as tl
from tinyllm.autograd import is_grad_enabled
from tinyllm.distill import distillation_loss, student_loss
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.nn.module import Module


def _case(rng, ignore=True):
    n, v = int(rng.integers(2, 9)), int(rng.integers(2, 12))
    s = rng.standard_normal((n, v)) * rng.uniform(0.5, 3)
    t = rng.standard_normal((n, v)) * rng.uniform(0.5, 3)
    y = rng.integers(0, v, size=n)
    if ignore and n > 2:
        y[rng.choice(n, size=int(rng.integers(1, n - 1)), replace=False)] = -100
    temperature = float(rng.choice([1.0, 2.0, rng.uniform(0.5, 6)]))
    alpha = float(rng.choice([0.0, 1.0, rng.uniform(0.05, 0.95)]))
    return s, t, y, temperature, alpha


def _torch_loss(torch, s, t, y, temperature, alpha):
    """alpha T^2 KL(p_teacher || q_student) + (1 - alpha) CE, mean over counted rows."""
    tf = torch.nn.functional
    keep = torch.tensor(y != -100)
    log_q = tf.log_softmax(s[keep] / temperature, dim=-1)
    log_p = tf.log_softmax(torch.tensor(t)[keep] / temperature, dim=-1)
    kl = tf.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    ce = tf.cross_entropy(s, torch.tensor(y), ignore_index=-100)
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


# ----------------------------------------------------------------------------- 17.1
@pytest.mark.exercise("17.1")
def test_17_1_loss_matches_torch_kl_div_and_cross_entropy(rng):
    torch = pytest.importorskip("torch")
    for _ in range(8):
        s, t, y, temperature, alpha = _case(rng)
        got = distillation_loss(tl.tensor(s), t, y, temperature, alpha).item()
        want = _torch_loss(torch, torch.tensor(s), t, y, temperature, alpha).item()
        assert_close(f"distillation loss of logits {s.shape} (T={temperature:.3g}, "
                     f"alpha={alpha:.3g}): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + "
                     "(1 - alpha) * CE(s, y), averaged over rows whose target is not -100",
                     got, want, rng, atol=1e-9, rtol=1e-9)


@pytest.mark.exercise("17.1")
def test_17_1_the_terms_separately():
    """alpha=1 is the soft term alone (T^2 and the direction of KL), alpha=0 plain CE."""
    s = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    t = np.array([[0.0, 1.0, 0.0], [1.0, -2.0, 0.0]])
    y = np.array([1, 2])
    temp = 3.0

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lp, lq = log_softmax(t / temp), log_softmax(s / temp)
    kl = (np.exp(lp) * (lp - lq)).sum(-1).mean()
    ce = -log_softmax(s)[[0, 1], y].mean()
    soft = distillation_loss(tl.tensor(s), t, y, temp, alpha=1.0).item()
    hard = distillation_loss(tl.tensor(s), t, y, temp, alpha=0.0).item()
    reverse = temp ** 2 * (np.exp(lq) * (lq - lp)).sum(-1).mean()
    assert_close(f"alpha=1: T^2 KL(p_teacher || q_student) (without T^2 it would be {kl:.6f}; "
                 f"KL the other way round {reverse:.6f})", soft, temp ** 2 * kl, rtol=1e-9)
    assert_close("alpha=0: plain cross-entropy of the student at T=1", hard, ce, rtol=1e-9)


# ----------------------------------------------------------------------------- 17.2
@pytest.mark.exercise("17.2")
def test_17_2_gradient_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for _ in range(8):
        s, t, y, temperature, alpha = _case(rng)
        scale = float(rng.choice([1.0, rng.uniform(-3, 3)]))  # an upstream gradient, not 1
        x = tl.tensor(s, requires_grad=True)
        (distillation_loss(x, t, y, temperature, alpha) * scale).backward()
        ts = torch.tensor(s, requires_grad=True)
        (_torch_loss(torch, ts, t, y, temperature, alpha) * scale).backward()
        assert_close(f"d ({scale:.3g} loss) / d student logits {s.shape} (T={temperature:.3g}, "
                     f"alpha={alpha:.3g}; times the upstream gradient; soft part "
                     "alpha * T * (softmax(s/T) - softmax(t/T)), "
                     "hard part (1 - alpha) (softmax(s) - onehot(y)), zero on ignored rows, "
                     "/ count)", x.grad, ts.grad.numpy(), rng, atol=1e-10, rtol=1e-7)


@pytest.mark.exercise("17.2")
def test_17_2_gradient_matches_finite_differences(rng):
    s, t, y, temperature, alpha = _case(rng)
    x = tl.tensor(s, requires_grad=True)
    distillation_loss(x, t, y, temperature, alpha).backward()
    (want,) = fd_grads(lambda a: distillation_loss(a, t, y, temperature, alpha), [s], 1.0)
    assert_close(f"d loss / d student logits against central differences (T={temperature:.3g}, "
                 f"alpha={alpha:.3g})", x.grad, want, rng, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- 17.3
class Spy(Module):
    """A frozen teacher that records whether gradients were enabled when it was called."""

    def __init__(self, model):
        super().__init__()
        self.model, self.grad_mode = model, []

    def forward(self, idx):
        self.grad_mode.append(is_grad_enabled())
        return self.model(idx)


@pytest.mark.exercise("17.3")
def test_17_3_student_loss_against_a_frozen_teacher(rng):
    torch = pytest.importorskip("torch")
    v, t = int(rng.integers(5, 12)), int(rng.integers(3, 9))
    tl.manual_seed(int(rng.integers(1 << 30)))
    teacher = GPT(GPTConfig(vocab_size=v, block_size=t, n_layer=2, n_head=2, n_embd=16))
    student = GPT(GPTConfig(vocab_size=v, block_size=t, n_layer=1, n_head=2, n_embd=8))
    for p in teacher.parameters():
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.3
    teacher.eval()
    spy = Spy(teacher)
    idx = rng.integers(0, v, size=(int(rng.integers(1, 4)), t))
    tgt = rng.integers(0, v, size=idx.shape)
    temperature, alpha = float(rng.uniform(1, 4)), float(rng.uniform(0.1, 0.9))

    loss = student_loss(student, spy, idx, tgt, temperature, alpha)
    assert_equal("whether gradients were enabled at each call of the teacher (call it once, "
                 "under tl.no_grad(): a frozen teacher records no graph)", spy.grad_mode,
                 [False], rng)
    with tl.no_grad():
        s_logits = student(idx).numpy().reshape(-1, v).astype(np.float64)
        t_logits = teacher(idx).numpy().reshape(-1, v).astype(np.float64)
    want = _torch_loss(torch, torch.tensor(s_logits), t_logits, tgt.reshape(-1), temperature,
                       alpha).item()
    assert_close("the student's loss: the distillation loss of its logits against the "
                 "teacher's (are the student and teacher swapped?)", loss.item(), want, rng,
                 atol=1e-6, rtol=1e-4)

    loss.backward()
    got_teacher = [n for n, p in teacher.named_parameters() if p.grad is not None]
    if got_teacher:
        fail("the frozen teacher", f"its weights got gradients: {got_teacher}", rng)
    grads = {n: p.grad.copy() if p.grad is not None else None
             for n, p in student.named_parameters()}
    for p in student.parameters():
        p.grad = None
    distillation_loss(student(idx), t_logits.astype(np.float32).reshape(idx.shape + (v,)), tgt,
                      temperature, alpha).backward()
    for n, p in student.named_parameters():
        assert_close(f"the student's gradient of {n} (that of the distillation loss)", grads[n],
                     p.grad, rng, atol=1e-6, rtol=1e-4)
