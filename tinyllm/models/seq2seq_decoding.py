"""Decoding for the encoder-decoder Transformer: greedy, sampling and beam search, with a
key/value cache.

The source is encoded once; the decoder then runs one position per step. With ``use_cache`` it
feeds only the newest token and keeps the earlier positions' self-attention keys and values (and
the encoder output's cross-attention keys and values) in a ``Seq2SeqCache``; without it, it
re-runs the whole prefix. Both give the same tokens.

``pad`` and ``bos`` are never generated. Outputs are NumPy int64 arrays (B, L): the generated ids
without ``bos``, each row ending with ``eos`` (unless it ran out of steps) and padded after it.

Beam search follows Hugging Face's ``BeamSearchScorer``: each step keeps the ``num_beams`` best
running hypotheses out of the ``2 * num_beams`` best continuations; a continuation by ``eos``
among the top ``num_beams`` becomes a finished hypothesis scored
``sum of log-probabilities / length ** length_penalty`` (length = generated tokens, eos
included); a source is done when it has ``num_beams`` finished hypotheses none of which the best
running one (scored the same way at the current length) could beat.
"""

from __future__ import annotations

import contextlib

from tinyllm import backend
from tinyllm.autograd import no_grad
from tinyllm.backend import np
from tinyllm.models.generation import check_sampling_args, sample_next
from tinyllm.models.transformer import _as_src_mask, _ids
from tinyllm.tensor import as_tensor


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            yield
    finally:
        model.train(was_training)


def _prepare(model, src, src_mask, max_new_tokens):
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if max_new_tokens > model.config.max_len:
        raise ValueError(f"max_new_tokens={max_new_tokens} exceeds the model's max_len="
                         f"{model.config.max_len} positions")
    src = _ids(src, model.device)
    if src_mask is None:
        src_mask = (src != model.config.pad_id)[:, None, None, :]
    return src, _as_src_mask(src_mask, model.device)


def _next_logits(model, tokens, memory, src_mask, cache):
    """Float64 host logits (N, V) of the next token, ``pad`` and ``bos`` ruled out."""
    cfg = model.config
    inp = tokens[:, -1:] if cache is not None else tokens
    logits = model.decode(inp, memory, src_mask, cache=cache)[:, -1].numpy().astype(np.float64)
    logits[:, [cfg.pad_id, cfg.bos_id]] = -np.inf
    return logits


def sample_decode(model, src, max_new_tokens: int, use_cache: bool = True, src_mask=None,
                  do_sample: bool = False, temperature: float = 1.0, top_k=None, top_p=None,
                  seed=None):
    """The most likely next token at every step (or, with ``do_sample``, one drawn from
    softmax(logits / temperature) after top-k and top-p filtering, as ``GPT.generate`` does),
    until ``eos`` in every row or ``max_new_tokens``. Returns NumPy int64 (B, L)."""
    cfg = model.config
    if do_sample:
        top_k = check_sampling_args(temperature, top_k, top_p)
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
    with _eval_mode(model):
        src, src_mask = _prepare(model, src, src_mask, max_new_tokens)
        memory = model.encode(src, src_mask)
        b = src.shape[0]
        tokens = np.full((b, 1), cfg.bos_id, dtype=np.int64)
        done = np.zeros(b, dtype=bool)
        cache = model.new_cache(max_new_tokens) if use_cache else None
        for _ in range(max_new_tokens):
            logits = _next_logits(model, tokens, memory, src_mask, cache)
            nxt = (sample_next(logits, temperature, top_k, top_p, rng) if do_sample
                   else logits.argmax(axis=-1))
            nxt[done] = cfg.pad_id
            tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
            done |= nxt == cfg.eos_id
            if done.all():
                break
    return tokens[:, 1:]


