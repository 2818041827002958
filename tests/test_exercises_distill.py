"""Exercises 17.1-17.3 (lesson 17, knowledge distillation), against PyTorch's kl_div and
cross_entropy and against finite differences."""

import numpy as np
import pytest
from helpers import fd_grads

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
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (
            f"distillation loss (T={temperature:.3g}, alpha={alpha:.3g}) should be {want:.8f}, "
            f"got {got:.8f}: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * "
            "CE(s, y), averaged over rows whose target is not -100")


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
    assert soft == pytest.approx(temp ** 2 * kl, rel=1e-9), (
        f"alpha=1: T^2 KL(p_teacher || q_student) = {temp ** 2 * kl:.6f}, got {soft:.6f}"
        f" (without T^2: {kl:.6f}; KL the other way round: "
        f"{temp ** 2 * (np.exp(lq) * (lq - lp)).sum(-1).mean():.6f})")
    assert hard == pytest.approx(ce, rel=1e-9), (
        f"alpha=0: plain cross-entropy at T=1, {ce:.6f}, got {hard:.6f}")


# ----------------------------------------------------------------------------- 17.2
@pytest.mark.exercise("17.2")
def test_17_2_gradient_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for _ in range(8):
        s, t, y, temperature, alpha = _case(rng)
        x = tl.tensor(s, requires_grad=True)
        distillation_loss(x, t, y, temperature, alpha).backward()
        ts = torch.tensor(s, requires_grad=True)
        _torch_loss(torch, ts, t, y, temperature, alpha).backward()
        want = ts.grad.numpy()
        assert x.grad is not None, "the student's logits got no gradient"
        assert np.allclose(x.grad, want, atol=1e-10), (
            f"d loss / d student logits (T={temperature:.3g}, alpha={alpha:.3g}):\nexpected\n"
            f"{want}\ngot\n{x.grad}\n(soft part: alpha * T * (softmax(s/T) - softmax(t/T)); "
            "hard part: (1 - alpha) (softmax(s) - onehot(y)); zero on ignored rows; / count)")


@pytest.mark.exercise("17.2")
def test_17_2_gradient_matches_finite_differences(rng):
    s, t, y, temperature, alpha = _case(rng)
    x = tl.tensor(s, requires_grad=True)
    distillation_loss(x, t, y, temperature, alpha).backward()
    (want,) = fd_grads(lambda a: distillation_loss(a, t, y, temperature, alpha), [s], 1.0)
    assert np.allclose(x.grad, want, atol=1e-6), (
        f"gradient against central differences (T={temperature:.3g}, alpha={alpha:.3g}):\n"
        f"expected\n{want}\ngot\n{x.grad}")


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
    assert spy.grad_mode == [False], (
        f"the teacher was called {len(spy.grad_mode)} time(s), with gradients enabled "
        f"{spy.grad_mode}: call it once, under tl.no_grad() (a frozen teacher records no graph)")
    with tl.no_grad():
        s_logits = student(idx).numpy().reshape(-1, v).astype(np.float64)
        t_logits = teacher(idx).numpy().reshape(-1, v).astype(np.float64)
    want = _torch_loss(torch, torch.tensor(s_logits), t_logits, tgt.reshape(-1), temperature,
                       alpha).item()
    assert loss.item() == pytest.approx(want, rel=1e-4), (
        f"the student's loss should be the distillation loss of its logits against the "
        f"teacher's ({want:.6f}), got {loss.item():.6f} (are the student and teacher swapped?)")

    loss.backward()
    assert all(p.grad is None for p in teacher.parameters()), "the teacher's weights got gradients"
    grads = {n: p.grad.copy() for n, p in student.named_parameters()}
    for p in student.parameters():
        p.grad = None
    distillation_loss(student(idx), t_logits.astype(np.float32).reshape(idx.shape + (v,)), tgt,
                      temperature, alpha).backward()
    for n, p in student.named_parameters():
        assert grads[n] is not None and np.allclose(grads[n], p.grad, atol=1e-6), (
            f"the student's gradient of {n} differs from that of the distillation loss")
