"""The first language models, end to end: ``python -m tinyllm.demo``.

Trains a character-level model on a corpus (Tiny Shakespeare by default), prints the training
and validation loss as they fall, then samples some text:

    python -m tinyllm.demo                         # MLP LM (Bengio et al. 2003), ~1 minute
    python -m tinyllm.demo --model bigram          # the bigram table
    python -m tinyllm.demo --corpus-path my.txt --steps 2000

For reference it also prints the validation loss of the *counting* bigram model (pair counts,
no training): the MLP, seeing ``--context`` characters, should end clearly below it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import tinyllm as tl
from tinyllm.models.bigram import BigramLM, bigram_counts_loss
from tinyllm.models.mlp_lm import MLPLM, context_windows

DEFAULTS = {  # model -> (steps, lr, batch size)
    "mlp": (6000, 3e-3, 256),
    "bigram": (2000, 0.1, 256),
}


def read_corpus(name: str | None, path: str | None) -> tuple[str, str]:
    """(text, where it came from): ``path`` if given, else corpus ``name`` through
    ``tinyllm.data`` (falling back to ``$TINYLLM_DATA_DIR/<name>.txt``)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--corpus-path {path}: no such file")
        return p.read_text(encoding="utf-8"), str(p)
    try:
        from tinyllm.data import corpus_path, load_corpus
    except ImportError:  # a checkout without tinyllm.data: look in TINYLLM_DATA_DIR
        folder = os.environ.get("TINYLLM_DATA_DIR")
        p = Path(folder or ".") / f"{name}.txt"
        if not p.is_file():
            raise FileNotFoundError(f"corpus {name!r} not found at {p}: set TINYLLM_DATA_DIR to "
                                    "the folder holding it, or pass --corpus-path FILE") from None
        return p.read_text(encoding="utf-8"), str(p)
    return load_corpus(name), str(corpus_path(name))


def make_tokenizer(text: str):
    try:
        from tinyllm.tokenizers import CharTokenizer
    except ImportError:  # pragma: no cover - the tokenizers package ships with tinyllm
        return _Chars(text)
    return CharTokenizer.from_text(text)


class _Chars:
    """A minimal character tokenizer (only used if ``tinyllm.tokenizers`` is unavailable)."""

    def __init__(self, text):
        self.itos = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.vocab_size = len(self.itos)

    def encode(self, s):
        return [self.stoi[c] for c in s]

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids)

    def token_to_id(self, c):
        return self.stoi.get(c)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tinyllm.demo", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="tinyshakespeare", help="corpus name (tinyllm.data)")
    p.add_argument("--corpus-path", default=None, help="a UTF-8 text file to train on instead")
    p.add_argument("--model", choices=["mlp", "bigram"], default="mlp")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: per model)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    p.add_argument("--context", type=int, default=8, help="MLP: characters of context")
    p.add_argument("--n-embd", type=int, default=24, help="MLP: embedding size per character")
    p.add_argument("--n-hidden", type=int, default=256, help="MLP: hidden units")
    p.add_argument("--eval-every", type=int, default=None, help="steps between loss reports")
    p.add_argument("--sample-chars", type=int, default=300)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def _eval_loss(model, x, y, batch: int = 16384) -> float:
    """Mean cross-entropy over all of (x, y) in eval mode, without building a graph."""
    model.eval()
    total = 0.0
    with tl.no_grad():
        for i in range(0, len(y), batch):
            _, loss = model(x[i:i + batch], y[i:i + batch])
            total += float(loss.item()) * len(y[i:i + batch])
    model.train()
    return total / len(y)


def train(args, out=sys.stdout) -> dict:
    """Train as ``args`` say; returns {"train_loss", "val_loss", "bigram_val_loss", "sample",
    "seconds", "history"}."""
    def say(msg=""):
        print(msg, file=out, flush=True)

    tl.manual_seed(args.seed)
    text, source = read_corpus(args.corpus, args.corpus_path)
    tok = make_tokenizer(text)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    n_val = max(len(ids) // 10, 2)
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]
    v = tok.vocab_size
    say(f"corpus {source}: {len(text):,} characters, vocabulary of {v}; "
        f"{len(train_ids):,} for training, {len(val_ids):,} for validation")
    ref = bigram_counts_loss(train_ids, val_ids, v, smoothing=1.0)
    say(f"reference: the counting bigram model (add-one smoothing) has val loss {ref:.4f} nats; "
        f"uniform guessing has {math.log(v):.4f}")

    steps0, lr0, bs0 = DEFAULTS[args.model]
    steps = args.steps if args.steps is not None else steps0
    lr = args.lr if args.lr is not None else lr0
    bs = args.batch_size or bs0
    every = args.eval_every or max(steps // 10, 1)
    if args.model == "mlp":
        ctx = args.context
        model = MLPLM(v, context=ctx, n_embd=args.n_embd, n_hidden=args.n_hidden)
        xtr, ytr = context_windows(train_ids, ctx)
        xva, yva = context_windows(val_ids, ctx)
    else:
        model = BigramLM(v)
        xtr, ytr = train_ids[:-1, None], train_ids[1:, None]  # (N, 1): sequences of length 1
        xva, yva = val_ids[:-1, None], val_ids[1:, None]
    say(f"model: {type(model).__name__} with {model.num_parameters():,} parameters; "
        f"{steps} steps of AdamW, batch {bs}, lr {lr:g} (cosine decay)")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
    groups = [{"params": decay, "weight_decay": 0.01}] if decay else []
    groups.append({"params": rest, "weight_decay": 0.0})
    opt = tl.optim.AdamW(groups, lr=lr)
    warmup = min(100, steps // 10)
    sched = tl.optim.CosineWithWarmup(opt, lr, lr / 10, warmup, steps)
    rng = np.random.default_rng(args.seed)
    history = []
    t0 = time.perf_counter()
    running = None
    for step in range(1, steps + 1):
        ix = rng.integers(0, len(ytr), bs)
        _, loss = model(xtr[ix], ytr[ix])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        li = float(loss.item())
        running = li if running is None else 0.95 * running + 0.05 * li
        if step % every == 0 or step == steps:
            val = _eval_loss(model, xva, yva)
            history.append((step, running, val))
            say(f"step {step:6d}  train loss {running:.4f}  val loss {val:.4f}  "
                f"({time.perf_counter() - t0:.1f} s)")
    seconds = time.perf_counter() - t0
    train_loss = _eval_loss(model, xtr[:200_000], ytr[:200_000])
    val = history[-1][2]
    say(f"done in {seconds:.1f} s: train loss {train_loss:.4f}, val loss {val:.4f} "
        f"(counting bigram: {ref:.4f})")
    sample = model.sample(tok, args.sample_chars, seed=args.seed,
                          temperature=args.temperature)
    say("\n--- a sample " + "-" * 50)
    say(sample)
    say("-" * 63)
    return {"train_loss": train_loss, "val_loss": val, "bigram_val_loss": ref, "sample": sample,
            "seconds": seconds, "history": history}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
