"""Text generation for decoder-only models: greedy, sampling (temperature, top-k, top-p), beam search.

    out = model.generate(idx, max_new_tokens=50)                             # greedy
    out = model.generate(idx, 50, do_sample=True, temperature=0.8, top_k=40, seed=0)
    out = model.generate(idx, 50, num_beams=4, num_return_sequences=2)       # beam search

``idx`` is a (B, T) integer array (or Tensor); the result is a NumPy int64 array that starts with
the prompt: (B * num_return_sequences, T + max_new_tokens), shorter only when every row has
produced ``eos_token_id`` (the rows that finish early are padded with ``pad_token_id``, by
default the eos id), as in Hugging Face ``transformers``.

The semantics follow ``transformers``' ``generate``: logits are warped in the order temperature,
top-k, top-p; beam search keeps the ``num_beams`` best partial sequences by their sum of
log-probabilities and ranks finished ones by that sum divided by (generated length) **
``length_penalty`` (the prompt does not count).

**The key/value cache** (``use_cache=True``): the prompt is run once, then each step feeds only
the new token, whose attention reads the earlier positions' keys and values from one ``KVCache``
per layer. Without it every step re-runs the whole sequence. Both give the same tokens. When the
sequence outgrows the model's ``block_size`` the context is cropped to the last ``block_size``
tokens (nanoGPT); a cache cannot drop its first position (every later key was computed with it
in view), so from that step on generation falls back to recomputing the cropped context.

**Streaming** (``streamer``): a callable that receives each step's new tokens, a NumPy int64
array (N,), as soon as they are chosen (a row that has finished receives ``pad_token_id``), so a
chat can print a reply while it is being written. Greedy decoding and sampling only.

**The model protocol** (``GenerationMixin`` or ``generate(model, ...)``): a ``Module`` with
``block_size`` (the longest context, or None), ``new_kv_caches()`` (a list of fresh caches, one
per layer) and ``next_token_logits(ids, kv_caches=None)`` -> (N, V) logits of the last position,
where ``ids`` (N, T) continue the positions already in ``kv_caches``.

Exercise 10.1 is ``top_p_filter``.
"""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm.autograd import no_grad
from tinyllm.backend import np
from tinyllm.tensor import Tensor

__all__ = ["GenerationMixin", "generate", "beam_search", "top_k_filter", "top_p_filter"]


# ---------------------------------------------------------------------------- logits filters
def top_k_filter(logits, k: int):
    """Keep the ``k`` largest logits of each row (ties with the k-th are kept), -inf elsewhere.

    logits (..., V) NumPy array -> a new array of the same shape. ``k >= V`` keeps everything.
    """
    if k >= logits.shape[-1]:
        return logits.copy()
    kth = np.partition(logits, -k, axis=-1)[..., -k:].min(axis=-1, keepdims=True)
    return np.where(logits < kth, -np.inf, logits)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_p_filter(logits, top_p: float):
    """Nucleus filtering: keep the smallest set of tokens whose probability sums to >= ``top_p``.

    logits (..., V) NumPy array -> a new array, -inf at the removed tokens. In each row the
    tokens are taken from the most probable down until their softmax probabilities reach
    ``top_p``; the token that crosses the threshold is kept, and so always at least one token
    (Hugging Face's ``TopPLogitsWarper`` semantics). Entries that are already -inf stay removed.
    """
    # BEGIN SOLUTION
    order = np.argsort(-logits, axis=-1, kind="stable")  # most probable first
    probs = _softmax(np.take_along_axis(logits, order, axis=-1))
    # the probability of each token together with all less probable ones; the tokens ranked
    # above it hold the rest, 1 - that, and once they hold >= top_p this token is not needed
    this_and_below = np.cumsum(probs[..., ::-1], axis=-1)[..., ::-1]
    remove_sorted = this_and_below <= 1 - top_p
    remove_sorted[..., 0] = False  # the most probable token always stays
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)  # back to vocabulary order
    return np.where(remove, -np.inf, logits)
    # END SOLUTION


