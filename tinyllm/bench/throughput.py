"""The machine's own figures beside the models': float32 matmul GFLOP/s at the baby step's
shapes (the ceiling every implementation runs under) and byte-level BPE training time."""

from __future__ import annotations

import math

import numpy as np

from tinyllm.bench.harness import Table, interleave
from tinyllm.bench.suites import BABY, QUICK, Options, device_sync, have_torch


# ---------------------------------------------------------------------------- BPE
def suite_bpe(opts: Options) -> list:
    from tinyllm.data import load_corpus  # noqa: PLC0415
    from tinyllm.tokenizers.bpe import train_bpe  # noqa: PLC0415

    t = Table("BPE training (byte-level, GPT-2 pre-tokenizer)",
              ["text", "merges", "median s", "min s", "max s"])
    try:
        text = load_corpus("tinyshakespeare", download_missing=False)
    except Exception as e:  # noqa: BLE001  (absent corpus: a note, not a failure)
        t.notes.append(f"skipped: Tiny Shakespeare not found ({str(e).splitlines()[0][:160]}); "
                       "set TINYLLM_DATA_DIR")
        return [t]
    merges = 50 if opts.quick else 1000
    if opts.quick:
        text = text[:20000]
    rounds = 1 if opts.quick else max(1, min(opts.rounds, 3))
    stats = interleave({"bpe": lambda: train_bpe(text, 256 + merges)}, rounds, warmup=0)["bpe"]
    t.rows.append([f"Tiny Shakespeare, {len(text):,} chars", merges, f"{stats.median:.2f}",
                   f"{stats.min:.2f}", f"{stats.max:.2f}"])
    return [t]


# ---------------------------------------------------------------------------- matmul
def suite_matmul(opts: Options) -> list:
    c = QUICK if opts.quick else BABY
    n, ce, v, h, tb = c["batch"] * c["block_size"], c["n_embd"], c["vocab_size"], c["n_head"], \
        c["block_size"]
    big = 256 if opts.quick else 1024
    shapes = [(f"{big}x{big} @ {big}x{big}", (big, big), (big, big)),
              (f"qkv {n}x{ce} @ {ce}x{3 * ce}", (n, ce), (ce, 3 * ce)),
              (f"mlp fc {n}x{ce} @ {ce}x{4 * ce}", (n, ce), (ce, 4 * ce)),
              (f"mlp proj {n}x{4 * ce} @ {4 * ce}x{ce}", (n, 4 * ce), (4 * ce, ce)),
              (f"head {n}x{ce} @ {ce}x{v}", (n, ce), (ce, v)),
              (f"attention {c['batch'] * h}x({tb}x{ce // h} @ {ce // h}x{tb})",
               (c["batch"] * h, tb, ce // h), (c["batch"] * h, ce // h, tb))]
    torch = None
    if have_torch():
        import torch  # noqa: PLC0415
    xp = np
    if opts.device == "cuda":
        import cupy as xp  # noqa: PLC0415
    cols = ["shape", f"{'cupy' if xp is not np else 'numpy'} GFLOP/s", "min-max"]
    if torch is not None:
        cols += ["pytorch GFLOP/s", "min-max"]
    t = Table(f"float32 matmul ({opts.device})", cols)
    rng = np.random.default_rng(0)
    for label, sa, sb in shapes:
        a, b = (rng.standard_normal(s, dtype=np.float32) for s in (sa, sb))
        flops = 2 * math.prod(sa) * sb[-1]
        ad, bd = xp.asarray(a), xp.asarray(b)
        fns = {"np": lambda ad=ad, bd=bd: ad @ bd}
        if torch is not None:
            ta, tb_ = (torch.tensor(z, device=opts.device) for z in (a, b))
            fns["torch"] = lambda ta=ta, tb_=tb_: ta @ tb_
        reps = max(1, int(2e8 // flops)) if not opts.quick else 1
        loop = {k: (lambda f=f, reps=reps: [f() for _ in range(reps)]) for k, f in fns.items()}
        stats = interleave(loop, opts.rounds, opts.warmup, device_sync(opts))
        row = [label]
        for k in fns:
            s = stats[k]
            row += [f"{flops * reps / s.median / 1e9:.1f}",
                    f"{flops * reps / s.max / 1e9:.0f}-{flops * reps / s.min / 1e9:.0f}"]
        t.rows.append(row)
    t.notes.append("small shapes are repeated within one timing so that each sample is ~0.2 GFLOP")
    return [t]
