"""Training the encoder-decoder Transformer: a synthetic digit task and Tang couplets.

    from tinyllm.train.seq2seq import train_synthetic, train_couplets
    result = train_synthetic("reverse")    # 600 steps: held-out exact match 1.0, ~1 min
    result = train_couplets(steps=1500)   # result["examples"]: (first line, generated)

Both are runs of the trainer (``tinyllm.train.train``, task ``seq2seq``: the loop, the schedule
and the checkpoints of ``tinyllm train``), configured from their arguments: AdamW with a linear
warm-up and cosine decay to a tenth of ``lr``, gradient clipping at 1.0, teacher forcing
(``tgt_in = <bos> target``, ``tgt_out = target <eos>``). The source gets an ``<eos>`` too: it
marks where the sequence ends, which helps the decoder count (reverse) from it. The run folder
is a temporary one unless ``out`` names a folder to keep.
"""

from __future__ import annotations

import contextlib
import csv
import tempfile
import time
from pathlib import Path

from tinyllm.data.seq2seq import DigitVocab, collate_seq2seq
from tinyllm.train.config import TrainConfig


def blas_threads(n: int | None):
    """Limit BLAS to ``n`` threads (needs threadpoolctl; None: leave it). Small matrices train
    faster on one thread, and much faster when other processes share the cores."""
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _with_eos(pairs, eos_id):
    return [(list(s) + [eos_id], list(t)) for s, t in pairs]


def _run(cfg: TrainConfig, out, verbose: bool, threads):
    """Train ``cfg`` with the trainer into ``out`` (a temporary folder when None)."""
    from tinyllm.train.trainer import train

    with blas_threads(threads), contextlib.ExitStack() as stack:
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tinyllm-"))) / "run"
        return train(cfg, out=out, mode="lines" if verbose else "silent")


def exact_match(model, pairs, batch_size: int = 256, num_beams: int = 1) -> float:
    """Fraction of (source, target) id pairs whose whole target (then eos) is generated."""
    cfg = model.config
    hits = 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        src = collate_seq2seq(chunk, cfg.pad_id, cfg.bos_id, cfg.eos_id)["src"]
        longest = max(len(t) for _, t in chunk) + 1
        out = model.generate(src, longest, num_beams=num_beams)
        for row, (_, t) in zip(out, chunk):
            want = list(t) + [cfg.eos_id]
            hits += row[:len(want)].tolist() == want
    return hits / len(pairs)


def train_synthetic(task: str = "reverse", steps: int = 600, seed: int = 0, batch_size: int = 64,
                    d_model: int = 64, n_head: int = 4, num_layers: int = 2, d_ff: int | None = 256,
                    dropout: float = 0.0, norm_first: bool = False, lr: float = 2e-3,
                    warmup: int = 100, weight_decay: float = 0.01, min_len: int = 3,
                    max_len: int = 10, n_eval: int = 1000, log_every: int = 100,
                    verbose: bool = True, threads: int | None = 1, out=None) -> dict:
    """Train on the synthetic digit task (``"reverse"`` or ``"sort"``) and measure held-out
    exact-match accuracy of greedy decoding on ``n_eval`` sources that never appear in training
    (the trainer's preset ``digits-reverse`` with these sizes). ``threads``: BLAS threads while
    training (see ``blas_threads``).

    Returns {"model", "accuracy", "losses" (every step's), "seconds", "train_seconds",
    "examples", "result" (the trainer's TrainResult)}.
    """
    t0 = time.perf_counter()
    cfg = TrainConfig(
        task="seq2seq", corpus=f"digits-{task}", tokenizer="digits", n_layer=num_layers,
        n_head=n_head, n_embd=d_model, block_size=max_len + 2, dropout=dropout,
        model_args={"d_ff": d_ff, "norm_first": norm_first},
        task_args={"n_train": max(steps * batch_size, 1000), "n_val": n_eval,
                   "min_len": min_len, "max_len": max_len, "n_exact_match": n_eval},
        batch_size=batch_size, max_iters=steps, lr=lr, min_lr=lr / 10, warmup_iters=warmup,
        weight_decay=weight_decay, betas=(0.9, 0.98), grad_clip=1.0, eval_interval=steps,
        eval_iters=5, log_interval=log_every, sample_chars=0, seed=seed)
    result = _run(cfg, out, verbose, threads)
    model, v = result.task.model, DigitVocab
    acc = result.metrics[-1]["exact_match"]
    shown = result.task.val_data[:5]  # (source digits + eos, target)
    src = collate_seq2seq(shown, v.pad_id, v.bos_id, v.eos_id)["src"]
    examples = [(v.decode(s[:-1]), v.decode(o[o != v.eos_id]))
                for (s, _), o in zip(shown, model.generate(src, max_len + 1))]
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"{task}: held-out exact match {acc:.4f} on {n_eval} examples; {steps} steps, "
              f"{seconds:.0f} s in all")
        for s, o in examples:
            print(f"  {s} -> {o}")
    return {"model": model, "accuracy": acc, "losses": result.losses, "seconds": seconds,
            "train_seconds": result.elapsed_s, "examples": examples, "result": result}