def _log_softmax(x):
    s = x - x.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------- the model driver
class _Decoder:
    """Runs the model for generation: the prompt once, then one token per step (with a cache),
    or the whole (cropped) context every step (without)."""

    def __init__(self, model, use_cache: bool):
        self.model = model
        self.block = getattr(model, "block_size", None)
        self.use_cache = use_cache and hasattr(model, "new_kv_caches")
        self.caches = None
        self.cached = 0  # positions in the caches

    def _run(self, ids, caches=None):
        logits = self.model.next_token_logits(ids, kv_caches=caches)
        logits = logits.numpy() if isinstance(logits, Tensor) else backend.to_device(logits, "cpu")
        return np.asarray(logits, dtype=np.float64)

    def start(self, ids):
        """Logits (N, V) after the prompt ``ids`` (N, T)."""
        if self.use_cache and (self.block is None or ids.shape[1] <= self.block):
            self.caches = self.model.new_kv_caches()
            self.cached = ids.shape[1]
            return self._run(ids, self.caches)
        return self._run(self._crop(ids))

    def step(self, ids):
        """Logits (N, V) after ``ids`` (N, T + 1): the previous sequence plus one new token."""
        if self.caches is not None and (self.block is None or self.cached < self.block):
            self.cached += 1
            return self._run(ids[:, -1:], self.caches)
        self.caches = None  # full (or never used): recompute the cropped context from here on
        return self._run(self._crop(ids))

    def reorder(self, index):
        for c in self.caches or ():
            k = getattr(c, "k", None)  # the cache's arrays may live on the GPU
            c.reorder(backend.get_array_module(k).asarray(index) if k is not None else index)

    def _crop(self, ids):
        return ids if self.block is None else ids[:, -self.block:]


# ---------------------------------------------------------------------------- checks
def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"generate: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _as_ids(idx):
    ids = idx.numpy() if isinstance(idx, Tensor) else backend.to_device(idx, "cpu")
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
        raise ValueError(f"generate: idx must have shape (B, T) with B, T >= 1, got "
                         f"{tuple(ids.shape)} (add a batch axis with idx[None])")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"generate: idx must hold integer token ids, got dtype {ids.dtype}")
    return ids.astype(np.int64)


def _eos_list(eos_token_id):
    if eos_token_id is None:
        return []
    eos = [eos_token_id] if isinstance(eos_token_id, (int, np.integer)) else list(eos_token_id)
    for e in eos:
        _check_int("eos_token_id", e, 0)
    return [int(e) for e in eos]


# ---------------------------------------------------------------------------- generate
def generate(model, idx, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
             top_k=None, top_p=None, num_beams: int = 1, num_return_sequences: int = 1,
             eos_token_id=None, use_cache: bool = True, seed=None, pad_token_id=None,
             length_penalty: float = 1.0, early_stopping=False, streamer=None):
    """Continue each row of ``idx`` (B, T) by up to ``max_new_tokens`` tokens (see the module doc).

    ``do_sample`` draws from softmax(logits / temperature) after top-k and top-p filtering;
    otherwise greedy (``num_beams=1``) or beam search. ``seed`` makes sampling reproducible with
    its own generator; without it tinyllm's generator (``tl.manual_seed``) is used. ``streamer``
    is called with each step's new tokens (N,). Runs under ``no_grad`` in eval mode; every
    module's previous mode is restored afterwards.
    Returns a NumPy int64 array (B * num_return_sequences, T + new).
    """
    ids = _as_ids(idx)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 0)
    num_beams = _check_int("num_beams", num_beams, 1)
    nrs = _check_int("num_return_sequences", num_return_sequences, 1)
    if do_sample:
        top_k = check_sampling_args(temperature, top_k, top_p)
        if num_beams > 1:
            raise ValueError("generate: beam search with do_sample=True (beam sampling) is not "
                             "supported; use num_beams=1 to sample or do_sample=False for beams")
    elif num_beams == 1 and nrs > 1:
        raise ValueError(f"generate: greedy decoding gives one sequence per prompt, so "
                         f"num_return_sequences={nrs} needs do_sample=True or num_beams >= {nrs}")
    if num_beams > 1 and nrs > num_beams:
        raise ValueError(f"generate: num_return_sequences={nrs} cannot exceed num_beams={num_beams}"
                         " (beam search returns its best beams)")
    if streamer is not None and (num_beams > 1 or not callable(streamer)):
        raise ValueError("generate: streamer must be a callable, and streams greedy decoding or "
                         "sampling (beam search settles its tokens only at the end)")
    eos = _eos_list(eos_token_id)
    if pad_token_id is not None:
        pad_token_id = _check_int("pad_token_id", pad_token_id, 0)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad():
            if max_new_tokens == 0:
                return np.repeat(ids, nrs, axis=0)
            if num_beams > 1:
                # transformers fills finished beams with `pad_token_id or eos_token_id`: a pad id
                # of 0 counts as unset there, so beams are padded with eos; we do the same
                beam_pad = pad_token_id if pad_token_id else (eos[0] if eos else 0)
                return beam_search(model, ids, max_new_tokens, num_beams, nrs, length_penalty,
                                   early_stopping, eos, beam_pad, use_cache)[0]
            rng = np.random.default_rng(seed) if seed is not None else backend.rng()
            return _sample(model, np.repeat(ids, nrs, axis=0), max_new_tokens, do_sample,
                           temperature, top_k, top_p, eos, pad, use_cache, rng, streamer)
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


