"""``tinyllm chat --ckpt RUN``: a terminal chat with a fine-tuned run (``tang-sft``, ``tang-dpo``).

    $ tinyllm chat --ckpt runs/tang-sft
    > 以江雪爲題，作一首五言絕句
    千山鳥飛絕，...

Each line you type is a user message. The conversation is rendered with the chat template
(``tinyllm.data.chat``) and the reply is printed token by token as the model writes it
(``generate``'s ``streamer``), up to its ``<|end|>``. The conversation is kept within the model's
context window: the reply may take ``--max-new-tokens`` positions (default 5/8 of the context,
at most 200), the conversation the rest, and the oldest turns are dropped to make room (never
the ``--system`` prompt). LoRA adapters are merged into the weights before the first reply.

``/reset`` starts a new conversation; Ctrl-D (end of input) or ``/quit`` leaves (status 0);
Ctrl-C during a reply stops that reply, at the prompt it leaves (status 130). Messages go to
stderr; stdout holds only the replies, one line each, so that the chat can be piped.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["ChatSession", "TextStreamer", "chat_loop", "main"]


class TextStreamer:
    """A ``generate`` streamer for one sequence that writes the decoded text as it grows.

    It keeps the ids until ``end_id`` (or another chat token: a role token opens a new turn)
    and writes the part of their decoded text not yet
    written; a trailing U+FFFD (the first bytes of a character that byte-level BPE has not
    finished) is held back until the character is complete. ``text`` is what was written."""

    def __init__(self, tokenizer, write, end_id: int):
        self.tokenizer, self.write, self.end_id = tokenizer, write, end_id
        self.stops = {end_id, *getattr(tokenizer, "added_to_id", {}).values()}  # a new turn too
        self.ids: list[int] = []
        self.done = False
        self.text = ""

    def __call__(self, tokens) -> None:
        token = int(tokens[0])
        if self.done or token in self.stops:
            self.done = True
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        self.write(text[len(self.text):])
        self.text = text


class ChatSession:
    """A conversation with ``model``: ``respond(text, write)`` adds the user's message, streams
    the reply through ``write`` and returns it; ``messages`` is the conversation kept."""

    def __init__(self, model, tokenizer, system: str | None = None,
                 max_new_tokens: int | None = None, **sampling):
        block = getattr(model, "block_size", None) or 1024
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.max_new_tokens = max_new_tokens or max(1, min(200, block * 5 // 8))
        if self.max_new_tokens >= block:
            raise ValueError(f"--max-new-tokens {self.max_new_tokens} leaves no room for the "
                             f"conversation in the model's context of {block} tokens")
        self.budget = block - self.max_new_tokens  # positions the conversation may use
        self.system = system
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def respond(self, text: str, write=None) -> str:
        """The reply to the user's ``text`` (ValueError if the message cannot be encoded or
        does not fit in the context); KeyboardInterrupt during it keeps the conversation as
        it was before the message."""
        from tinyllm.backend import np
        from tinyllm.data.chat import chat_prompt_ids, fit_to_window

        tok = self.tokenizer
        convo = fit_to_window(self.messages + [{"role": "user", "content": text}], tok,
                              self.budget)
        ids = np.asarray([chat_prompt_ids(convo, tok)], dtype=np.int64)
        streamer = TextStreamer(tok, write or (lambda s: None), tok.end_token_id)
        out = self.model.generate(ids, self.max_new_tokens, eos_token_id=sorted(streamer.stops),
                                  streamer=streamer, **self.sampling)
        from tinyllm.train.replies import reply_text

        reply = reply_text(tok, out[0, ids.shape[1]:].tolist(), stop_at_newline=False)
        if len(reply) > len(streamer.text):  # a held-back end of a character, if any
            (write or (lambda s: None))(reply[len(streamer.text):])
        self.messages = convo + [{"role": "assistant", "content": reply}]
        return reply


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyllm chat", description="chat with a fine-tuned run "
                                "(tang-sft, tang-dpo): Ctrl-D or /quit leaves, /reset starts over")
    p.add_argument("--ckpt", required=True, metavar="DIR", help="a chat run folder")
    p.add_argument("--system", default=None, help="a system prompt, kept in every turn")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="the longest reply (default 5/8 of the model's context, at most 200)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="the most likely token every step")
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--device", default=None)
    return p


def _load(args):
    from tinyllm.nn.lora import merge_lora
    from tinyllm.tokenizers import ChatTokenizer
    from tinyllm.train.config import ConfigError
    from tinyllm.train.trainer import load_run

    _, task, _ = load_run(args.ckpt, device=args.device)
    if not isinstance(task.tokenizer, ChatTokenizer):
        raise ConfigError(f"{args.ckpt} is a {task.kind!r} run without the chat format's tokens: "
                          f"fine-tune it first, e.g. tinyllm train --preset tang-sft --init "
                          f"{args.ckpt}")
    merge_lora(task.model)
    sampling = ({"do_sample": False} if args.greedy else
                {"do_sample": True, "temperature": args.temperature, "top_k": args.top_k,
                 "top_p": args.top_p, "seed": args.seed})
    return ChatSession(task.model, task.tokenizer, args.system, args.max_new_tokens, **sampling)


def _read(interactive: bool) -> str | None:
    if interactive:
        try:
            return input("> ")
        except EOFError:
            return None
    line = sys.stdin.readline()
    return None if line == "" else line.rstrip("\n")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from tinyllm.serialization import SafetensorsError
    from tinyllm.train.checkpoint import CheckpointError
    from tinyllm.train.config import ConfigError

    try:
        session = _load(args)
    except (ConfigError, CheckpointError, SafetensorsError, FileNotFoundError, ValueError) as e:
        print(f"tinyllm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.ckpt} (Ctrl-D or /quit to leave, /reset to start over)",
              file=sys.stderr)
    try:
        return chat_loop(session, interactive)
    except KeyboardInterrupt:  # Ctrl-C anywhere but in a reply: leave
        print(file=sys.stderr)
        return 130


def chat_loop(session: ChatSession, interactive: bool = False) -> int:
    """Read user messages from stdin until end of input, print each reply on stdout; returns 0.
    Ctrl-C (KeyboardInterrupt) during a reply drops that reply; elsewhere it propagates."""
    def write(s):
        sys.stdout.write(s)
        sys.stdout.flush()

    while True:
        text = _read(interactive)
        if text is None or text.strip() in ("/quit", "/exit"):
            return 0
        text = text.strip()
        if not text:
            continue
        if text == "/reset":
            session.reset()
            print("(a new conversation)", file=sys.stderr)
            continue
        try:
            session.respond(text, write)
        except KeyboardInterrupt:
            write("\n")
            print("(reply interrupted)", file=sys.stderr)
            continue
        except ValueError as e:
            print(f"tinyllm: {e}", file=sys.stderr)
            continue
        write("\n")
