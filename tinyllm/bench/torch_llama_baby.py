"""The ``baby-llama`` preset trained as Hugging Face ``transformers``' ``LlamaForCausalLM``.

A check of the Llama quality figures in docs/benchmarks.md ("Today's decoder"): the model
tinyllm initialises for the preset is written with ``save_pretrained`` and read back by
``transformers``, then trained in PyTorch on the same batches (``task.batch`` with the trainer's
seeded generators) with the same recipe (the preset's AdamW settings, warm-up and cosine
schedule, clipping when ``grad_clip`` > 0) and evaluated on the batches ``tinyllm eval`` draws,
by ``tinyllm.bench.torch_baby``'s loop. Only the implementation differs, so a gap between this
and ``tinyllm train --preset baby-llama`` is tinyllm's.

    python -m tinyllm.bench.torch_llama_baby --seed 1 [--eval-iters 400] [--threads 1]

Prints one JSON line like ``tinyllm.bench.torch_baby``. Needs PyTorch and transformers (neither
is a tinyllm dependency).
"""

from __future__ import annotations

import json
import tempfile


def main(argv=None) -> int:
    import torch  # noqa: PLC0415
    from transformers import LlamaForCausalLM  # noqa: PLC0415

    import tinyllm as tl  # noqa: PLC0415
    from tinyllm.bench.torch_baby import train_and_evaluate, twin_config  # noqa: PLC0415
    from tinyllm.train.tasks import build_task  # noqa: PLC0415

    args, cfg = twin_config("baby-llama", __doc__, argv, torch)

    class WithLoss(torch.nn.Module):  # (logits, loss) as torch_baby's loop expects
        def __init__(self, llama):
            super().__init__()
            self.llama = llama

        def forward(self, x, y):
            logits = self.llama(x).logits
            return logits, torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

    tl.manual_seed(cfg.seed)  # as the trainer does before it builds the model
    task = build_task(cfg)
    with tempfile.TemporaryDirectory() as folder:  # tinyllm's initial weights, in transformers
        task.model.save_pretrained(folder)
        model = WithLoss(LlamaForCausalLM.from_pretrained(folder, attn_implementation="sdpa"))
    print(json.dumps(train_and_evaluate(model, task, cfg, args.eval_iters, torch)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
