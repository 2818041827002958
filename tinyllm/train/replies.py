"""Replies of a chat model, and what they are measured by: form-following and exact answers.

``generate_replies(model, tokenizer, conversations, ...)`` renders each conversation with the
generation prompt (``tinyllm.data.chat``), decodes them in batches of prompts of one length (no
padding needed, any model that ``generate``s), and returns each reply: the tokens before the
first ``<|end|>``, decoded, and cut at the first newline. (A model fine-tuned on the chat format
closes its turn with ``<|end|>`` and never writes a newline in a poem; a base model, which
never saw the end token, ends a poem with the newline that separated the poems of its corpus.)

``assistant_metrics`` measures a model on held-out instructions (``tinyllm.data.instructions``):

* ``form_rate``: the share of poem requests answered by a quatrain of the requested form
  (four lines of five or seven characters, ``X，X。X，X。``), the replies sampled;
* ``reverse_accuracy``: the share of reversal requests answered exactly, greedily.
"""

from __future__ import annotations

import numpy as np

__all__ = ["generate_replies", "form_rate", "reverse_accuracy", "assistant_metrics"]

POEM_TOKENS = 40  # a seven-character quatrain is 32 characters; its <|end|> the 33rd token


def generate_replies(model, tokenizer, conversations, max_new_tokens: int = POEM_TOKENS,
                     seed: int = 0, **sampling) -> list[str]:
    """The reply the model writes to each conversation (a list of messages ending with the
    user's), in order. ``sampling``: ``generate``'s options (do_sample, temperature, top_k,
    top_p); each group of prompts of one length samples with its own seed, ``seed + length``."""
    from tinyllm.data.chat import chat_prompt_ids

    prompts = [chat_prompt_ids(c, tokenizer) for c in conversations]
    stops = sorted(tokenizer.added_to_id.values())  # <|end|>, or a role token: a new turn
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    replies: list[str] = [""] * len(prompts)
    for length, rows in sorted(by_length.items()):
        ids = np.asarray([prompts[i] for i in rows], dtype=np.int64)
        out = model.generate(ids, max_new_tokens, eos_token_id=stops, seed=seed + length,
                             **sampling)
        for i, row in zip(rows, out[:, length:].tolist()):
            replies[i] = reply_text(tokenizer, row)
    return replies


def reply_text(tokenizer, ids, stop_at_newline: bool = True) -> str:
    """The text of generated ``ids`` up to the first chat token (``<|end|>``, or a role token
    that would open another turn) and the first newline."""
    stops = set(tokenizer.added_to_id.values())
    ids = list(ids)
    ids = ids[:next((i for i, t in enumerate(ids) if t in stops), len(ids))]
    text = tokenizer.decode(ids)
    return text.split("\n", 1)[0] if stop_at_newline else text


def form_rate(model, tokenizer, examples, temperature: float = 1.0, seed: int = 0):
    """(share of ``examples`` (poem requests) answered in the requested form, the replies);
    the replies are sampled at ``temperature``."""
    from tinyllm.data.instructions import quatrain_form

    examples = [e for e in examples if e.form is not None]
    if not examples:
        return float("nan"), []
    replies = generate_replies(model, tokenizer, [e.messages(False) for e in examples],
                               POEM_TOKENS, seed=seed, do_sample=True, temperature=temperature)
    hits = [quatrain_form(r) == e.form for r, e in zip(replies, examples)]
    return float(np.mean(hits)), replies


def reverse_accuracy(model, tokenizer, examples):
    """(share of ``examples`` (reversal requests) answered exactly by greedy decoding, the
    replies)."""
    examples = [e for e in examples if e.kind == "reverse"]
    if not examples:
        return float("nan"), []
    longest = max(len(tokenizer.encode(e.response)) for e in examples)
    replies = generate_replies(model, tokenizer, [e.messages(False) for e in examples],
                               longest + 1)
    return float(np.mean([r == e.response for r, e in zip(replies, examples)])), replies


def assistant_metrics(model, tokenizer, examples, n: int = 100, temperature: float = 1.0,
                      seed: int = 0) -> dict:
    """``form_rate`` on the first ``n`` poem requests of ``examples`` and ``reverse_accuracy``
    on the first ``n`` reversal requests (each left out when there are none)."""
    poems = [e for e in examples if e.form is not None][:n]
    reversals = [e for e in examples if e.kind == "reverse"][:n]
    out = {}
    if poems:
        out["form_rate"] = form_rate(model, tokenizer, poems, temperature, seed)[0]
    if reversals:
        out["reverse_accuracy"] = reverse_accuracy(model, tokenizer, reversals)[0]
    return out
