"""The first language models, end to end: ``tinyllm demo`` (or ``python -m tinyllm.demo``).

Trains a character-level model on a corpus (Tiny Shakespeare by default) with the trainer
(``tinyllm train``: the same loop, run folder, checkpoints and ``loss.png``), prints the
training and validation loss as they fall, then samples some text:

    tinyllm demo                                  # MLP LM (Bengio et al. 2003): preset mlp-shakespeare
    tinyllm demo --model bigram                   # the bigram table: preset bigram-shakespeare
    tinyllm demo --corpus-path my.txt --steps 2000

A run starts with the validation loss of the *counting* bigram model (pair counts, no
training): the MLP, seeing ``--context`` characters, should end clearly below it. Each flag is
a trainer setting (``--steps`` is ``max_iters``, ``--context`` is ``block_size``, ...), so
``tinyllm train --preset mlp-shakespeare --set ...`` does the same.
"""

from __future__ import annotations

import sys

from tinyllm.cli import ArgumentParser, guarded, non_negative_int, parse, positive_int

PRESET = {"mlp": "mlp-shakespeare", "bigram": "bigram-shakespeare"}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="tinyllm demo", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default="tinyshakespeare", choices=["tinyshakespeare", "tang_poems"],
                   help="corpus name (tinyllm.data)")
    p.add_argument("--corpus-path", default=None, help="a UTF-8 text file to train on instead")
    p.add_argument("--model", choices=sorted(PRESET), default="mlp")
    p.add_argument("--steps", type=non_negative_int, default=None,
                   help="optimizer steps (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    p.add_argument("--context", type=positive_int, default=None,
                   help="MLP: characters of context (default 8)")
    p.add_argument("--n-embd", type=positive_int, default=None,
                   help="MLP: embedding size per character (default 24)")
    p.add_argument("--n-hidden", type=positive_int, default=None,
                   help="MLP: hidden units (default 256)")
    p.add_argument("--eval-every", type=positive_int, default=None,
                   help="steps between loss reports (default: a tenth of the run)")
    p.add_argument("--sample-chars", type=non_negative_int, default=300)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    p.add_argument("--quiet", action="store_true", help="only the summary and the sample")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def overrides(args) -> dict:
    """The trainer settings the demo's flags stand for."""
    from tinyllm.train.presets import preset_config

    preset = preset_config(PRESET[args.model])
    steps = args.steps if args.steps is not None else preset.max_iters
    out = {"corpus": args.corpus, "max_iters": steps, "seed": args.seed, "sample_chars": 0,
           "eval_interval": args.eval_every or max(steps // 10, 1)}
    for key, value in (("corpus_path", args.corpus_path), ("batch_size", args.batch_size),
                       ("lr", args.lr)):
        if value is not None:
            out[key] = value
    if args.lr is not None:
        out["min_lr"] = args.lr / 10
    if args.model == "mlp":
        for key, value in (("block_size", args.context), ("n_embd", args.n_embd),
                           ("model_args.n_hidden", args.n_hidden)):
            if value is not None:
                out[key] = value
    elif args.context or args.n_embd or args.n_hidden:
        from tinyllm.train.config import ConfigError

        raise ConfigError("--context, --n-embd and --n-hidden are settings of --model mlp")
    out["warmup_iters"] = min(preset.warmup_iters, steps // 10)
    return out


def run(args, out=None) -> dict:
    """Train as ``args`` say; returns {"result" (the TrainResult), "sample"}."""
    from tinyllm.train.presets import preset_config
    from tinyllm.train.trainer import train

    result = train(preset_config(PRESET[args.model]), overrides=overrides(args), out=args.out,
                   quiet=args.quiet)
    sample = ""
    if args.sample_chars:
        sample = result.task.sample(None, args.sample_chars, temperature=args.temperature,
                                    seed=args.seed)[0]
        print("\n--- a sample " + "-" * 50 + f"\n{sample}\n" + "-" * 63, file=out or sys.stdout,
              flush=True)
    return {"result": result, "sample": sample}


def main(argv=None) -> int:
    args, status = parse(build_parser(), argv)
    if args is None:
        return status
    return guarded(lambda: run(args) and 0, args.debug)


if __name__ == "__main__":
    sys.exit(main())
