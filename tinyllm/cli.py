"""The ``tinyllm`` command (also ``python -m tinyllm``).

    tinyllm train --preset baby-shakespeare [--max-iters N] [--set key=value ...] [--out DIR]
    tinyllm train --resume DIR
    tinyllm train --preset tang-sft --init RUN          # fine-tune the run in RUN
    tinyllm chat --ckpt DIR
    tinyllm sample --ckpt DIR --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 200
    tinyllm eval --ckpt DIR
    tinyllm quantize --ckpt DIR --bits 4 --group-size 32 --out DIR-q4
    tinyllm prune --ckpt DIR --sparsity 0.5 --out DIR-p50 [--method 2:4|heads|...] [--finetune-iters N]
    tinyllm bench ... | tinyllm course ... | tinyllm demo ...

Every error a user can cause is one line on stderr, ``tinyllm: error: ...``, naming the file,
flag or key and what to do; ``--debug`` (before or after the command, or ``TINYLLM_DEBUG=1``)
shows the Python traceback instead.

Exit status: 0 done; 1 training stopped (the loss diverged, or stopped being finite); 2 bad input
or environment (unknown preset or key, wrong type, unusable device, damaged, full or read-only
run folder, missing or altered corpus, bad weight or tokenizer file); 3 an internal error (a bug
in tinyllm: please report it with the --debug traceback); 130 interrupted (Ctrl-C, after saving
a checkpoint).

Extending: a new command is a ``_cmd_NAME(args)`` function, its sub-parser in ``_parser`` and
one entry in ``COMMANDS`` (or, for a command with its own module and ``main(argv)``, one entry
in ``DELEGATES``); an error type of a new module that users can cause goes in ``user_errors``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys

__all__ = ["main", "guarded", "parse", "ArgumentParser", "positive_int", "non_negative_int"]

DELEGATES = {  # sub-command -> (module, what it is)
    "bench": ("tinyllm.bench", "the benchmark suite"),
    "course": ("tinyllm.course.cli", "the course tools"),
    "demo": ("tinyllm.demo", "the first-models demo"),
    "chat": ("tinyllm.chat", "a terminal chat with a fine-tuned run"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (``tinyllm train: error: argument --max-iters:
    invalid int value: 'x' (see tinyllm train --help)``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(text: str, least: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"must be {'positive' if least else '>= 0'}, got {n}")
    return n


def parse(parser: argparse.ArgumentParser, argv):
    """``parser.parse_args(argv)``, or the exit status argparse chose (2 for an error after
    its one line, 0 after --help), so that ``main(argv)`` always returns a status."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as e:
        return None, int(e.code or 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _count(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _count(text, 0)


def _add_train(sub, debug, PRESETS) -> None:
    t = sub.add_parser("train", parents=[debug],
                       help="train a model (a preset, a JSON config, --set overrides)",
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
    t.add_argument("--max-iters", type=non_negative_int, help="number of training steps")
    t.add_argument("--seed", type=int)
    t.add_argument("--sample-chars", type=non_negative_int,
                   help="characters sampled at the end (LM; 0: none)")
    t.add_argument("--quiet", action="store_true", help="no progress output, only the summary")
    t.add_argument("--teacher", metavar="DIR", help="the teacher run folder of a distillation "
                   "(task distill, e.g. --preset baby-distill)")


def _add_sample(sub, debug) -> None:
    s = sub.add_parser("sample", parents=[debug], help="generate text from a trained run")
    s.add_argument("--ckpt", required=True, metavar="DIR", help="a run folder")
    s.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    s.add_argument("--max-new-tokens", type=non_negative_int, default=300)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=200)
    s.add_argument("--top-p", type=float, default=None)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--do-sample", dest="do_sample", action="store_true", default=True,
                   help="sample from the distribution (default)")
    g.add_argument("--greedy", dest="do_sample", action="store_false",
                   help="always take the most likely token (or beam search with --num-beams)")
    s.add_argument("--num-beams", type=positive_int, default=1,
                   help="beam search with this many beams (deterministic: implies --greedy)")
    s.add_argument("--num-return-sequences", type=positive_int, default=1)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default=None)