def check_sampling_args(temperature, top_k, top_p):
    """Validate the sampling options (the error names the bad one); returns top_k as an int."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"generate: temperature must be a positive number when sampling, got "
                         f"{temperature!r} (for the most likely token use do_sample=False)")
    if top_k is not None:
        top_k = _check_int("top_k", top_k, 1)
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p!r}")
    return top_k


def sample_next(logits, temperature: float, top_k, top_p, rng):
    """One token id per row of ``logits`` (N, V), drawn from softmax(logits / temperature)
    after top-k and top-p filtering, in transformers' order. Returns NumPy int (N,)."""
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    cdf = np.cumsum(_softmax(logits), axis=-1)
    u = rng.random(len(logits))[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1)  # inverse CDF


def _sample(model, ids, max_new_tokens, do_sample, temperature, top_k, top_p, eos, pad,
            use_cache, rng, streamer=None):
    """Greedy decoding or sampling, one token per step for every row."""
    dec = _Decoder(model, use_cache)
    finished = np.zeros(len(ids), dtype=bool)
    for step in range(max_new_tokens):
        logits = dec.start(ids) if step == 0 else dec.step(ids)
        if do_sample:
            nxt = sample_next(logits, temperature, top_k, top_p, rng)
        else:
            nxt = logits.argmax(axis=-1)
        if eos:
            nxt = np.where(finished, pad, nxt)
            finished |= np.isin(nxt, eos)
        ids = np.concatenate([ids, nxt[:, None].astype(np.int64)], axis=1)
        if streamer is not None:
            streamer(ids[:, -1].copy())
        if eos and finished.all():
            break
    return ids


