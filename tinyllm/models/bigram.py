"""The character bigram language model: the simplest LM there is.

The next character depends only on the current one, so the whole model is a (V, V) table of
logits: row ``a`` holds the (unnormalised) log-probabilities of every character that may follow
``a``. Stored as an ``Embedding(V, V)``, the lookup of ids (B, T) gives logits (B, T, V) directly.

Trained by gradient descent on the cross-entropy, the table converges to log of the bigram
counts' frequencies: the same model that counting pairs gives in closed form (the test checks it).
"""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.nn import Embedding, Module
from tinyllm.nn.inference import eval_mode
from tinyllm.tensor import Tensor


def sample_from_logits(logits, temperature: float, gen):
    """One id per row of ``logits`` (N, V) (a backend array), drawn with NumPy generator ``gen``.

    ``temperature`` < 1 sharpens the distribution, > 1 flattens it; 0 picks the argmax.
    """
    xp = backend.np
    z = backend.to_device(logits, "cpu").astype(xp.float64)
    if temperature == 0:
        return z.argmax(axis=-1)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    z = z / temperature
    z -= z.max(axis=-1, keepdims=True)
    p = xp.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    u = gen.random((p.shape[0], 1))
    ids = (p.cumsum(axis=-1) < u).sum(axis=-1)  # inverse-CDF sampling, one draw per row
    return xp.minimum(ids, p.shape[-1] - 1)


def prompt_array(idx):
    """A (B, T) int64 NumPy copy of a prompt (array or Tensor), T >= 1, or a clear error."""
    out = backend.np.array(idx.numpy() if isinstance(idx, Tensor) else idx, dtype="int64")
    if out.ndim != 2 or out.shape[1] == 0:
        raise ValueError(f"generate needs a prompt of ids (B, T) with T >= 1, got shape "
                         f"{tuple(out.shape)}")
    return out


def prompt_ids(tokenizer, prompt, default_len: int = 1):
    """Ids of ``prompt``; with no prompt, ``default_len`` newlines (or id 0 without a newline)."""
    if prompt is None or prompt == "":
        nl = tokenizer.token_to_id("\n")
        return [nl if nl is not None else 0] * default_len
    return list(tokenizer.encode(prompt))


def sample_loop(model, next_logits, out, max_new_tokens: int, temperature: float, seed=None):
    """Extend the NumPy prompt ``out`` (B, T) by ``max_new_tokens`` ids, each row's next id
    drawn by ``sample_from_logits`` from ``next_logits(out)`` (N, V); ``model`` runs in eval
    mode without gradients. ``seed``: a generator of its own (default: ``tl.manual_seed``'s)."""
    gen = backend.rng() if seed is None else backend.np.random.default_rng(seed)
    with eval_mode(model):
        for _ in range(max_new_tokens):
            nxt = sample_from_logits(next_logits(out), temperature, gen)
            out = backend.np.concatenate([out, nxt[:, None].astype("int64")], axis=1)
    return out


class BigramLM(Module):
    """``BigramLM(vocab_size)``: logits[b, t] = table[idx[b, t]].

    ``forward(idx, targets=None)``: idx (B, T) int -> logits (B, T, V); with ``targets`` (B, T)
    it returns ``(logits, loss)`` with the mean cross-entropy in nats.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.table = Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.table(idx)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, targets)

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, seed=None):
        """Extend ``idx`` (B, T) by ``max_new_tokens`` sampled ids -> NumPy ints (B, T + n)."""
        def next_logits(out):  # the table row of each row's last id
            return self.table.weight.data[backend.as_array(out[:, -1], device=self.table.weight.device)]

        return sample_loop(self, next_logits, prompt_array(idx), max_new_tokens, temperature, seed)

    def sample(self, tokenizer, n_chars: int = 200, prompt: str | None = None, seed=None,
               temperature: float = 1.0) -> str:
        """Text: ``prompt`` followed by ``n_chars`` sampled characters, decoded by ``tokenizer``.

        Without a prompt the text starts from a newline. ``seed`` makes the sample repeatable
        (default: tinyllm's generator, ``tl.manual_seed``); ``temperature`` 0 is greedy.
        """
        ids = prompt_ids(tokenizer, prompt)
        out = self.generate([ids], n_chars, temperature=temperature, seed=seed)
        return tokenizer.decode(out[0].tolist())

    def extra_repr(self):
        return f"vocab_size={self.vocab_size}"


def bigram_counts_loss(train_ids, eval_ids, vocab_size: int, smoothing: float = 0.0) -> float:
    """Cross-entropy (nats) on ``eval_ids`` of the counting bigram model fitted on ``train_ids``.

    P(b | a) = (count(a, b) + smoothing) / (count(a, .) + V smoothing): the closed-form maximum
    likelihood model that ``BigramLM`` approaches by gradient descent.
    """
    xp = backend.np
    tr = xp.asarray(train_ids, dtype=xp.int64)
    ev = xp.asarray(eval_ids, dtype=xp.int64)
    counts = xp.zeros((vocab_size, vocab_size), dtype=xp.float64)
    xp.add.at(counts, (tr[:-1], tr[1:]), 1.0)
    counts += smoothing
    rows = counts.sum(axis=1, keepdims=True)
    probs = counts / xp.where(rows == 0, 1.0, rows)
    p = probs[ev[:-1], ev[1:]]
    if (p == 0).any():
        return math.inf
    return float(-xp.log(p).mean())
