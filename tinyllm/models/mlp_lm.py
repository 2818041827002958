"""The MLP language model of Bengio et al. (2003), "A Neural Probabilistic Language Model".

The previous ``context`` characters are looked up in an embedding table (each a vector of size
``n_embd``), the vectors are concatenated into one (context * n_embd) vector, a hidden tanh
layer mixes them, and a final linear layer gives the logits of the next character:

    x = [C[w_{t-n}], ..., C[w_{t-1}]]      h = tanh(x W1^T + b1)      logits = h W2^T + b2

Unlike the bigram table, similar characters get similar embeddings and so share what they
learn, and the model sees more than one character of context without the table growing as V^n.
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm import functional as F
from tinyllm.models.bigram import prompt_array, prompt_ids, sample_loop
from tinyllm.nn import Embedding, Linear, Module


def context_windows(ids, context: int):
    """All (context, next) pairs of a 1-D id sequence: X (N, context), Y (N,) NumPy ints.

    X[i] = ids[i : i + context], Y[i] = ids[i + context], N = len(ids) - context.
    """
    xp = backend.np
    ids = xp.asarray(ids, dtype=xp.int64)
    if ids.ndim != 1 or len(ids) <= context:
        raise ValueError(f"context_windows needs a 1-D sequence longer than context={context}, "
                         f"got shape {ids.shape}")
    n = len(ids) - context
    x = xp.lib.stride_tricks.sliding_window_view(ids[:-1], context)[:n].copy()
    return x, ids[context:].copy()


class MLPLM(Module):
    """``MLPLM(vocab_size, context=8, n_embd=24, n_hidden=256)``.

    ``forward(context_ids, targets=None)``: context_ids (B, context) int -> logits (B, V) of the
    character that follows; with ``targets`` (B,) it returns ``(logits, loss)`` (mean
    cross-entropy, nats).
    """

    def __init__(self, vocab_size: int, context: int = 8, n_embd: int = 24, n_hidden: int = 256):
        super().__init__()
        if context < 1:
            raise ValueError(f"context must be at least 1 character, got {context}")
        self.vocab_size, self.context = vocab_size, context
        self.n_embd, self.n_hidden = n_embd, n_hidden
        self.emb = Embedding(vocab_size, n_embd, init_std=1.0)
        self.hidden = Linear(context * n_embd, n_hidden)
        self.out = Linear(n_hidden, vocab_size)
        # a near-uniform first guess: small output weights give logits close to zero
        self.out.weight.data *= 0.1
        self.out.bias.data *= 0.0

    def forward(self, context_ids, targets=None):
        shape = tuple(context_ids.shape)
        if len(shape) != 2 or shape[1] != self.context:
            raise ValueError(f"MLPLM(context={self.context}) expects ids of shape (B, "
                             f"{self.context}), got {shape}")
        b = shape[0]
        x = self.emb(context_ids).reshape(b, self.context * self.n_embd)  # concatenated
        h = F.tanh(self.hidden(x))
        logits = self.out(h)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, targets)

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, seed=None):
        """Extend ``idx`` (B, T) by ``max_new_tokens`` sampled ids -> NumPy ints (B, T + n).

        A prompt shorter than ``context`` is left-padded with its own first id.
        """
        xp = backend.np
        out = prompt_array(idx)
        t0 = out.shape[1]
        if t0 < self.context:
            pad = xp.repeat(out[:, :1], self.context - t0, axis=1)
            out = xp.concatenate([pad, out], axis=1)

        def next_logits(ids):  # the last `context` ids of each row
            return self(backend.as_array(ids[:, -self.context:], device=self.emb.weight.device)).data

        out = sample_loop(self, next_logits, out, max_new_tokens, temperature, seed)
        return out[:, max(self.context - t0, 0):]

    def sample(self, tokenizer, n_chars: int = 200, prompt: str | None = None, seed=None,
               temperature: float = 1.0) -> str:
        """Text: ``prompt`` followed by ``n_chars`` sampled characters, decoded by ``tokenizer``.

        Without a prompt the context is ``context`` newlines (which are not part of the text).
        ``seed`` makes the sample repeatable; ``temperature`` 0 is greedy.
        """
        ids = prompt_ids(tokenizer, prompt, default_len=self.context)
        out = self.generate([ids], n_chars, temperature=temperature, seed=seed)
        skip = len(ids) if not prompt else 0
        return tokenizer.decode(out[0, skip:].tolist())

    def extra_repr(self):
        return (f"vocab_size={self.vocab_size}, context={self.context}, n_embd={self.n_embd}, "
                f"n_hidden={self.n_hidden}")