def _add_eval(sub, debug) -> None:
    e = sub.add_parser("eval", parents=[debug],
                       help="train/validation loss and task metrics of a run")
    e.add_argument("--ckpt", required=True, metavar="DIR", help="a run folder")
    e.add_argument("--eval-iters", type=positive_int, default=None,
                   help="batches per split (default: the run's eval_iters)")
    e.add_argument("--device", default=None)
    e.add_argument("--json", action="store_true", help="print one JSON object")


def _parser() -> argparse.ArgumentParser:
    from tinyllm.train.presets import PRESETS

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error")
    p = ArgumentParser(prog="tinyllm", parents=[debug], description="tinyllm: train, sample "
                       "and evaluate small language models on a NumPy autograd engine")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=ArgumentParser)

    _add_train(sub, debug, PRESETS)
    _add_sample(sub, debug)
    _add_eval(sub, debug)

    from tinyllm.train.quantize_cmd import add_quantize_parser

    add_quantize_parser(sub)

    from tinyllm.train.prune_cmd import add_prune_parser

    add_prune_parser(sub)
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
    try:
        code = fn(list(argv))
    except SystemExit as e:  # argparse inside the delegate: it has printed its one line
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
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
                       ("init_from", args.init), ("task_args.teacher", args.teacher)):
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


def _cmd_quantize(args) -> int:
    from tinyllm.train.quantize_cmd import run_quantize_command

    return run_quantize_command(args)


def _cmd_prune(args) -> int:
    from tinyllm.train.prune_cmd import run_prune_command

    return run_prune_command(args)


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "eval": _cmd_eval, "prune": _cmd_prune,
            "quantize": _cmd_quantize}


def user_errors() -> tuple:
    """The exception types that mean bad input or a bad file (exit status 2, one line)."""
    from tinyllm.data.corpora import CorpusError
    from tinyllm.models.hf_config import HFCheckpointError
    from tinyllm.serialization import SafetensorsError
    from tinyllm.tokenizers.base import TokenizerError
    from tinyllm.train.checkpoint import CheckpointError
    from tinyllm.train.config import ConfigError

    return (ConfigError, CheckpointError, SafetensorsError, TokenizerError, CorpusError,
            HFCheckpointError)


def os_message(e: OSError) -> str:
    """One line for a file-system error: the file, the reason, what to do."""
    what = f"{e.filename}: " if e.filename else ""
    hint = {errno.ENOSPC: "free some space and try again",
            errno.EROFS: "the file system is read-only: use a writable folder",
            errno.EACCES: "permission denied: use a folder you can write to",
            errno.ENOENT: "no such file or folder: check the path"}.get(e.errno, "")
    reason = e.strerror or str(e)
    if isinstance(e, FileNotFoundError) and not e.filename:  # tinyllm's own: says what to do
        return str(e)
    return f"{what}{reason}" + (f" ({hint})" if hint and hint not in reason else "")


def guarded(fn, debug: bool = False) -> int:
    """Run ``fn()`` (a command), turning every error into one line and an exit status."""
    from tinyllm.train.trainer import TrainingDiverged, TrainingInterrupted

    if debug or os.environ.get("TINYLLM_DEBUG") == "1":
        return int(fn() or 0)
    try:
        return int(fn() or 0)
    except TrainingDiverged as e:
        return _error(str(e), 1)
    except TrainingInterrupted as e:
        print(f"tinyllm: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tinyllm: interrupted", file=sys.stderr)
        return 130
    except user_errors() as e:
        return _error(str(e))
    except OSError as e:
        return _error(os_message(e))
    except RecursionError:
        return _error("input nested too deeply to be read (a damaged or hostile file?); rerun "
                      "with --debug to see where", 2)
    except Exception as e:  # noqa: BLE001 - a bug: one line, and how to see the rest
        return _error(f"internal error {type(e).__name__}: {str(e).rstrip('.')}. This is a bug "
                      "in tinyllm; rerun with --debug for the traceback and report it", 3)


def main(argv=None) -> int:
    from tinyllm.backend import tune_malloc

    tune_malloc()  # glibc keeps freed activations (TINYLLM_MALLOPT=0: off)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"
    if debug:
        argv = argv[1:]
    if argv and argv[0] in DELEGATES:
        return guarded(lambda: _delegate(argv[0], argv[1:]), debug)
    args, status = parse(_parser(), argv)
    if args is None:
        return status
    return guarded(lambda: COMMANDS[args.command](args), debug or getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
