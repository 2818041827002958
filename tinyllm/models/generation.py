"""Text generation, one engine for every model: greedy, sampling (top-k, top-p), beam search.

    out = model.generate(idx, max_new_tokens=50)                             # greedy
    out = model.generate(idx, 50, do_sample=True, temperature=0.8, top_k=40, seed=0)
    out = model.generate(idx, 50, num_beams=4, num_return_sequences=2)       # beam search
    out = model.generate(idx, 50, attention_mask=mask)                       # a padded batch

``idx`` is a (B, T) integer array (or Tensor); the result is a NumPy int64 array that starts with
the prompt: (B * num_return_sequences, T + max_new_tokens), shorter only when every row has
produced ``eos_token_id`` (rows that finish early are padded with ``pad_token_id``, by default
the eos id). The semantics follow ``transformers``' ``generate``: logits are warped in the
order temperature, top-k, top-p; beam search keeps the ``num_beams`` best partial sequences by
their sum of log-probabilities and ranks finished ones by that sum divided by (generated
length) ** ``length_penalty`` (the prompt does not count).

**The key/value cache** (``use_cache=True``): the prompt is run once, then each step feeds only
the new token, whose attention reads the earlier positions' keys and values from one ``KVCache``
per layer. Without it every step re-runs the whole sequence. Both give the same tokens. When the
sequence outgrows the model's ``block_size`` the context is cropped to the last ``block_size``
tokens (nanoGPT); a cache cannot drop its first position (every later key was computed with it
in view), so from that step on generation falls back to recomputing the cropped context.

**A padded batch** (``attention_mask`` (B, T): 1 at real tokens, 0 at padding, e.g. prompts of
different lengths padded on the left): the model hides the padding from attention and numbers
each row's positions from its own first real token, so each row generates what it would alone.
The generated tokens count as real; a cropped context crops the mask with it.

**Streaming** (``streamer``): a callable that receives each step's new tokens, a NumPy int64
array (N,), as soon as they are chosen (a row that has finished receives ``pad_token_id``), so a
chat can print a reply while it is being written. Greedy decoding and sampling only.

**The model protocol** (``GenerationMixin`` or ``generate(model, ...)``): a ``Module`` with
``block_size`` (the longest context, or None), ``new_kv_caches()`` (fresh caches, one per
layer, each with ``reorder(index)``) and ``next_token_logits(ids, kv_caches=None, **inputs)``
-> (N, V) logits of the last position, where ``ids`` (N, T) continue the positions already in
``kv_caches``. ``inputs`` are ``attention_mask`` (when one is given) and ``model_kwargs``:
per-row inputs that stay fixed while decoding (the encoder-decoder's ``memory`` and
``src_mask``), whose rows the engine repeats with the prompt's for beams and return sequences.

Logits that hold NaN or +inf (or a row of only -inf) stop generation with an error: no token
can be chosen from them. A -inf logit alone is a token ruled out (probability 0).

Beam search lives in ``tinyllm.models.beam_search`` and the model driver that every search
reads its logits from in ``tinyllm.models.model_driver``. Exercise 10.1 is ``top_p_filter``.
"""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm.backend import np
from tinyllm.ids import as_ids, as_mask
from tinyllm.models.beam_search import beam_search
from tinyllm.models.model_driver import ModelDriver, log_softmax, repeat_rows
from tinyllm.nn.inference import eval_mode

__all__ = ["GenerationMixin", "generate", "beam_search", "top_k_filter", "top_p_filter",
           "sample_next", "check_sampling_args"]


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
    return np.exp(log_softmax(x))  # one NumPy log-softmax serves both


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


# ---------------------------------------------------------------------------- checks
def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"generate: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _token_list(name, value):
    """None, one token id or several -> a list of ints >= 0."""
    values = [] if value is None else [value] if isinstance(value, (int, np.integer)) else value
    return [_check_int(name, v, 0) for v in values]


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


def _check_search(do_sample, num_beams, nrs):
    num_beams = _check_int("num_beams", num_beams, 1)
    nrs = _check_int("num_return_sequences", nrs, 1)
    if do_sample and num_beams > 1:
        raise ValueError("generate: beam search with do_sample=True (beam sampling) is not "
                         "supported; use num_beams=1 to sample or do_sample=False for beams")
    if not do_sample and num_beams == 1 and nrs > 1:
        raise ValueError(f"generate: greedy decoding gives one sequence per prompt, so "
                         f"num_return_sequences={nrs} needs do_sample=True or num_beams >= {nrs}")
    if num_beams > 1 and nrs > num_beams:
        raise ValueError(f"generate: num_return_sequences={nrs} cannot exceed num_beams={num_beams}"
                         " (beam search returns its best beams)")
    return num_beams, nrs


