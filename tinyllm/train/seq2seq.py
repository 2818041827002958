"""Training the encoder-decoder Transformer: a synthetic digit task and Tang couplets.

    from tinyllm.train.seq2seq import train_synthetic, train_couplets
    result = train_synthetic("reverse")    # 600 steps: held-out exact match 1.0, ~1 min
    result = train_couplets(steps=1500)   # result["examples"]: (first line, generated)

Both use AdamW with a linear warm-up and cosine decay, gradient clipping at 1.0, and teacher
forcing (``tgt_in = <bos> target``, ``tgt_out = target <eos>``). The source gets an ``<eos>``
too: it marks where the sequence ends, which helps the decoder count (reverse) from it.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

import tinyllm as tl
from tinyllm.data.seq2seq import DigitVocab, collate_seq2seq, couplet_pairs, synthetic_seq2seq
from tinyllm.models.transformer import Transformer, TransformerConfig
from tinyllm.optim import AdamW, CosineWithWarmup, clip_grad_norm_


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


def _train(model, next_batch, steps, lr, warmup, weight_decay, log_every, log):
    opt = AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = CosineWithWarmup(opt, max_lr=lr, min_lr=lr / 10, warmup_steps=warmup,
                             decay_steps=steps)
    model.train()
    losses = []
    for step in range(steps):
        batch = next_batch()
        _, loss = model(batch["src"], batch["tgt_in"], batch["tgt_out"])
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and (step % log_every == 0 or step == steps - 1):
            log(f"step {step:5d}  loss {np.mean(losses[-log_every:]):.4f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}")
    model.eval()
    return losses


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
                    verbose: bool = True, threads: int | None = 1) -> dict:
    """Train on the synthetic digit task (``"reverse"`` or ``"sort"``) and measure held-out
    exact-match accuracy of greedy decoding. Held-out sources never appear in training.
    ``threads``: BLAS threads while training (see ``blas_threads``).

    Returns {"model", "accuracy", "losses", "seconds", "examples"}.
    """
    with blas_threads(threads):
        t0 = time.perf_counter()
        tl.manual_seed(seed)
        rng = np.random.default_rng(seed)
        v = DigitVocab
        eval_pairs = synthetic_seq2seq(n_eval, task, min_len, max_len, rng)
        held_out = {tuple(s) for s, _ in eval_pairs}

        def next_batch():
            pairs = [p for p in synthetic_seq2seq(batch_size + 16, task, min_len, max_len, rng)
                     if tuple(p[0]) not in held_out][:batch_size]
            return collate_seq2seq(_with_eos(pairs, v.eos_id), v.pad_id, v.bos_id, v.eos_id)

        cfg = TransformerConfig(v.size, v.size, d_model=d_model, n_head=n_head,
                                num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                                d_ff=d_ff, dropout=dropout, max_len=max(64, max_len + 2),
                                norm_first=norm_first, share_embeddings=True, pad_id=v.pad_id,
                                bos_id=v.bos_id, eos_id=v.eos_id)
        model = Transformer(cfg)
        log = print if verbose else None
        losses = _train(model, next_batch, steps, lr, warmup, weight_decay, log_every, log)
        train_seconds = time.perf_counter() - t0
        acc = exact_match(model, _with_eos(eval_pairs, v.eos_id))
        examples = []
        shown = _with_eos(eval_pairs[:5], v.eos_id)
        src = collate_seq2seq(shown, v.pad_id, v.bos_id, v.eos_id)["src"]
        for (s, _), out in zip(eval_pairs[:5], model.generate(src, max_len + 1)):
            examples.append((v.decode(s), v.decode(out[out != v.eos_id])))
        seconds = time.perf_counter() - t0
        if verbose:
            print(f"{task}: held-out exact match {acc:.4f} on {n_eval} examples; "
                  f"{steps} steps, {train_seconds:.0f} s training, {seconds:.0f} s in all")
            for s, out in examples:
                print(f"  {s} -> {out}")
        return {"model": model, "accuracy": acc, "losses": losses, "seconds": seconds,
                "train_seconds": train_seconds, "examples": examples}


def train_couplets(steps: int = 1500, seed: int = 0, batch_size: int = 64, d_model: int = 128,
                   n_head: int = 4, num_layers: int = 2, d_ff: int | None = 512,
                   dropout: float = 0.1, lr: float = 1e-3, warmup: int = 100,
                   vocab_chars: int = 3000, n_examples: int = 8, num_beams: int = 1,
                   poems=None, log_every: int = 100, verbose: bool = True,
                   threads: int | None = 1) -> dict:
    """Learn to answer the first line of a Tang couplet (``X，``) with a second (``Y。``).

    Character vocabulary: the ``vocab_chars`` most frequent characters (couplets with other
    characters are left out) plus <pad>, <bos>, <eos>. ``poems``: Poem records or strings
    (default: the ``tang_poems`` corpus). Returns {"model", "tokenizer", "examples", "losses",
    "seconds"}, examples being (first line, generated second line, the poet's line) for held-out
    couplets.
    """
    with blas_threads(threads):
        from collections import Counter

        from tinyllm.data import load_tang_poems
        from tinyllm.tokenizers import CharTokenizer

        t0 = time.perf_counter()
        tl.manual_seed(seed)
        rng = np.random.default_rng(seed)
        pairs = couplet_pairs(load_tang_poems() if poems is None else poems)
        counts = Counter(c for a, b in pairs for c in a + b)
        keep = {c for c, _ in counts.most_common(vocab_chars)}
        pairs = [(a, b) for a, b in pairs if set(a + b) <= keep and len(a) == len(b)]
        specials = ["<pad>", "<bos>", "<eos>"]
        tok = CharTokenizer(keep, special_tokens=specials)
        pad, bos, eos = (tok.token_to_id(s) for s in specials)
        order = rng.permutation(len(pairs))
        n_test = min(200, len(pairs) // 10)
        test = [pairs[i] for i in order[:n_test]]
        train = [(tok.encode(pairs[i][0]) + [eos], tok.encode(pairs[i][1]))
                 for i in order[n_test:]]

        def next_batch():
            idx = rng.integers(0, len(train), size=batch_size)
            return collate_seq2seq([train[i] for i in idx], pad, bos, eos)

        cfg = TransformerConfig(tok.vocab_size, tok.vocab_size, d_model=d_model, n_head=n_head,
                                num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                                d_ff=d_ff, dropout=dropout, max_len=64, share_embeddings=True,
                                pad_id=pad, bos_id=bos, eos_id=eos)
        model = Transformer(cfg)
        log = print if verbose else None
        losses = _train(model, next_batch, steps, lr, warmup, 0.01, log_every, log)
        shown = test[:n_examples]
        src = collate_seq2seq([(tok.encode(a) + [eos], []) for a, _ in shown], pad, bos, eos)["src"]
        out = model.generate(src, 12, num_beams=num_beams)
        examples = [(a, tok.decode([i for i in row if i not in (pad, bos, eos)]), b)
                    for (a, b), row in zip(shown, out)]
        seconds = time.perf_counter() - t0
        if verbose:
            print(f"couplets: {len(train)} training pairs, vocabulary {tok.vocab_size}, "
                  f"{steps} steps, {seconds:.0f} s")
            for a, gen, b in examples:
                print(f"  {a}{gen}    (poet: {a}{b})")
        return {"model": model, "tokenizer": tok, "examples": examples, "losses": losses,
                "seconds": seconds}
