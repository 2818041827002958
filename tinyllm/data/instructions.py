"""Instruction data built from what the project has: the Tang poems, and a task checked exactly.

Two kinds of (request, reply) pairs, each with a held-out split:

* **Poem requests.** A five- or seven-character quatrain (五言絕句, 七言絕句: four lines of five or
  seven characters, punctuated ``X，X。X，X。``) is asked for by its form alone, by its title, or
  by its author, and answered by a real poem of the corpus that fits the request:

      作一首五言絕句                          -> a real five-character quatrain
      以江雪爲題，作一首五言絕句              -> the real poem of that title
      寫一首李白的七言絕句                    -> a real seven-character quatrain by Li Bai

  The poems are split, not the requests: a held-out poem's title and text are never trained on
  (nor the same text under another title or author: the corpus holds a few poems twice).
  Whether a reply keeps the requested form is checked by ``quatrain_form``.
* **Reversal** (倒讀, "read backwards"): ``倒讀，春風不度`` -> ``度不風春``, random strings of 3 to 8
  of the corpus's most frequent characters; the reply is right or wrong, exactly. The held-out
  strings never occur in the training split.

The requests use only characters of the poems, so a character-level tokenizer built from them
encodes every request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["FORMS", "Example", "quatrain_form", "line_lengths", "poem_requests",
           "reversal_examples", "reversal_alphabet", "instruction_splits"]

FORMS = {5: "五言絕句", 7: "七言絕句"}  # characters per line -> the form's name
REQUEST_KINDS = ("form", "title", "author")
PUNCTUATION = "，。"
_LINES = {n: re.compile(rf"(?:[^{PUNCTUATION}]{{{n}}}，[^{PUNCTUATION}]{{{n}}}。){{2}}")
          for n in FORMS}


@dataclass(frozen=True)
class Example:
    """One instruction: ``kind`` (form, title, author or reverse), the user's ``prompt``, the
    reference ``response``, and for a poem request the ``form`` asked for (5 or 7)."""

    kind: str
    prompt: str
    response: str
    form: int | None = None

    def messages(self, with_response: bool = True) -> list[dict]:
        """The conversation: the request, and the reference reply unless ``with_response`` is off."""
        msgs = [{"role": "user", "content": self.prompt}]
        if with_response:
            msgs.append({"role": "assistant", "content": self.response})
        return msgs


def quatrain_form(text: str) -> int | None:
    """5 or 7 when ``text`` is exactly a quatrain of that many characters per line
    (``X，X。X，X。``, nothing before or after), else None."""
    for n, pattern in _LINES.items():
        if pattern.fullmatch(text):
            return n
    return None


def line_lengths(text: str) -> list[int]:
    """The lengths of the lines of ``text`` between the punctuation marks ``，`` and ``。``
    (a trailing piece without its mark counts too)."""
    pieces = re.split(f"[{PUNCTUATION}]", text)
    if pieces and pieces[-1] == "":
        pieces = pieces[:-1]
    return [len(p) for p in pieces]


def request_text(kind: str, form: int, title: str = "", author: str = "") -> str:
    """The user's words for a poem request of ``kind`` (form, title or author)."""
    name = FORMS[form]
    if kind == "form":
        return f"作一首{name}"
    if kind == "title":
        return f"以{title}爲題，作一首{name}"
    if kind == "author":
        return f"寫一首{author}的{name}"
    raise ValueError(f"unknown request kind {kind!r}; kinds are {list(REQUEST_KINDS)}")


def poem_requests(poems, rng, max_title: int = 10) -> list[Example]:
    """One request per quatrain of ``poems`` (``Poem`` records), its kind drawn from ``rng``
    (a title request only for titles of at most ``max_title`` characters without punctuation),
    answered by that poem."""
    out = []
    kinds = rng.integers(len(REQUEST_KINDS), size=len(poems)).tolist()
    for p, k in zip(poems, kinds):
        form = quatrain_form(p.text)
        if form is None:
            continue
        kind = REQUEST_KINDS[k]
        if kind == "title" and (len(p.title) > max_title
                                or any(c in p.title for c in PUNCTUATION + " ")):
            kind = "form"
        out.append(Example(kind, request_text(kind, form, p.title, p.author), p.text, form))
    return out


def reversal_alphabet(poems, size: int = 300) -> list[str]:
    """The ``size`` most frequent characters of the poems (punctuation left out), most frequent
    first (ties in code-point order)."""
    text = "".join(p.text for p in poems)
    codes, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32),
                              return_counts=True)  # code points in increasing order
    keep = ~np.isin(codes, [ord(c) for c in PUNCTUATION])
    codes, counts = codes[keep], counts[keep]
    order = np.argsort(-counts, kind="stable")[:size]  # ties stay in code-point order
    return [chr(int(c)) for c in codes[order]]


def reversal_examples(n: int, alphabet, rng, min_len: int = 3, max_len: int = 8,
                      exclude=()) -> list[Example]:
    """``n`` distinct reversal requests ``倒讀，s`` -> ``s[::-1]`` for random strings ``s`` of
    ``min_len`` to ``max_len`` characters of ``alphabet``; strings in ``exclude`` are skipped."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len} and {max_len}")
    alphabet = np.asarray(list(alphabet))
    seen, out = set(exclude), []
    for _ in range(100):  # rounds of fresh draws until n distinct strings are found
        lengths = rng.integers(min_len, max_len + 1, size=n)
        chars = alphabet[rng.integers(len(alphabet), size=(n, max_len))]
        for row, length in zip(chars.tolist(), lengths.tolist()):
            s = "".join(row[:length])
            if s not in seen:
                seen.add(s)
                out.append(Example("reverse", f"倒讀，{s}", s[::-1]))
                if len(out) == n:
                    return out
    return out


def instruction_splits(poems, seed: int = 0, val_fraction: float = 0.05, n_reverse: int = 20000,
                       n_reverse_val: int = 500, alphabet_size: int = 300, min_len: int = 3,
                       max_len: int = 8) -> dict[str, list[Example]]:
    """``{"train": [...], "val": [...]}``: poem requests for the quatrains of ``poems`` (the
    poems split ``val_fraction`` held out, shuffled by ``seed``) and reversal requests
    (``n_reverse`` for training, ``n_reverse_val`` held out, strings disjoint)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 20])
    requests = poem_requests(poems, rng)
    order = rng.permutation(len(requests))
    n_val = max(1, int(round(len(requests) * val_fraction)))
    val = [requests[i] for i in order[:n_val]]
    held_out = {e.response for e in val}  # a poem the corpus holds twice stays held out
    train = [requests[i] for i in order[n_val:] if requests[i].response not in held_out]
    alphabet = reversal_alphabet(poems, alphabet_size)
    rev_val = reversal_examples(n_reverse_val, alphabet, rng, min_len, max_len)
    held = {e.response[::-1] for e in rev_val}
    rev_train = reversal_examples(n_reverse, alphabet, rng, min_len, max_len, exclude=held)
    return {"train": train + rev_train, "val": val + rev_val}
