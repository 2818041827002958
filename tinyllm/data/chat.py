"""The chat format: a conversation rendered to token ids, and the loss mask of fine-tuning.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``
(an optional system message first, then turns). The template writes every message as its role
token, its content and the end token, one after the other:

    <|system|> You write poems <|end|> <|user|> 五言絕句 <|end|> <|assistant|> 春眠不覺曉，... <|end|>

and a prompt that asks for the next reply ends with ``<|assistant|>`` (``add_generation_prompt``):
the model writes the content and closes it with ``<|end|>``, where decoding stops.

**The loss mask.** Supervised fine-tuning trains the model to write the assistant's turns only:
the labels hold the token id at the assistant's content and at the ``<|end|>`` that closes it
(so the model learns to stop), and ``IGNORE_INDEX`` (-100, which ``F.cross_entropy`` skips)
everywhere else: the system prompt, the user's words, and every role token, which the template
writes and the model never has to. Labels are aligned with the ids (Hugging Face's convention);
``collate_chat`` shifts them by one for next-token prediction.

Exercise 20.1 is ``render_chat``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IGNORE_INDEX", "ROLES", "check_messages", "render_chat", "chat_prompt_ids",
           "collate_chat", "fit_to_window"]

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


def check_messages(messages) -> list[dict]:
    """``messages`` checked: a list of dicts with a known ``role`` and a string ``content``,
    a system message only first. Returns them as a list (ValueError names the bad message)."""
    if isinstance(messages, (str, dict)) or not hasattr(messages, "__iter__"):
        raise TypeError(f"a conversation is a list of {{'role', 'content'}} dicts, got "
                        f"{type(messages).__name__}")
    out = list(messages)
    for i, m in enumerate(out):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; roles are {list(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i}'s content must be a string, got "
                             f"{type(m['content']).__name__}")
        if m["role"] == "system" and i > 0:
            raise ValueError(f"message {i} is a system message: only the first message may be")
    return out


def render_chat(messages, tokenizer, add_generation_prompt: bool = False):
    """A conversation -> ``(ids, labels)``, two lists of ints of the same length.

    Each message becomes ``[role token] + content ids + [end token]``: the role token from
    ``tokenizer.role_token_id(role)``, the content from ``tokenizer.encode(content,
    split_special_tokens=True)`` (what a user typed stays text), the end token
    ``tokenizer.end_token_id``. ``labels[i]`` is ``ids[i]`` at the content and the end token of
    every assistant message, ``IGNORE_INDEX`` elsewhere (the role tokens, the system and user
    messages). With ``add_generation_prompt`` the assistant's role token is appended (label
    ``IGNORE_INDEX``): the prompt for the model's next reply.
    """
    messages = check_messages(messages)
    ids: list[int] = []
    labels: list[int] = []
    # BEGIN SOLUTION
    for m in messages:
        content = tokenizer.encode(m["content"], split_special_tokens=True)
        piece = [tokenizer.role_token_id(m["role"]), *content, tokenizer.end_token_id]
        ids.extend(piece)
        if m["role"] == "assistant":  # the reply and the end that closes it are trained
            labels.extend([IGNORE_INDEX, *piece[1:]])
        else:
            labels.extend([IGNORE_INDEX] * len(piece))
    if add_generation_prompt:
        ids.append(tokenizer.role_token_id("assistant"))
        labels.append(IGNORE_INDEX)
    # END SOLUTION
    return ids, labels


def chat_prompt_ids(messages, tokenizer) -> list[int]:
    """The ids of ``messages`` followed by the assistant's role token: the model replies next."""
    return render_chat(messages, tokenizer, add_generation_prompt=True)[0]


def collate_chat(rows, pad_id: int, block_size: int | None = None):
    """Rendered conversations ``rows`` (a list of ``(ids, labels)``) -> ``(x, y)`` int64 (B, T).

    Next-token prediction: ``x = ids[:-1]``, ``y = labels[1:]`` (position t is trained to predict
    the token after it, where that token's label is not ignored). Rows are cut to ``block_size``
    positions and padded on the right to the longest (``pad_id`` in x, ``IGNORE_INDEX`` in y):
    under causal attention the padding after a row's end changes none of its logits.
    """
    width = max(len(ids) - 1 for ids, _ in rows)
    if block_size is not None:
        width = min(width, block_size)
    x = np.full((len(rows), width), pad_id, dtype=np.int64)
    y = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for r, (ids, labels) in enumerate(rows):
        if len(ids) != len(labels):
            raise ValueError(f"row {r}: {len(ids)} ids but {len(labels)} labels")
        n = min(len(ids) - 1, width)
        x[r, :n] = ids[:n]
        y[r, :n] = labels[1:n + 1]
    return x, y


def fit_to_window(messages, tokenizer, max_tokens: int) -> list[dict]:
    """The latest part of a conversation whose generation prompt fits in ``max_tokens`` ids.

    The oldest turns are dropped first, a user message with the replies after it at a time; the
    system message (if any) and the last message are never dropped. ValueError when even those
    do not fit (the message is too long for the model's context).
    """
    messages = check_messages(messages)
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    while True:
        n = len(chat_prompt_ids(system + rest, tokenizer))
        if n <= max_tokens:
            return system + rest
        starts = [i for i, m in enumerate(rest) if m["role"] == "user" and i > 0]
        if len(rest) <= 1 or not starts:
            raise ValueError(f"the conversation's last message needs {n} tokens with the "
                             f"template{' and the system prompt' if system else ''}, more than "
                             f"the {max_tokens} the context leaves for it: shorten it")
        rest = rest[starts[0]:]
