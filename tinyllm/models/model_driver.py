"""The model driver of generation: a model's ``next_token_logits`` run over a prompt, then one
token per step, and the host-side log-softmax of its logits.

``ModelDriver`` runs the prompt once and then feeds each new token against one ``KVCache`` per
layer (``use_cache``), or re-runs the whole context, cropped to the model's ``block_size``, every
step. It hands back float64 host logits (N, V), checked finite, so that every search
(``tinyllm.models.generation``'s greedy decoding and sampling, ``tinyllm.models.beam_search``)
chooses its tokens from the same numbers. See ``tinyllm.models.generation`` for the model protocol.
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.backend import np
from tinyllm.ids import check_ids
from tinyllm.tensor import Tensor, as_tensor

__all__ = ["ModelDriver", "repeat_rows", "log_softmax"]


def log_softmax(x):
    """log softmax along the last axis of a NumPy array (float64 on the host)."""
    s = x - x.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def repeat_rows(x, n: int):
    """Each row (axis 0) of ``x`` (NumPy, backend array or Tensor, or None) ``n`` times."""
    if x is None or n == 1:
        return x
    if isinstance(x, Tensor):
        return as_tensor(repeat_rows(x.data, n))
    return backend.get_array_module(x).repeat(x, n, axis=0)


class ModelDriver:
    """Runs the model for generation: the prompt once, then one token per step (with a cache),
    or the whole (cropped) context every step (without). Hands back float64 host logits (N, V),
    checked finite, ``suppress`` tokens set to -inf."""

    def __init__(self, model, use_cache: bool, mask=None, model_kwargs=None, suppress=(),
                 tokens=None):
        self.model = model
        self.block = getattr(model, "block_size", None)
        self.use_cache = use_cache and hasattr(model, "new_kv_caches")
        self.caches = None
        self.cached = 0  # positions in the caches
        self.mask = mask  # (N, T) host booleans; each generated token adds a real position
        self.kwargs = dict(model_kwargs or {})
        self.suppress = list(suppress)
        self.tokens = tokens or {}  # {argument name: token ids}, checked against V at the start
        self.steps = 0

    def _run(self, ids, caches, mask):
        kw = self.kwargs if mask is None else {**self.kwargs, "attention_mask": mask}
        logits = self.model.next_token_logits(ids, kv_caches=caches, **kw)
        logits = logits.numpy() if isinstance(logits, Tensor) else backend.to_device(logits, "cpu")
        logits = np.array(logits, dtype=np.float64)
        self.steps += 1
        # -inf is a probability of 0 (a token ruled out); NaN, +inf or a row of nothing but
        # -inf rule out no token and every token alike: an error, never a made-up token 0
        bad = np.isnan(logits) | np.isposinf(logits)
        if bad.any() or np.isneginf(logits).all(axis=1).any():
            what = ("NaN" if np.isnan(logits).any() else "+inf" if bad.any()
                    else "rows of only -inf (infinite values)")
            rows = np.flatnonzero(bad.any(axis=1) | np.isneginf(logits).all(axis=1)).tolist()
            raise ValueError(f"generate: the model's logits hold {what} at step {self.steps} "
                             f"(rows {rows[:8]}), so no token can be chosen; check the model's "
                             "weights (a diverged training run?) and its inputs")
        if self.suppress:
            logits[:, self.suppress] = -np.inf
        return logits

    def start(self, ids):
        """Logits (N, V) after the prompt ``ids`` (N, T)."""
        if self.use_cache and (self.block is None or ids.shape[1] <= self.block):
            self.caches = self.model.new_kv_caches()
            self.cached = ids.shape[1]
            logits = self._run(ids, self.caches, self.mask)
        else:
            logits = self._run(*self._crop(ids))
        for name, values in self.tokens.items():  # the vocabulary is known now: V
            check_ids(np.asarray(values, dtype=np.int64), logits.shape[1], name,
                      kind="token id", hint=" (the model's vocabulary)")
        return logits

    def step(self, ids):
        """Logits (N, V) after ``ids`` (N, T + 1): the previous sequence plus one new token."""
        if self.mask is not None:
            self.mask = np.concatenate([self.mask, np.ones((len(ids), 1), dtype=bool)], axis=1)
        if self.caches is not None and (self.block is None or self.cached < self.block):
            self.cached += 1
            return self._run(ids[:, -1:], self.caches, self.mask)
        self.caches = None  # full (or never used): recompute the cropped context from here on
        return self._run(*self._crop(ids))

    def reorder(self, index):  # the rows of one prompt share their mask and model_kwargs
        for c in self.caches or ():
            c.reorder(index)

    def _crop(self, ids):
        if self.block is None or ids.shape[1] <= self.block:
            return ids, None, self.mask
        mask = None if self.mask is None else self.mask[:, -self.block:]
        return ids[:, -self.block:], None, mask

