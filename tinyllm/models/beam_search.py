"""Beam search over the model driver, as ``transformers`` (>= 4.50) does it.

``generate(..., num_beams=k)`` calls ``beam_search``: each prompt keeps the k best partial
sequences by their sum of log-probabilities; a finished hypothesis is ranked by that sum divided by
(generated length) ** ``length_penalty`` (the prompt does not count). The whole batch of prompts
moves in one array step: running beams (B, k, T), the finished list (B, k, L).
"""

from __future__ import annotations

from tinyllm.backend import np
from tinyllm.models.model_driver import ModelDriver, log_softmax, repeat_rows

__all__ = ["beam_search"]


def beam_search(model, ids, max_new_tokens: int, num_beams: int, num_return_sequences: int = 1,
                length_penalty: float = 1.0, early_stopping=False, eos=(), pad: int = 0,
                use_cache: bool = True, attention_mask=None, model_kwargs=None,
                suppress_tokens=(), check_tokens=None):
    """Beam search as in ``transformers`` (>= 4.50): returns (sequences, scores).

    sequences (B * num_return_sequences, T + n) int64, best first for each prompt; scores are
    the finished hypotheses' sum of log-probabilities / (generated length ** length_penalty).
    Each step takes the 2 * num_beams best continuations of all beams (so that num_beams stay
    alive even if some end in eos); those among the top num_beams that end in eos, or reach
    max_new_tokens, join the finished list (the num_beams best are kept); the best unfinished
    num_beams continue. ``early_stopping`` (False, True or "never") decides when to stop before
    max_new_tokens once num_beams hypotheses are finished. ``attention_mask``, ``model_kwargs``
    and ``suppress_tokens`` are ``generate``'s. Call it under ``no_grad``. (One step of the
    search is the loop body; cut in pieces, its state would pass through a dozen arguments.)
    """
    b, t0 = ids.shape
    k = num_beams
    eos = list(eos)
    keep = max(2, 1 + len(eos)) * k
    max_len = t0 + max_new_tokens
    running = np.repeat(ids, k, axis=0).reshape(b, k, t0)
    run_scores = np.zeros((b, k))
    run_scores[:, 1:] = -1e9  # all beams start equal: only the first one may expand at step 0
    # the finished list: sequences, scores, generated lengths, whether the slot holds one
    fin = (np.full((b, k, max_len), pad, dtype=np.int64), np.full((b, k), -1e9),
           np.zeros((b, k), dtype=np.int64), np.zeros((b, k), dtype=bool))
    may_improve = np.ones(b, dtype=bool)  # can a running beam still beat the finished ones?
    top_k_mask = np.arange(keep) < k
    dec = ModelDriver(model, use_cache, repeat_rows(attention_mask, k),
                   {n: repeat_rows(v, k) for n, v in (model_kwargs or {}).items()},
                   suppress_tokens, check_tokens)
    for step in range(max_new_tokens):
        cur = t0 + step  # length before this step's token
        flat = running.reshape(b * k, cur)
        logits = dec.start(flat) if step == 0 else dec.step(flat)
        v = logits.shape[-1]
        scores = (log_softmax(logits).reshape(b, k, v) + run_scores[:, :, None]).reshape(b, k * v)
        top = np.argsort(-scores, axis=-1, kind="stable")[:, :keep]
        top_scores = np.take_along_axis(scores, top, axis=-1)
        beam, token = top // v, top % v
        cand = np.concatenate([np.take_along_axis(running, beam[:, :, None], axis=1),
                               token[:, :, None]], axis=2)  # (b, keep, cur + 1)
        hits = np.isin(token, eos) | (cur + 1 >= max_len)
        # the best unfinished continuations run on
        alive_scores = top_scores - 1e9 * hits
        nxt = np.argsort(-alive_scores, axis=-1, kind="stable")[:, :k]
        running = np.take_along_axis(cand, nxt[:, :, None], axis=1)
        run_scores = np.take_along_axis(alive_scores, nxt, axis=-1)
        src_beam = np.take_along_axis(beam, nxt, axis=-1)
        # the finished ones among the top k join the finished list if they beat its worst
        norm = top_scores / float(cur + 1 - t0) ** length_penalty
        full = fin[3].all(axis=1) & (early_stopping is True)
        norm = norm - 1e9 * (full | ~may_improve)[:, None] - 1e9 * ~(hits & top_k_mask)
        fin = _merge_finished(fin, cand, norm, cur + 1 - t0, hits & top_k_mask, pad)
        dec.reorder((src_beam + k * np.arange(b)[:, None]).reshape(-1))
        # stop when no running beam can improve on a full finished list, or nothing can continue
        gen = max_new_tokens if (early_stopping == "never" and length_penalty > 0) else cur + 1 - t0
        best_running = run_scores[:, 0] / float(gen) ** length_penalty
        worst_fin = np.where(fin[3], fin[1].min(axis=1, keepdims=True), -1e9)
        may_improve &= (best_running[:, None] > worst_fin).any(axis=1)
        if not may_improve.any() or (early_stopping is True and fin[3].all()) or hits.all():
            break
    nrs = num_return_sequences
    out_len = t0 + int(fin[2][:, :nrs].max())
    return fin[0][:, :nrs, :out_len].reshape(b * nrs, out_len), fin[1][:, :nrs].reshape(b * nrs)


def _merge_finished(fin, cand, scores, length, done, pad):
    """The finished list ``fin`` (sequences (b, k, L), scores, lengths, done) and the candidates
    ``cand`` (b, keep, t) with their ``scores`` (-1e9 where they do not finish): the k best."""
    b, keep, t = cand.shape
    padded = np.full((b, keep, fin[0].shape[2]), pad, dtype=np.int64)
    padded[:, :, :t] = cand
    new = (padded, scores, np.full((b, keep), length), done)
    merged = [np.concatenate(pair, axis=1) for pair in zip(fin, new)]
    best = np.argsort(-merged[1], axis=-1, kind="stable")[:, :fin[1].shape[1]]
    return tuple(np.take_along_axis(m, best[:, :, None] if m.ndim == 3 else best, axis=1)
                 for m in merged)

