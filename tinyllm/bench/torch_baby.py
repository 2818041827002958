"""The ``baby-shakespeare`` preset trained in PyTorch, for the quality comparison in
docs/benchmarks.md ("Training quality").

Same data (tinyllm's corpus resolver, character tokenizer and 90/10 split), same batches
(``task.batch`` with the same seeded NumPy generators as ``tinyllm train``), same architecture
and initialisation (``TorchGPT``: biases, exact GELU, tied head), same recipe (the preset's
AdamW settings with nanoGPT's decay groups, warm-up and cosine schedule, clipping when
``grad_clip`` > 0). Only the engine differs, so a gap between this and
``tinyllm train --preset baby-shakespeare`` is tinyllm's.

    python -m tinyllm.bench.torch_baby --seed 1 [--eval-iters 400] [--threads 2]

Prints one JSON line: the final validation loss on the trainer's ``eval_iters`` (20) batches
(nanoGPT's estimate) and on ``--eval-iters`` batches drawn as ``tinyllm eval --eval-iters N``
draws them (the same generator, so the short estimate is the long one's first batches), and
the training time. PyTorch is a test/benchmark extra, never a dependency of tinyllm.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _xy(inputs, torch):
    """The task's NumPy batch as int64 torch tensors (inputs, targets)."""
    return (torch.from_numpy(inputs[k].astype(np.int64)) for k in ("idx", "targets"))


def _val_losses(model, task, seed, n, torch) -> list:
    """Losses of ``n`` validation batches from the trainer's evaluation generator."""
    rng = np.random.default_rng([seed, 1, 1])
    model.eval()
    losses = []
    with torch.no_grad():
        for _ in range(n):
            x, y = _xy(task.batch("val", rng)[0], torch)
            losses.append(float(model(x, y)[1]))
    return losses


def twin_config(preset: str, doc: str, argv, torch):
    """The command line of a PyTorch twin (``--seed``, ``--max-iters``, ``--eval-iters``,
    ``--threads``) and the preset's finalized config with it applied: (args, cfg)."""
    from tinyllm.train.presets import preset_config  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None, help="default: the preset's seed")
    ap.add_argument("--max-iters", type=int, default=None)
    ap.add_argument("--eval-iters", type=int, default=400, help="batches of the long estimate")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset_config(preset)
    if args.seed is not None:
        cfg.seed = args.seed
    if args.max_iters:
        cfg.max_iters = args.max_iters
    cfg.finalize()
    return args, cfg


def main(argv=None) -> int:
    import torch  # noqa: PLC0415

    from tinyllm.bench.torch_ref import TorchGPT  # noqa: PLC0415
    from tinyllm.train.tasks import build_task  # noqa: PLC0415

    args, cfg = twin_config("baby-shakespeare", __doc__, argv, torch)
    task = build_task(cfg)
    torch.manual_seed(cfg.seed)
    model = TorchGPT(task.tokenizer.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head,
                     cfg.n_embd, activation="gelu")
    print(json.dumps(train_and_evaluate(model, task, cfg, args.eval_iters, torch)))
    return 0


def train_and_evaluate(model, task, cfg, eval_iters: int, torch) -> dict:
    """Train ``model`` (``model(x, y) -> (logits, loss)``) on the task's batches with the
    preset's recipe, then evaluate it; the JSON record that ``main`` prints."""
    from tinyllm.bench.torch_ref import make_gpt_optimizer  # noqa: PLC0415
    from tinyllm.optim import cosine_with_warmup  # noqa: PLC0415

    opt = make_gpt_optimizer(model, cfg.lr, tuple(cfg.betas), cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)  # the trainer's batch generator
    model.train()
    t0 = time.perf_counter()
    for step in range(cfg.max_iters):
        lr = cosine_with_warmup(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = _xy(task.batch("train", rng)[0], torch)
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        if cfg.grad_clip > 0:  # 0 turns clipping off, as in the trainer
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    wall = time.perf_counter() - t0
    losses = _val_losses(model, task, cfg.seed, max(cfg.eval_iters, eval_iters), torch)
    out = {"seed": cfg.seed, "steps": cfg.max_iters, "train_s": round(wall, 1)}
    for n in (cfg.eval_iters, eval_iters):
        out[f"val_loss_{n}"] = float(np.mean(losses[:n]))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