def beam_search(model, ids, max_new_tokens: int, num_beams: int, num_return_sequences: int = 1,
                length_penalty: float = 1.0, early_stopping=False, eos=(), pad: int = 0,
                use_cache: bool = True):
    """Beam search as in ``transformers`` (>= 4.50): returns (sequences, scores).

    sequences (B * num_return_sequences, T + n) int64, best first for each prompt; scores are
    the finished hypotheses' sum of log-probabilities / (generated length ** length_penalty).
    Each step takes the 2 * num_beams best continuations of all beams (so that num_beams stay
    alive even if some end in eos); those among the top num_beams that end in eos, or reach
    max_new_tokens, join the finished list (the num_beams best are kept); the best unfinished
    num_beams continue. ``early_stopping`` (False, True or "never") decides when to stop before
    max_new_tokens once num_beams hypotheses are finished. Call it under ``no_grad``.
    """
    b, t0 = ids.shape
    k = num_beams
    eos = list(eos)
    keep = max(2, 1 + len(eos)) * k
    max_len = t0 + max_new_tokens
    running = np.repeat(ids, k, axis=0).reshape(b, k, t0)
    run_scores = np.zeros((b, k))
    run_scores[:, 1:] = -1e9  # all beams start equal: only the first one may expand at step 0
    fin_seqs = np.full((b, k, max_len), pad, dtype=np.int64)
    fin_scores = np.full((b, k), -1e9)
    fin_len = np.zeros((b, k), dtype=np.int64)  # generated tokens of each finished hypothesis
    fin_done = np.zeros((b, k), dtype=bool)
    may_improve = np.ones(b, dtype=bool)  # can a running beam still beat the finished ones?
    top_k_mask = np.arange(keep) < k
    dec = _Decoder(model, use_cache)
    for step in range(max_new_tokens):
        cur = t0 + step  # length before this step's token
        flat = running.reshape(b * k, cur)
        logits = dec.start(flat) if step == 0 else dec.step(flat)
        v = logits.shape[-1]
        scores = (_log_softmax(logits).reshape(b, k, v) + run_scores[:, :, None]).reshape(b, k * v)
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
        full = fin_done.all(axis=1) & (early_stopping is True)
        norm = norm - 1e9 * (full | ~may_improve)[:, None] - 1e9 * ~(hits & top_k_mask)
        padded = np.full((b, keep, max_len), pad, dtype=np.int64)
        padded[:, :, :cur + 1] = cand
        m_seqs = np.concatenate([fin_seqs, padded], axis=1)
        m_scores = np.concatenate([fin_scores, norm], axis=1)
        m_len = np.concatenate([fin_len, np.full((b, keep), cur + 1 - t0)], axis=1)
        m_done = np.concatenate([fin_done, hits & top_k_mask], axis=1)
        best = np.argsort(-m_scores, axis=-1, kind="stable")[:, :k]
        fin_seqs = np.take_along_axis(m_seqs, best[:, :, None], axis=1)
        fin_scores = np.take_along_axis(m_scores, best, axis=-1)
        fin_len = np.take_along_axis(m_len, best, axis=-1)
        fin_done = np.take_along_axis(m_done, best, axis=-1)
        dec.reorder((src_beam + k * np.arange(b)[:, None]).reshape(-1))
        # stop when no running beam can improve on a full finished list, or nothing can continue
        gen = max_new_tokens if (early_stopping == "never" and length_penalty > 0) else cur + 1 - t0
        best_running = run_scores[:, 0] / float(gen) ** length_penalty
        worst_fin = np.where(fin_done, fin_scores.min(axis=1, keepdims=True), -1e9)
        may_improve &= (best_running[:, None] > worst_fin).any(axis=1)
        if (not may_improve.any() or (early_stopping is True and fin_done.all())
                or hits.all()):
            break
    nrs = num_return_sequences
    out_len = t0 + int(fin_len[:, :nrs].max())
    return (fin_seqs[:, :nrs, :out_len].reshape(b * nrs, out_len),
            fin_scores[:, :nrs].reshape(b * nrs))


class GenerationMixin:
    """Adds ``generate`` to a decoder-only model that follows the protocol in the module doc."""

    def generate(self, idx, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, top_k=None, top_p=None, num_beams: int = 1,
                 num_return_sequences: int = 1, eos_token_id=None, use_cache: bool = True,
                 seed=None, pad_token_id=None, length_penalty: float = 1.0,
                 early_stopping=False, streamer=None):
        """See ``tinyllm.models.generation.generate``."""
        return generate(self, idx, max_new_tokens, do_sample=do_sample, temperature=temperature,
                        top_k=top_k, top_p=top_p, num_beams=num_beams,
                        num_return_sequences=num_return_sequences, eos_token_id=eos_token_id,
                        use_cache=use_cache, seed=seed, pad_token_id=pad_token_id,
                        length_penalty=length_penalty, early_stopping=early_stopping,
                        streamer=streamer)
