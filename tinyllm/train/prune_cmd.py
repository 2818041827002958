"""``tinyllm prune``: prune a trained run into a new run folder, then fine-tune it with the
pruned weights held at zero.

    tinyllm prune --ckpt runs/baby-shakespeare --sparsity 0.5 --out runs/baby-p50 --finetune-iters 300
    tinyllm prune --ckpt runs/baby-shakespeare --method 2:4 --out runs/baby-2of4
    tinyllm prune --ckpt runs/baby-shakespeare --method heads --sparsity 0.25 --out runs/baby-h25
    tinyllm train --resume runs/baby-2of4 --max-iters 300      # its fine-tune, later

The new folder is a run of its own at step 0: the pruned weights, a fresh optimizer, the source
run's config with a fine-tuning schedule (``max_iters`` = ``--finetune-iters``, a constant
learning rate ``--finetune-lr``, no warm-up, so that ``--resume --max-iters N`` extends it
sensibly), ``init_from`` naming the source, and ``task_args.prune`` recording the method, the
sparsity and the pruned tensors. Its first line in ``metrics.jsonl`` is the pruned model's loss
before fine-tuning. ``tinyllm sample`` and ``tinyllm eval`` read it like any run.

The zeros are kept by ``keep_pruned_zeros``, which every task's optimizer goes through: in a run
whose config has ``task_args.prune`` (or that starts ``--init`` from such a run, which then
inherits the record) the optimizer is a ``MaskedOptimizer`` whose masks are the exact zeros of
the recorded tensors (``masks_from_zeros``). ``--set task_args.prune=null`` turns that off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyllm.train.config import ConfigError

__all__ = ["add_prune_parser", "keep_pruned_zeros", "prune_run", "run_prune_command"]


def add_prune_parser(sub) -> None:
    p = sub.add_parser("prune", help="prune a trained run into a new run folder (+ fine-tune)",
                       description="methods: magnitude (per layer), global, N:M such as 2:4, "
                       "heads, neurons (ranked by the loss change when each is removed)")
    p.add_argument("--ckpt", required=True, metavar="DIR", help="the trained run folder")
    p.add_argument("--out", required=True, metavar="DIR", help="the new run folder")
    p.add_argument("--method", default="magnitude",
                   help="magnitude | global | 2:4 (any N:M) | heads | neurons")
    p.add_argument("--sparsity", type=float, default=None,
                   help="fraction of weights (heads, neurons) to remove; N:M implies 1 - N/M")
    p.add_argument("--finetune-iters", type=int, default=0, help="fine-tuning steps (0: none)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="constant fine-tuning learning rate (default: the run's min_lr, where "
                   "its schedule ended)")
    p.add_argument("--importance-batches", type=int, default=2,
                   help="training batches that measure each head's or neuron's importance")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")


# ----------------------------------------------------------------------------------- the masks
def _inherited_record(cfg):
    """The prune record of the run that ``cfg.init_from`` names, if it has one."""
    if not cfg.init_from:
        return None
    path = Path(cfg.init_from) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("task_args", {}).get("prune")
    except (OSError, ValueError, AttributeError):
        return None  # the trainer has read this folder already and reports its problems


def keep_pruned_zeros(task, optimizer):
    """``optimizer``, wrapped in a ``MaskedOptimizer`` when the run is a pruned one (see the
    module docstring); call it after the weights are loaded."""
    ta = task.cfg.task_args
    if "prune" not in ta:
        record = _inherited_record(task.cfg)
        if record:
            ta["prune"] = {**record, "inherited_from": str(task.cfg.init_from)}
    record = ta.get("prune")
    if not record:
        return optimizer
    from tinyllm.prune import MaskedOptimizer, masks_from_zeros, prunable_weights

    names = record.get("params") if isinstance(record, dict) else None
    if not isinstance(names, list):
        raise ConfigError(f"config key 'task_args.prune' must be the record that tinyllm prune "
                          f"writes (a JSON object with a list 'params'), got {record!r}; set "
                          "task_args.prune=null to train without keeping pruned weights at zero")
    if not names:  # sparsity 0: nothing was pruned
        return optimizer
    weights = prunable_weights(task.model)
    missing = [n for n in names if n not in weights]
    if missing:
        raise ConfigError(f"config key 'task_args.prune' names tensors this model does not have "
                          f"({', '.join(missing)}); set task_args.prune=null to train without "
                          "keeping pruned weights at zero")
    return MaskedOptimizer(optimizer, weights, masks_from_zeros({n: weights[n] for n in names}))


# ----------------------------------------------------------------------------------- the command
def _importance_loss(task, cfg, n_batches: int):
    """The mean loss (eval mode) on ``n_batches`` fixed training batches: what ablation measures."""
    rng = np.random.default_rng([cfg.seed, 4])
    batches = [task.batch("train", rng)[0] for _ in range(n_batches)]  # host: the model moves them

    def loss_fn():
        task.model.eval()
        return float(np.mean([task.loss(b).item() for b in batches]))

    return loss_fn


def _finetune_config(cfg, ckpt, out, iters: int, lr: float, record: dict, step: int):
    cfg.out, cfg.init_from = str(out), str(ckpt)
    cfg.max_iters, cfg.lr, cfg.min_lr, cfg.warmup_iters = iters, lr, lr, 0
    cfg.lr_decay_iters = max(1, iters)
    if iters:  # a few evaluations along the fine-tune; a later --resume --max-iters keeps them
        cfg.eval_interval = min(cfg.eval_interval, max(1, iters // 4))
    cfg.ckpt_interval = cfg.eval_interval
    cfg.task_args["prune"] = {**record, "source": str(ckpt), "source_step": step}
    return cfg.validate()


def _write_run(cfg, task, out: Path, quiet: bool) -> dict:
    """Write ``task`` (pruned) as run folder ``out`` at step 0; returns its first evaluation."""
    from tinyllm import manual_seed
    from tinyllm.train import checkpoint as ckpt
    from tinyllm.train.logging import Progress, choose_mode
    from tinyllm.train.trainer import Run

    manual_seed(cfg.seed)
    opt = task.optimizer()  # a MaskedOptimizer: cfg.task_args has the prune record
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_json(out / "config.json", cfg.to_dict())
    task.tokenizer.save(out / "tokenizer.json")
    (out / "tokenizer.json").chmod(0o644)
    run = Run(cfg, out, task, opt, np.random.default_rng(cfg.seed), {}, [], [], None)
    progress = Progress(cfg.max_iters, 0, choose_mode(quiet), cfg.log_interval)
    try:
        rec = run.evaluate(progress)
        run.save()
    finally:
        progress.close()
    return rec


def prune_run(ckpt, out, method: str = "magnitude", sparsity: float | None = None,
              finetune_iters: int = 0, finetune_lr: float | None = None,
              importance_batches: int = 2, device: str | None = None,
              quiet: bool = False) -> dict:
    """Prune run folder ``ckpt`` into the new run folder ``out`` and fine-tune it for
    ``finetune_iters`` steps. Returns the record, the pruned loss and the fine-tuned loss."""
    from tinyllm.prune import check_method, prune
    from tinyllm.train.trainer import load_run, train

    out = Path(out)
    if (out / "state.json").exists() or (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a run: choose another --out folder")
    if finetune_iters < 0 or importance_batches < 1:
        raise ConfigError("--finetune-iters must be >= 0 and --importance-batches >= 1")
    try:
        check_method(method, sparsity)
    except ValueError as e:
        raise ConfigError(f"--method/--sparsity: {e}") from None
    cfg, task, ck = load_run(ckpt, load_data=True, device=device)
    loss_fn = None
    if method in ("heads", "neurons"):
        loss_fn = _importance_loss(task, cfg, importance_batches)
    result = prune(task.model, method, sparsity, loss_fn)
    lr = finetune_lr if finetune_lr is not None else cfg.min_lr
    _finetune_config(cfg, ckpt, out, finetune_iters, lr, result.record, ck.step)
    task.model.train()
    first = _write_run(cfg, task, out, quiet)
    summary = {"record": cfg.task_args["prune"], "pruned_val_loss": first["val_loss"]}
    if finetune_iters > 0:
        res = train(resume=out, quiet=quiet)
        summary["finetuned_val_loss"] = res.metrics[-1]["val_loss"] if res.metrics else None
    return summary


def run_prune_command(args) -> int:
    s = prune_run(args.ckpt, args.out, args.method, args.sparsity, args.finetune_iters,
                  args.finetune_lr, args.importance_batches, args.device, args.quiet)
    r = s["record"]
    print(f"{args.out}: {r['method']} pruning of {args.ckpt} (step {r['source_step']}), "
          f"{r['weight_sparsity']:.1%} of the Linear weights zero; val loss "
          f"{s['pruned_val_loss']:.4f} after pruning"
          + (f", {s['finetuned_val_loss']:.4f} after {args.finetune_iters} fine-tuning steps"
             if s.get("finetuned_val_loss") is not None else ""))
    return 0
