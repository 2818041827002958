"""Sentence embeddings from an encoder: mean pooling over real tokens, then L2 normalisation.

This is the sentence-transformers pipeline of all-MiniLM-L6-v2 (Transformer -> Pooling(mean)
-> Normalize): the vector of a sentence is the average of its tokens' last hidden states,
padding excluded, scaled to unit length so that a dot product is the cosine similarity.

    model = BertModel.from_pretrained(d); tok = WordPieceTokenizer.from_pretrained(d)
    emb = encode_sentences(model, tok, ["A cat.", "A dog."])    # (2, 384) NumPy, unit rows
    emb @ emb.T                                                 # cosine similarities
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.autograd import no_grad
from tinyllm.tensor import Tensor, as_tensor

__all__ = ["mean_pool", "l2_normalize", "encode_sentences"]


def _mask_array(attention_mask, like: Tensor):
    m = attention_mask.data if isinstance(attention_mask, Tensor) else \
        backend.as_array(attention_mask, device=like.device)
    if tuple(m.shape) != tuple(like.shape[:2]):
        raise ValueError(f"attention_mask has shape {tuple(m.shape)}, the hidden states "
                         f"{tuple(like.shape)}: it must be (B, T) = {tuple(like.shape[:2])}")
    return m


def mean_pool(hidden, attention_mask=None) -> Tensor:
    """Mean of ``hidden`` (B, T, H) over the positions where ``attention_mask`` (B, T) is 1.

    A row with no real token gives zeros (its count is clamped to 1e-9, as sentence-transformers
    does). Differentiable with respect to ``hidden``."""
    if hidden.ndim != 3:
        raise ValueError(f"mean_pool expects hidden states (B, T, H), got {tuple(hidden.shape)}")
    if attention_mask is None:
        return hidden.mean(axis=1)
    m = (_mask_array(attention_mask, hidden) != 0).astype(hidden.dtype)[:, :, None]
    xp = backend.get_array_module(m)
    count = xp.maximum(m.sum(axis=1), hidden.dtype.type(1e-9))  # (B, 1)
    return (hidden * as_tensor(m)).sum(axis=1) / as_tensor(count)


def l2_normalize(x, eps: float = 1e-12, axis: int = -1) -> Tensor:
    """x / max(||x||_2, eps) along ``axis`` (torch.nn.functional.normalize)."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    sq = (x * x).sum(axis=axis, keepdims=True)
    # max(||x||, eps) = sqrt(max(||x||^2, eps^2)); clamping before the root keeps the gradient
    # finite for an all-zero row
    xp = backend.get_array_module(sq.data)
    floor = as_tensor(xp.asarray(eps * eps, dtype=x.dtype))
    return x / sq.masked_fill(as_tensor(sq.data < eps * eps), floor) ** 0.5


def encode_sentences(model, tokenizer, sentences, batch_size: int = 32, normalize: bool = True,
                     max_length: int | None = 256):
    """Sentence embeddings (N, H) as a NumPy float32 array (unit rows when ``normalize``).

    ``model`` is a BertModel (or anything called as ``model(input_ids, attention_mask,
    token_type_ids)`` returning (B, T, H)); ``tokenizer`` a WordPieceTokenizer (called as
    ``tok(texts, padding=True, truncation=True, max_length=...)``). ``max_length`` 256 is
    all-MiniLM-L6-v2's ``max_seq_length``. Runs in eval mode without gradients and restores
    the model's mode afterwards."""
    if isinstance(sentences, str):
        sentences = [sentences]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    np = backend.np
    was_training = model.training
    model.eval()
    out = []
    try:
        with no_grad():
            for s in range(0, len(sentences), batch_size):
                enc = tokenizer(list(sentences[s:s + batch_size]), padding=True, truncation=True,
                                max_length=max_length)
                h = model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
                e = mean_pool(h, enc["attention_mask"])
                out.append((l2_normalize(e) if normalize else e).numpy().astype(np.float32))
    finally:
        model.train(was_training)
    if not out:
        dim = getattr(getattr(model, "config", None), "hidden_size", 0)
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(out, axis=0)