def _prompt(idx, attention_mask):
    """Host int64 ids (B, T) and, with a mask, host booleans (B, T) with a real token per row."""
    ids = backend.to_device(as_ids(idx, "idx", ndim=2), "cpu").astype(np.int64)
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"generate: idx must have shape (B, T) with B, T >= 1, got "
                         f"{tuple(ids.shape)}")
    if attention_mask is None:
        return ids, None
    mask = backend.to_device(as_mask(attention_mask, "attention_mask", ids.shape), "cpu")
    empty = np.flatnonzero(~mask.any(axis=1)).tolist()
    if empty:
        raise ValueError(f"generate: attention_mask rows {empty} have no real token (all 0); "
                         "each prompt needs at least one")
    return ids, mask


# ---------------------------------------------------------------------------- generate
def generate(model, idx, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
             top_k=None, top_p=None, num_beams: int = 1, num_return_sequences: int = 1,
             eos_token_id=None, use_cache: bool = True, seed=None, pad_token_id=None,
             length_penalty: float = 1.0, early_stopping=False, attention_mask=None,
             suppress_tokens=None, model_kwargs=None, streamer=None):
    """Continue each row of ``idx`` (B, T) by up to ``max_new_tokens`` tokens (see the module doc).

    ``do_sample`` draws from softmax(logits / temperature) after top-k and top-p filtering;
    otherwise greedy (``num_beams=1``) or beam search. ``seed`` makes sampling reproducible with
    its own generator; without it tinyllm's generator (``tl.manual_seed``) is used.
    ``attention_mask`` (B, T) marks the real tokens of a padded batch; ``suppress_tokens`` are
    never generated; ``model_kwargs`` go to ``next_token_logits`` (see the protocol);
    ``streamer`` is called with each step's new tokens (N,). Runs under
    ``no_grad`` in eval mode; every module's previous mode is restored afterwards.
    Returns a NumPy int64 array (B * num_return_sequences, T + new).
    """
    ids, mask = _prompt(idx, attention_mask)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 0)
    num_beams, nrs = _check_search(do_sample, num_beams, num_return_sequences)
    if do_sample:
        top_k = check_sampling_args(temperature, top_k, top_p)
    if streamer is not None and (num_beams > 1 or not callable(streamer)):
        raise ValueError("generate: streamer must be a callable, and streams greedy decoding or "
                         "sampling (beam search settles its tokens only at the end)")
    eos = _token_list("eos_token_id", eos_token_id)
    pads = _token_list("pad_token_id", pad_token_id)[:1]
    options = dict(attention_mask=mask, model_kwargs=model_kwargs,
                   suppress_tokens=_token_list("suppress_tokens", suppress_tokens),
                   check_tokens={"eos_token_id": eos, "pad_token_id": pads})
    with eval_mode(model):
        if max_new_tokens == 0:
            return np.repeat(ids, nrs, axis=0)
        if num_beams > 1:
            # transformers fills finished beams with `pad_token_id or eos_token_id`: a pad id
            # of 0 counts as unset there, so beams are padded with eos; we do the same
            pad = pads[0] if pads and pads[0] else (eos[0] if eos else 0)
            return beam_search(model, ids, max_new_tokens, num_beams, nrs, length_penalty,
                               early_stopping, eos, pad, use_cache, **options)[0]
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        pad = pads[0] if pads else (eos[0] if eos else 0)
        dec = ModelDriver(model, use_cache, repeat_rows(mask, nrs),
                       {k: repeat_rows(v, nrs) for k, v in (model_kwargs or {}).items()},
                       options["suppress_tokens"], options["check_tokens"])
        sampler = (lambda lo: sample_next(lo, temperature, top_k, top_p, rng)) if do_sample \
            else (lambda lo: lo.argmax(axis=-1))
        return _decode(dec, np.repeat(ids, nrs, axis=0), max_new_tokens, sampler, eos, pad,
                       streamer)


def _decode(dec, ids, max_new_tokens, choose, eos, pad, streamer=None):
    """Greedy decoding or sampling, one token per step for every row (``choose`` picks it)."""
    finished = np.zeros(len(ids), dtype=bool)
    for step in range(max_new_tokens):
        nxt = choose(dec.start(ids) if step == 0 else dec.step(ids))
        if eos:
            nxt = np.where(finished, pad, nxt)
            finished |= np.isin(nxt, eos)
        ids = np.concatenate([ids, nxt[:, None].astype(np.int64)], axis=1)
        if streamer is not None:
            streamer(ids[:, -1].copy())
        if eos and finished.all():
            break
    return ids


class GenerationMixin:
    """Adds ``generate`` to a model that follows the protocol in the module doc."""

    def generate(self, idx, max_new_tokens: int, **options):
        """Continue each row of ``idx`` (B, T) by up to ``max_new_tokens`` tokens; ``options``
        (do_sample, temperature, top_k, top_p, num_beams, num_return_sequences, eos_token_id,
        pad_token_id, attention_mask, use_cache, seed, length_penalty, early_stopping, streamer,
        ...) are those of ``tinyllm.models.generation.generate``."""
        return generate(self, idx, max_new_tokens, **options)
