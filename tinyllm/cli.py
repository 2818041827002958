"""The ``tinyllm`` command (also ``python -m tinyllm``).

    tinyllm train --preset baby-shakespeare [--max-iters N] [--set key=value ...] [--out DIR]
    tinyllm train --resume DIR
    tinyllm train --preset tang-sft --init RUN          # fine-tune the run in RUN
    tinyllm chat --ckpt DIR
    tinyllm sample --ckpt DIR --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 200
    tinyllm eval --ckpt DIR
    tinyllm bench ... | tinyllm course ... | tinyllm demo ...

Exit status: 0 done; 1 training stopped (the loss diverged); 2 bad input (unknown preset or
key, wrong type, unusable device, damaged run folder, missing corpus); 130 interrupted (Ctrl-C,
after saving a checkpoint).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

__all__ = ["main"]

DELEGATES = {  # sub-command -> (module, what it is)
    "bench": ("tinyllm.bench", "the benchmark suite"),
    "course": ("tinyllm.course.cli", "the course tools"),
    "demo": ("tinyllm.demo", "the first-models demo"),
    "chat": ("tinyllm.chat", "a terminal chat with a fine-tuned run"),
}


def _parser() -> argparse.ArgumentParser:
    from tinyllm.train.presets import PRESETS

    p = argparse.ArgumentParser(prog="tinyllm", description="tinyllm: train, sample and "
                                "evaluate small language models on a NumPy autograd engine")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (a preset, a JSON config, --set overrides)",
                       description="presets: " + "; ".join(f"{k}: {v['about']}"
                                                           for k, v in PRESETS.items()))
    t.add_argument("--preset", help=f"one of {', '.join(sorted(PRESETS))}")
    t.add_argument("--config", metavar="FILE.json", help="config keys from a JSON file "
                   "(applied after the preset)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set lr=3e-4 "
                   "--set model_args.bias=false")
    t.add_argument("--out", metavar="DIR", help="run folder (default runs/<preset>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly")
    t.add_argument("--init", metavar="RUN", help="start from the weights of the run in RUN "
                   "(fine-tuning, e.g. --preset tang-sft --init runs/tang-char)")
    t.add_argument("--device", help="cpu or cuda")
    t.add_argument("--max-iters", type=int, help="number of training steps")
    t.add_argument("--seed", type=int)
    t.add_argument("--sample-chars", type=int, help="characters sampled at the end (LM; 0: none)")
    t.add_argument("--quiet", action="store_true", help="no progress output, only the summary")

    s = sub.add_parser("sample", help="generate text from a trained run")
    s.add_argument("--ckpt", required=True, metavar="DIR", help="a run folder")
    s.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    s.add_argument("--max-new-tokens", type=int, default=300)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=200)
    s.add_argument("--top-p", type=float, default=None)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--do-sample", dest="do_sample", action="store_true", default=True,
                   help="sample from the distribution (default)")
    g.add_argument("--greedy", dest="do_sample", action="store_false",
                   help="always take the most likely token (or beam search with --num-beams)")
    s.add_argument("--num-beams", type=int, default=1,
                   help="beam search with this many beams (deterministic: implies --greedy)")
    s.add_argument("--num-return-sequences", type=int, default=1)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default=None)

    e = sub.add_parser("eval", help="train/validation loss and task metrics of a run")
    e.add_argument("--ckpt", required=True, metavar="DIR", help="a run folder")
    e.add_argument("--eval-iters", type=int, default=None, help="batches per split")
    e.add_argument("--device", default=None)
    e.add_argument("--json", action="store_true", help="print one JSON object")

    for name, (_, what) in DELEGATES.items():
        sub.add_parser(name, help=f"{what} (see tinyllm {name} --help)", add_help=False)
    return p


def _error(msg: str, code: int = 2) -> int:
    print(f"tinyllm: error: {msg}", file=sys.stderr)
    return code


def _delegate(name: str, argv) -> int:
    module, what = DELEGATES[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return _error(f"'tinyllm {name}' ({what}) is not available in this installation: "
                          f"the module {module} is missing")
        raise
    fn = getattr(mod, "main", None)
    if fn is None:
        return _error(f"'tinyllm {name}': {module} has no main(argv)")
    code = fn(list(argv))
    return int(code or 0)


def _cmd_train(args) -> int:
    from tinyllm.train.config import (
        ConfigError,
        TrainConfig,
        apply_overrides,
        load_json_config,
        parse_set,
    )
    from tinyllm.train.presets import preset_config
    from tinyllm.train.trainer import train

    overrides = parse_set(args.set)
    for key, value in (("device", args.device), ("max_iters", args.max_iters),
                       ("seed", args.seed), ("sample_chars", args.sample_chars),
                       ("init_from", args.init)):
        if value is not None:
            overrides[key] = value
    if args.resume:
        if args.preset or args.config:
            raise ConfigError("--resume continues a run with its own config.json; leave out "
                              "--preset and --config")
        if args.out:
            raise ConfigError("--resume writes into the run folder it continues; leave out --out")
        train(resume=args.resume, overrides=overrides, quiet=args.quiet)
        return 0
    cfg = preset_config(args.preset) if args.preset else TrainConfig()
    if args.config:
        apply_overrides(cfg, load_json_config(args.config), where=f"--config {args.config}")
    train(cfg, overrides=overrides, out=args.out, quiet=args.quiet)
    return 0


def _generate(args, task):
    if not task.can_sample:
        return None
    sampling = dict(do_sample=args.do_sample and args.num_beams == 1,
                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    num_beams=args.num_beams, seed=args.seed)
    if task.kind == "lm":
        return task.sample(args.prompt, args.max_new_tokens, **sampling,
                           num_return_sequences=args.num_return_sequences)
    return task.sample(args.prompt, args.max_new_tokens, **sampling)


def _cmd_sample(args) -> int:
    from tinyllm.train.trainer import load_run

    cfg, task, _ = load_run(args.ckpt, device=args.device)
    try:
        texts = _generate(args, task)
    except (ValueError, TypeError) as e:  # generation options out of range
        return _error(str(e))
    if texts is None:
        return _error(f"{args.ckpt} holds a {task.kind} model, which does not generate text; "
                      "use tinyllm eval")
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1}")
        print(text)
    return 0


def _cmd_eval(args) -> int:
    import numpy as np

    from tinyllm.train.trainer import estimate_loss, load_run

    cfg, task, ck = load_run(args.ckpt, load_data=True, device=args.device)
    result = {"step": ck.step, **estimate_loss(task, cfg, args.eval_iters)}
    result.update(task.metrics(np.random.default_rng([cfg.seed, 3])))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.ckpt} (step {ck.step}, task {task.kind}):")
        for k, v in result.items():
            if k != "step":
                print(f"  {k:<16} {v:.4f}")
    return 0


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "eval": _cmd_eval}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:
        return _delegate(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    from tinyllm.serialization import SafetensorsError
    from tinyllm.train.checkpoint import CheckpointError
    from tinyllm.train.config import ConfigError
    from tinyllm.train.trainer import TrainingDiverged, TrainingInterrupted

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, SafetensorsError) as e:
        return _error(str(e))
    except FileNotFoundError as e:  # a corpus that is not there (the message says how to get it)
        return _error(str(e))
    except TrainingDiverged as e:
        return _error(str(e), 1)
    except TrainingInterrupted as e:
        print(f"tinyllm: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tinyllm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
