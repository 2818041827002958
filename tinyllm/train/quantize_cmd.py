"""``tinyllm quantize``: a trained run's weights as integers, in a run folder of their own.

    tinyllm quantize --ckpt runs/baby --bits 4 --group-size 32 --out runs/baby-q4
    tinyllm eval --ckpt runs/baby-q4 --eval-iters 400        # sample and eval read it as usual

The new folder holds the run's ``config.json``, ``state.json`` and tokenizer unchanged, and a
``model.safetensors`` whose Linear weights are int8 (or uint8, two 4-bit values per byte)
tensors beside their scales and zero points (``tinyllm.quant``); its header's
``quantization`` entry holds the settings, which ``build_from_checkpoint`` reads to rebuild the
quantized modules before loading the arrays. It has no optimizer state: it is for sampling and
evaluation, not for resuming the training.
"""

from __future__ import annotations

import json
from pathlib import Path

from tinyllm import serialization
from tinyllm.train import checkpoint as ckpt

__all__ = ["add_quantize_parser", "run_quantize_command", "quantize_run", "apply_saved_quantization"]

_KEYS = {"bits": int, "group_size": (int, type(None)), "symmetric": (bool, type(None)),
         "activations": bool, "embeddings": bool}


def add_quantize_parser(sub) -> None:
    from tinyllm.cli import positive_int

    q = sub.add_parser("quantize", help="write a run folder with the weights quantized "
                       "(int8 per channel, int4 group-wise, ...)")
    q.add_argument("--ckpt", required=True, metavar="DIR", help="a trained run folder")
    q.add_argument("--out", required=True, metavar="DIR", help="the new run folder")
    q.add_argument("--bits", type=positive_int, default=8, help="bits per weight, 2 to 8 "
                   "(default 8)")
    q.add_argument("--group-size", type=positive_int, default=None,
                   help="weights per scale along each row (default: one scale per channel)")
    z = q.add_mutually_exclusive_group()
    z.add_argument("--symmetric", dest="symmetric", action="store_true", default=None,
                   help="absmax scales, no zero point (the default for 8 bits)")
    z.add_argument("--zero-point", dest="symmetric", action="store_false",
                   help="a zero point per group (the default below 8 bits)")
    q.add_argument("--activations", action="store_true",
                   help="also quantize the Linear inputs to int8 (int8 x int8 -> int32 matmul)")
    q.add_argument("--embeddings", action="store_true", help="quantize the token embeddings too")
    q.add_argument("--debug", action="store_true", help="show the Python traceback of an error")


def run_quantize_command(args) -> int:
    out = quantize_run(args.ckpt, args.out, bits=args.bits, group_size=args.group_size,
                       symmetric=args.symmetric, activations=args.activations,
                       embeddings=args.embeddings)
    before = (Path(args.ckpt) / "model.safetensors").stat().st_size
    after = (out / "model.safetensors").stat().st_size
    print(f"{out}: model.safetensors {after:,} bytes ({before / after:.2f}x smaller than "
          f"{before:,}); read it with tinyllm eval --ckpt {out}")
    return 0


def quantize_run(run_dir, out, **settings) -> Path:
    """Quantize the weights of run folder ``run_dir`` into the new folder ``out`` (see the
    module docstring); ``settings`` are ``tinyllm.quant.quantize``'s keywords."""
    from tinyllm.quant import quantization_config, quantize
    from tinyllm.train.config import ConfigError
    from tinyllm.train.trainer import load_run

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new one")
    _, task, ck = load_run(run_dir)
    if "quantization" in ck.model_meta:
        raise ConfigError(f"{run_dir} is already quantized ({ck.model_meta['quantization']}); "
                          "quantize the original run instead")
    try:
        quantize(task.model, **settings)
    except ValueError as e:
        raise ConfigError(f"cannot quantize {run_dir}: {e}") from None
    meta = dict(ck.model_meta)
    meta["quantization"] = json.dumps(quantization_config(task.model))
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_json(out / "config.json", ck.config)
    task.tokenizer.save_pretrained(out)
    serialization.save(task.model.state_dict(), out / "model.safetensors", metadata=meta)
    state = {**ck.state, "quantized_from": str(run_dir)}
    ckpt.atomic_write_json(out / "state.json", state)  # last: it names the step of the weights
    return out


def apply_saved_quantization(model, meta: dict, where) -> None:
    """Quantize ``model`` as the weight file's header says, so that its arrays fit it."""
    from tinyllm.quant import quantize

    try:
        settings = json.loads(meta["quantization"])
        ok = isinstance(settings, dict) and set(settings) == set(_KEYS) and all(
            isinstance(settings[k], t) for k, t in _KEYS.items())
        if not ok:
            raise ValueError(f"expected the keys {sorted(_KEYS)}")
        quantize(model, **settings)
    except (ValueError, TypeError) as e:
        raise ckpt.CheckpointError(f"{where} is damaged: its quantization settings "
                                   f"{meta['quantization']!r} cannot be used ({e})") from None
