"""The memory account of a GPT training step: what a formula predicts, what tracemalloc measures.

A training step holds four kinds of arrays (float32, 4 bytes a value; P parameters):

    parameters        P                      the weights
    gradients         P                      one .grad per weight, made during backward
    optimizer state   k P                    AdamW's two moments (k = 2), SGD with momentum 1
    activations       L a + h                what the graph keeps from forward for backward

The activations of one pre-LayerNorm block on a batch B x T of width C with H heads are what its
Functions keep, counted in this engine (``ACTIVATION_ARRAYS``): 25 arrays of B T C values
(the inputs of the 4 Linears are 1 + 1 + 1 + 4, GELU keeps x and Phi(x) of the 4C hidden
layer, 8; q, k, v, 3; two LayerNorms' x-hat, 2; the two residual adds' inputs, 4;
attention's output before its heads are merged, 1), one of B H T T (the attention
probabilities) and two of B T (the LayerNorms' 1 / sigma). The rest keeps the logits and
their softmax, 2 B T V, the token embeddings, ln_f's input, x-hat and output, 4 B T C. So
activations grow with L B T C and with T^2: at block 256 they dwarf the baby GPT's weights.

Checkpointing every block (``GPTConfig.checkpoint_blocks``, ``tl.checkpoint``) keeps only each
block's input, B T C, and rebuilds one block's activations at a time during backward: the
activation term becomes L B T C + a + h, for one more forward pass.

The peak of a step is reached early in backward: parameters, optimizer state and all
activations, plus the gradients being formed (the logits' gradient, B T V, those inside one
block, about 16 B T C, and as many parameter gradients as exist by then: ``step_peak`` counts
all of them, an upper bound).

    acc = memory_account(config, batch_size=12)     # a MemoryAccount, in bytes
    acc.rows()                                      # (name, bytes) pairs, for a table
    peak, out = measure_peak(fn, *args)             # tracemalloc's peak of fn(*args), NumPy
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

__all__ = ["ACTIVATION_ARRAYS", "MemoryAccount", "gpt_parameter_count", "memory_account",
           "measure_peak"]

# arrays one Transformer block keeps for backward, by size: (B T C, B H T T, B T)
ACTIVATION_ARRAYS = {"btc": 25, "bhtt": 1, "bt": 2}
BACKWARD_BTC = 16  # the gradient arrays alive at once inside one block's backward (measured)
OPTIMIZER_SLOTS = {"adamw": 2, "adam": 2, "sgd": 1, "sgd-nomomentum": 0}


def gpt_parameter_count(config) -> int:
    """P of a GPT (tied head, biases as in ``config.bias``): V C + T_max C + L (12 C^2 + 13 C)
    + 2 C, less the biases when there are none."""
    c, L = config.n_embd, config.n_layer
    per_block = 12 * c * c + (13 * c if config.bias else 2 * c)   # 4 weights; biases, LN
    return config.vocab_size * c + config.block_size * c + L * per_block + \
        (2 * c if config.bias else c)


@dataclass
class MemoryAccount:
    """Bytes of each part of one training step (see the module docstring)."""

    parameters: int
    gradients: int
    optimizer_state: int
    activations_per_block: int
    block_inputs: int        # L B T C: what checkpointing keeps of the blocks
    head: int                # the logits, their softmax, the embeddings, ln_f
    logits_grad: int
    backward_transient: int  # the gradients being formed inside one block, 16 B T C
    n_layer: int
    checkpoint_blocks: bool

    @property
    def activations(self) -> int:
        """What the graph holds at the end of forward."""
        if self.checkpoint_blocks:
            return self.block_inputs + self.head
        return self.n_layer * self.activations_per_block + self.head

    @property
    def step_peak(self) -> int:
        """The predicted peak of forward + backward + update (an upper bound: all gradients)."""
        recomputed = self.activations_per_block if self.checkpoint_blocks else 0
        return (self.parameters + self.optimizer_state + self.gradients + self.activations
                + recomputed + self.logits_grad + self.backward_transient)

    def rows(self) -> list:
        return [("parameters", self.parameters), ("gradients", self.gradients),
                ("optimizer state", self.optimizer_state),
                ("activations, one block", self.activations_per_block),
                ("activations, all (end of forward)", self.activations),
                ("predicted peak of a step", self.step_peak)]


def memory_account(config, batch_size: int, seq_len=None, optimizer: str = "adamw",
                   checkpoint_blocks=None, bytes_per_value: int = 4) -> MemoryAccount:
    """The memory of one training step of a GPT ``config`` on ``batch_size`` sequences of
    ``seq_len`` tokens (default ``config.block_size``). ``checkpoint_blocks`` None reads the
    config's setting."""
    if optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"optimizer {optimizer!r} is unknown; choose from "
                         f"{', '.join(OPTIMIZER_SLOTS)}")
    t = config.block_size if seq_len is None else int(seq_len)
    b, c, h, v, n_layer = batch_size, config.n_embd, config.n_head, config.vocab_size, \
        config.n_layer
    if checkpoint_blocks is None:
        checkpoint_blocks = bool(getattr(config, "checkpoint_blocks", False))
    p = gpt_parameter_count(config) * bytes_per_value
    a = ACTIVATION_ARRAYS
    per_block = (a["btc"] * b * t * c + a["bhtt"] * b * h * t * t + a["bt"] * b * t)
    acc = MemoryAccount(
        parameters=p, gradients=p, optimizer_state=OPTIMIZER_SLOTS[optimizer] * p,
        activations_per_block=per_block * bytes_per_value,
        block_inputs=n_layer * b * t * c * bytes_per_value,
        head=(2 * b * t * v + 4 * b * t * c) * bytes_per_value,
        logits_grad=b * t * v * bytes_per_value,
        backward_transient=BACKWARD_BTC * b * t * c * bytes_per_value, n_layer=n_layer,
        checkpoint_blocks=bool(checkpoint_blocks))
    return acc


