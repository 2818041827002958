"""The pruning and distillation runs of docs/benchmarks.md ("Pruning and sparsity",
"Distillation"), as the command-line calls they are, one at a time.

    python docs/sparsity_runs.py prune --ckpt runs/baby-shakespeare --dir runs/prune-curve
    python docs/sparsity_runs.py distill --teacher runs/baby-shakespeare --dir runs/distill --seeds 1337 1 2

``prune``: for each method and sparsity, ``tinyllm prune`` (no fine-tune), ``tinyllm eval
--eval-iters 400``, ``tinyllm train --resume --max-iters 200`` (the fine-tune), ``tinyllm eval``
again; writes ``results.jsonl`` in ``--dir`` and the figure ``docs/pruning_curve.png``.
``distill``: for each seed the baby-distill student and the same student trained alone, both
evaluated on 400 batches; prints the means, the paired differences and their standard error.
A run whose folder is complete is not run again, so an interrupted script continues.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# in the order they are run (the target's points first: a stopped script has measured those)
CURVE = [("magnitude", 0.5), ("2:4", None), ("magnitude", 0.0), ("magnitude", 0.9)] + [
    ("magnitude", s) for s in (0.3, 0.7, 0.1, 0.6, 0.8, 0.2, 0.4)] + [
    ("global", 0.5), ("heads", 0.25), ("global", 0.9)]


def tinyllm(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "tinyllm", *map(str, args)], capture_output=True,
                       text=True)
    if r.returncode:
        raise SystemExit(f"tinyllm {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r.stdout


def evaluate(run) -> dict:
    return json.loads(tinyllm("eval", "--ckpt", run, "--eval-iters", 400, "--json"))


def tag(method, sparsity) -> str:
    return {"magnitude": "m", "global": "g", "heads": "h"}.get(method, method.replace(":", "of")) \
        + ("" if sparsity is None else f"{sparsity:g}")


def prune_curve(ckpt, folder: Path, iters: int) -> list[dict]:
    results = folder / "results.jsonl"
    done = {r["tag"] for r in _read(results)}
    for method, sparsity in CURVE:
        t = tag(method, sparsity)
        if t in done:
            continue
        run = folder / t
        shutil.rmtree(run, ignore_errors=True)
        sp = [] if sparsity is None else ["--sparsity", sparsity]
        tinyllm("prune", "--ckpt", ckpt, "--method", method, *sp, "--out", run, "--quiet")
        before = evaluate(run)
        tinyllm("train", "--resume", run, "--max-iters", iters, "--quiet")
        rec = {"method": method, "sparsity": sparsity, "tag": t, "before": before,
               "after": evaluate(run)}
        with results.open("a") as f:
            f.write(json.dumps(rec) + "\n")
    return _read(results)


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def plot_curve(records, dense: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mag = sorted((r for r in records if r["method"] == "magnitude"), key=lambda r: r["sparsity"])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [r["sparsity"] for r in mag]
    ax.plot(xs, [r["before"]["val_loss"] for r in mag], "o-", label="magnitude (per layer), pruned")
    ax.plot(xs, [r["after"]["val_loss"] for r in mag], "o-", label="... + 200 fine-tuning steps")
    for r, marker in zip([r for r in records if r["method"] != "magnitude"], "s^vD"):
        label = f"{r['method']} {'' if r['sparsity'] is None else r['sparsity']}".strip()
        x = r["sparsity"] if r["sparsity"] is not None else 0.5
        ax.plot([x, x], [r["before"]["val_loss"], r["after"]["val_loss"]], marker + "--",
                alpha=0.8, label=f"{label}: pruned, fine-tuned")
    ax.axhline(dense["val_loss"], color="0.5", ls=":", label="dense")
    ax.set(xlabel="sparsity of the Linear weights (heads: of the heads)",
           ylabel="validation loss (400 batches)", yscale="log",
           title="pruning the baby-shakespeare GPT")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _finished(run: Path) -> bool:
    """The run folder holds the checkpoint of its last step."""
    try:
        state = json.loads((run / "state.json").read_text())
        return state["step"] == json.loads((run / "config.json").read_text())["max_iters"]
    except (OSError, ValueError, KeyError):
        return False


def distill_seeds(teacher, folder: Path, seeds) -> dict:
    rows = []
    for seed in seeds:
        pair = {}
        for kind in ("alone", "distilled"):
            run = folder / f"{kind}-{seed}"
            if not _finished(run):
                shutil.rmtree(run, ignore_errors=True)
                if kind == "alone":
                    tinyllm("train", "--preset", "baby-shakespeare", "--set", "n_layer=2", "--set",
                            "n_embd=64", "--seed", seed, "--sample-chars", 0, "--out", run, "--quiet")
                else:
                    tinyllm("train", "--preset", "baby-distill", "--teacher", teacher, "--seed",
                            seed, "--sample-chars", 0, "--out", run, "--quiet")
            if not (run / "eval400.json").is_file():
                (run / "eval400.json").write_text(json.dumps(evaluate(run)))
            pair[kind] = json.loads((run / "eval400.json").read_text())["val_loss"]
        rows.append({"seed": seed, **pair, "difference": pair["distilled"] - pair["alone"]})
    diffs = [r["difference"] for r in rows]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else float("nan")
    return {"rows": rows, "mean_alone": sum(r["alone"] for r in rows) / n,
            "mean_distilled": sum(r["distilled"] for r in rows) / n,
            "mean_difference": mean, "standard_error": se}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("prune")
    a.add_argument("--ckpt", required=True)
    a.add_argument("--dir", required=True, type=Path)
    a.add_argument("--finetune-iters", type=int, default=200)
    b = sub.add_parser("distill")
    b.add_argument("--teacher", required=True)
    b.add_argument("--dir", required=True, type=Path)
    b.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.what == "prune":
        dense_file = args.dir / "dense.json"
        if not dense_file.is_file():
            dense_file.write_text(json.dumps(evaluate(args.ckpt)))
        dense = json.loads(dense_file.read_text())
        records = prune_curve(args.ckpt, args.dir, args.finetune_iters)
        plot_curve(records, dense, DOCS / "pruning_curve.png")
        print(f"dense: {dense['val_loss']:.4f}")
        for r in records:
            print(f"{r['tag']:>8}: pruned {r['before']['val_loss']:.4f}, fine-tuned "
                  f"{r['after']['val_loss']:.4f} ({r['after']['val_loss'] - dense['val_loss']:+.4f})")
    else:
        s = distill_seeds(args.teacher, args.dir, args.seeds)
        for r in s["rows"]:
            print(f"seed {r['seed']}: alone {r['alone']:.4f}, distilled {r['distilled']:.4f}, "
                  f"difference {r['difference']:+.4f}")
        print(f"means: alone {s['mean_alone']:.4f}, distilled {s['mean_distilled']:.4f}; "
              f"difference {s['mean_difference']:+.4f} +- {s['standard_error']:.4f} (standard "
              f"error of the mean paired difference, {len(s['rows'])} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