def _log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class _Hypotheses:
    """The best ``k`` finished hypotheses of one source, as (score, token list)."""

    def __init__(self, k: int, length_penalty: float):
        self.k, self.lp, self.items = k, length_penalty, []

    def add(self, tokens, sum_logprobs: float) -> None:
        score = sum_logprobs / len(tokens) ** self.lp
        if len(self.items) < self.k or score > self.worst:
            self.items.append((score, list(tokens)))
            self.items.sort(key=lambda s: -s[0])
            del self.items[self.k:]

    @property
    def worst(self) -> float:
        return self.items[-1][0] if self.items else -np.inf

    def is_done(self, best_running_sum: float, cur_len: int) -> bool:
        if len(self.items) < self.k:
            return False
        return self.worst >= best_running_sum / cur_len ** self.lp

    def best(self):
        return self.items[0][1] if self.items else []


def beam_search(model, src, max_new_tokens: int, num_beams: int = 4, length_penalty: float = 1.0,
                use_cache: bool = True, src_mask=None):
    """Beam search (Hugging Face's scoring, ``early_stopping=False``). Returns NumPy int64 (B, L),
    the best finished hypothesis of each source."""
    cfg = model.config
    k = num_beams
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    with _eval_mode(model):
        src, src_mask = _prepare(model, src, src_mask, max_new_tokens)
        b, v = src.shape[0], cfg.tgt_vocab_size
        memory = model.encode(src, src_mask)
        rows = np.repeat(np.arange(b), k)  # beam j of source i is row i * k + j
        rows = backend.to_device(rows, model.device)  # host ids, device rows
        memory = as_tensor(memory.data[rows])
        src_mask = src_mask[rows]
        tokens = np.full((b * k, 1), cfg.bos_id, dtype=np.int64)
        scores = np.zeros((b, k))
        scores[:, 1:] = -np.inf  # all beams start equal: expand only the first
        hyps = [_Hypotheses(k, length_penalty) for _ in range(b)]
        done = np.zeros(b, dtype=bool)
        cache = model.new_cache(max_new_tokens) if use_cache else None
        cur_len = 0
        for step in range(max_new_tokens):
            cur_len = step + 1  # generated tokens, counting the one chosen now
            logp = _log_softmax(_next_logits(model, tokens, memory, src_mask, cache))
            cand = (scores[:, :, None] + logp.reshape(b, k, v)).reshape(b, k * v)
            order = np.argsort(-cand, axis=1, kind="stable")[:, :2 * k]
            next_scores = np.zeros((b, k))
            next_tok = np.full((b, k), cfg.pad_id, dtype=np.int64)
            next_beam = np.tile(np.arange(k), (b, 1))
            for i in range(b):
                if done[i]:
                    continue  # finished sources keep padding their beams
                n = 0
                for rank, idx in enumerate(order[i]):
                    beam, tok = divmod(int(idx), v)
                    s = cand[i, idx]
                    if s == -np.inf:
                        break
                    if tok == cfg.eos_id:
                        if rank < k:
                            hyps[i].add([*tokens[i * k + beam, 1:], tok], s)
                        continue
                    next_scores[i, n], next_tok[i, n], next_beam[i, n] = s, tok, beam
                    n += 1
                    if n == k:
                        break
                next_scores[i, n:] = -np.inf  # fewer live continuations than beams
                done[i] = hyps[i].is_done(next_scores[i].max(), cur_len)
            index = (np.arange(b)[:, None] * k + next_beam).reshape(-1)
            tokens = np.concatenate([tokens[index], next_tok.reshape(-1, 1)], axis=1)
            scores = next_scores
            if cache is not None:
                cache.reorder(backend.to_device(index, model.device))
            if done.all():
                break
        for i in np.flatnonzero(~done):  # out of steps: the running beams compete too
            for j in range(k):
                if scores[i, j] > -np.inf:
                    hyps[i].add(tokens[i * k + j, 1:], scores[i, j])
    best = [hyps[i].best() for i in range(b)]
    out = np.full((b, max(len(h) for h in best)), cfg.pad_id, dtype=np.int64)
    for i, h in enumerate(best):
        out[i, :len(h)] = h
    return out