def _poems_file(poems, folder: Path) -> Path:
    """Poem records (or strings) as a tang_poems.tsv file the trainer can read."""
    path = folder / "poems.tsv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
        w.writerow(["author", "title", "text"])
        for p in poems:
            w.writerow([getattr(p, "author", ""), getattr(p, "title", ""), getattr(p, "text", p)])
    return path


def train_couplets(steps: int = 1500, seed: int = 0, batch_size: int = 64, d_model: int = 128,
                   n_head: int = 4, num_layers: int = 2, d_ff: int | None = 512,
                   dropout: float = 0.1, lr: float = 1e-3, warmup: int = 100,
                   vocab_chars: int = 3000, n_examples: int = 8, num_beams: int = 1,
                   poems=None, log_every: int = 100, verbose: bool = True,
                   threads: int | None = 1, out=None) -> dict:
    """Learn to answer the first line of a Tang couplet (``X，``) with a second (``Y。``): the
    trainer's preset ``couplets`` with these sizes.

    Character vocabulary: the ``vocab_chars`` most frequent characters (couplets with other
    characters are left out) plus <pad>, <bos>, <eos>, <unk>. ``poems``: Poem records or strings
    (default: the ``tang_poems`` corpus). Returns {"model", "tokenizer", "examples", "losses",
    "seconds", "result"}, examples being (first line, generated second line, the poet's line)
    for held-out couplets.
    """
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinyllm-poems-") as tmp:
        path = None if poems is None else str(_poems_file(poems, Path(tmp)))
        cfg = TrainConfig(
            task="seq2seq", corpus="couplets", corpus_path=path, n_layer=num_layers,
            n_head=n_head, n_embd=d_model, block_size=16, dropout=dropout,
            model_args={"d_ff": d_ff}, task_args={"vocab_chars": vocab_chars,
                                                  "n_exact_match": max(n_examples, 1)},
            batch_size=batch_size, max_iters=steps, lr=lr, min_lr=lr / 10, warmup_iters=warmup,
            weight_decay=0.01, betas=(0.9, 0.98), grad_clip=1.0, eval_interval=steps,
            eval_iters=5, log_interval=log_every, sample_chars=0, seed=seed)
        result = _run(cfg, out, verbose, threads)
    model, tok = result.task.model, result.task.tokenizer
    special = set(tok.all_special_ids)
    shown = result.task.val_data[:n_examples]
    src = collate_seq2seq([(s, []) for s, _ in shown], tok.pad_token_id, tok.bos_token_id,
                          tok.eos_token_id)["src"]
    out_ids = model.generate(src, 12, num_beams=num_beams)
    text = lambda ids: tok.decode([i for i in ids if i not in special])  # noqa: E731
    examples = [(text(s), text(row.tolist()), text(t)) for (s, t), row in zip(shown, out_ids)]
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"couplets: {len(result.task.train_data)} training pairs, vocabulary "
              f"{tok.vocab_size}, {steps} steps, {seconds:.0f} s")
        for a, gen, b in examples:
            print(f"  {a}{gen}    (poet: {a}{b})")
    return {"model": model, "tokenizer": tok, "examples": examples, "losses": result.losses,
            "seconds": seconds, "result": result}