def measure_peak(fn, *args):
    """(peak bytes, result) of ``fn(*args)``: the largest memory that NumPy and Python
    allocated at once while it ran, above what was allocated before (tracemalloc; host
    arrays only, so the CPU)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    try:
        out = fn(*args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peak - base, out


def compare_checkpointing(block_size: int = 256, batch_size: int = 12, steps: int = 5,
                          preset: str = "baby-shakespeare", vocab_size: int = 65) -> dict:
    """The measured peak (tracemalloc) and time of one AdamW training step of the ``preset``
    GPT at ``block_size``, plain and with every block checkpointed, beside the predictions."""
    import gc
    import time

    from tinyllm.backend import np
    from tinyllm.models import GPT, GPTConfig
    from tinyllm.optim import AdamW

    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, vocab_size, (batch_size, block_size)) for _ in range(2))
    out = {}
    for ck in (False, True):
        cfg = GPTConfig.from_preset(preset, vocab_size=vocab_size, block_size=block_size,
                                    checkpoint_blocks=ck)
        model = GPT(cfg)
        opt = AdamW(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            opt.zero_grad()
            model(x, y)[1].backward()
            opt.step()

        step()  # the optimizer's moments exist from here on, as in a running training
        for p in model.parameters():
            p.grad = None
        gc.collect()
        peak, _ = measure_peak(step)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        acc = memory_account(cfg, batch_size)
        out[ck] = {"peak": peak, "predicted": acc.step_peak - acc.parameters - acc.optimizer_state,
                   "step_s": sorted(times)[len(times) // 2]}
    return out


def main(argv=None) -> int:
    """``python -m tinyllm.memory [--block 256] [--batch 12]``: checkpointing's measured effect."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tinyllm.memory", description=main.__doc__)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is shown)")
    args = p.parse_args(argv)
    r = compare_checkpointing(args.block, args.batch, args.steps)
    for ck, v in r.items():
        print(f"checkpoint_blocks={ck!s:5}: peak {v['peak'] / 2 ** 20:8.2f} MiB measured, "
              f"{v['predicted'] / 2 ** 20:8.2f} MiB predicted; step {v['step_s'] * 1000:7.1f} ms")
    a, b = r[False], r[True]
    print(f"block {args.block}, batch {args.batch}: peak {100 * (1 - b['peak'] / a['peak']):.1f}% "
          f"lower with checkpointing, step {b['step_s'] / a['step_s']:.2f}x the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
