"""The benchmark suites: each ``suite_<name>(opts)`` returns a list of ``Table``.

gpt       the baby-config training step (tinyllm, NumPy by hand, PyTorch, DeZero when present)
mlp       784-1000-1000-10 ReLU MLP, SGD step (tinyllm, NumPy by hand, PyTorch, DeZero)
generate  200 greedy tokens with and without the key/value cache
bpe       byte-level BPE training, 1,000 merges on Tiny Shakespeare
memory    peak memory of one training step (tracemalloc and RSS), fresh subprocesses
matmul    float32 GEMM GFLOP/s (the machine's ceiling and the baby step's shapes)
malloc    tinyllm's glibc ``mallopt`` tuning on and off (TINYLLM_MALLOPT), subprocesses
gpt-solo  the baby step with each implementation alone in its own process
fast-paths  the baby step with each Function's fast path on and off (``tinyllm.bench.fast_paths``)
data-parallel  the baby step on 1 and 2 MPI processes, ZeRO-1, the all-reduce's bytes

memory, malloc and gpt-solo live in ``tinyllm.bench.isolated``, data-parallel in
``tinyllm.bench.data_parallel``, bpe and matmul in ``tinyllm.bench.throughput``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyllm.bench.harness import Table, interleave

BABY = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, batch=12)
QUICK = dict(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, batch=2)
LR, BETAS, WD, CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0


@dataclass
class Options:
    rounds: int = 30
    warmup: int = 3
    threads: int | None = None
    quick: bool = False
    device: str = "cpu"


def have_torch() -> bool:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def have_dezero() -> bool:
    try:
        _import_dezero()
    except ImportError:
        return False
    return True


def _import_dezero():
    if not hasattr(np, "int"):  # DeZero 0.0.13 uses the alias that NumPy 1.24 removed
        np.int = int
    import dezero  # noqa: PLC0415

    return dezero


def device_sync(opts):
    """A function that waits for the GPU's queued work (None on the CPU), for the timers."""
    if opts.device != "cuda":
        return None
    import cupy  # noqa: PLC0415

    fns = [cupy.cuda.Device().synchronize]
    if have_torch():
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            fns.append(torch.cuda.synchronize)
    return lambda: [f() for f in fns]


def _ms(x):
    return f"{x * 1e3:.1f}" if x < 10 else f"{x:.2f} s"


def _step_table(title, stats, baseline, flops=None, notes=()):
    cols = ["implementation", "median ms", "min ms", "max ms", f"ratio to {baseline}"]
    if flops:
        cols.append("GFLOP/s")
    t = Table(title, cols, notes=list(notes))
    base = stats[baseline].median
    for name, s in stats.items():
        row = [name, f"{s.median * 1e3:.1f}", f"{s.min * 1e3:.1f}", f"{s.max * 1e3:.1f}",
               f"{s.median / base:.2f}x"]
        if flops:
            row.append(f"{flops / s.median / 1e9:.1f}")
        t.rows.append(row)
    return t


# ---------------------------------------------------------------------------- GPT step
def gpt_flops(c: dict) -> float:
    """nanoGPT's estimate per training step: (6 N + 12 L H D T) * T * B with N the parameters
    without the position table (the tied token table counts once, as the LM head)."""
    v, t, nl, h, ce = (c[k] for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"))
    n = v * ce + nl * (12 * ce * ce + 13 * ce) + 2 * ce
    return (6 * n + 12 * nl * h * (ce // h) * t) * t * c["batch"]


def make_gpt(c: dict, seed=0, device="cpu", activation="gelu_tanh", threads=1, loops_on_threads=True):
    """tinyllm GPT (tanh GELU unless ``activation`` says "gelu"), its optimizer, the weights as
    NumPy, and one train-step closure; with ``threads`` > 1 the step computes that many parts
    of the batch at once (``tinyllm.train.threads``, as ``tinyllm train --set threads=N``), and
    (unless ``loops_on_threads`` is False) the per-parameter loops after them too: the sum of
    the parts' gradients, the clipping and AdamW (``tinyllm.workers``)."""
    import tinyllm as tl  # noqa: PLC0415
    from tinyllm import blas, workers  # noqa: PLC0415
    from tinyllm.models.gpt import GPT, GPTConfig  # noqa: PLC0415
    from tinyllm.optim import clip_grad_norm_  # noqa: PLC0415
    from tinyllm.train.data_parallel import shard_batch  # noqa: PLC0415
    from tinyllm.train.threads import backward_on_threads  # noqa: PLC0415

    tl.manual_seed(seed)
    cfg = GPTConfig(**{k: v for k, v in c.items() if k != "batch"}, activation=activation)
    model = GPT(cfg)
    state = {k: _host(v) for k, v in model.state_dict().items()}
    if device != "cpu":
        model.to(device)
    opt = model.configure_optimizers(weight_decay=WD, lr=LR, betas=BETAS)
    params = [p for p in model.parameters() if p.requires_grad]
    rng = np.random.default_rng(seed)
    x = rng.integers(0, c["vocab_size"], (c["batch"], c["block_size"]))
    y = rng.integers(0, c["vocab_size"], (c["batch"], c["block_size"]))
    xd, yd = (tl.tensor(a, device=device) for a in (x, y))
    if threads == 1:
        losses = [lambda: model(xd, yd)[1]]
    else:  # the trainer's parts (rows in order), each weighted by its share of the mean
        losses = [lambda p=p: model(p["x"], p["y"])[1] * (1 / threads)
                  for p in shard_batch({"x": xd, "y": yd}, 0, 1, threads)]

    def step():
        # the whole step: no BLAS worker left spinning into the next one, and the clipping
        # and the optimizer's per-parameter loops on the threads too
        with blas.limit(1 if threads > 1 else None), workers.use(threads if loops_on_threads else 1):
            opt.zero_grad()
            loss = sum(backward_on_threads(losses, threads))
            clip_grad_norm_(params, CLIP)
            opt.step()
        return loss

    return cfg, model, state, (x, y), step


def _host(a):
    a = getattr(a, "data", a)
    return a.get() if hasattr(a, "get") else np.array(a)


def make_numpy_gpt(cfg, state, batch):
    from tinyllm.bench.numpy_gpt import NumpyGPT  # noqa: PLC0415

    ref = NumpyGPT.from_config(cfg, lr=LR, betas=BETAS, weight_decay=WD, grad_clip=CLIP)
    ref.load_state(state)
    x, y = batch
    return lambda: ref.train_step(x, y)


def make_torch_gpt(cfg, state, batch, device="cpu"):
    import torch  # noqa: PLC0415

    from tinyllm.bench.torch_ref import TorchGPT, make_gpt_optimizer, torch_state  # noqa: PLC0415

    model = TorchGPT.from_config(cfg).to(device)
    model.load_state_dict(torch_state(state, device))
    opt = make_gpt_optimizer(model, LR, BETAS, WD)
    x, y = (torch.tensor(a, device=device) for a in batch)

    def step():
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()

    return step


def make_dezero_gpt(cfg, state, batch):
    from tinyllm.bench.dezero_gpt import make_dezero_gpt as make  # noqa: PLC0415

    return make(cfg, state, batch, lr=LR, betas=BETAS, weight_decay=WD, grad_clip=CLIP)[2]


def suite_gpt(opts: Options) -> list:
    c = QUICK if opts.quick else BABY
    cfg, _, state, batch, tl_step = make_gpt(c, device=opts.device)
    fns = {"tinyllm": tl_step}
    notes = [f"config: vocab {c['vocab_size']}, block {c['block_size']}, batch {c['batch']}, "
             f"{c['n_layer']} layers, {c['n_head']} heads, {c['n_embd']} wide, dropout 0, "
             "GELU tanh approximation in all implementations, AdamW (lr 1e-3, betas 0.9/0.99, "
             "wd 0.1 on matrices) + global-norm clipping 1.0, float32, same initial weights",
             f"FLOP per step (nanoGPT's 6N + 12LHDT per token): {gpt_flops(c) / 1e9:.3f} GFLOP"]
    if opts.device == "cpu":
        fns["numpy by hand"] = make_numpy_gpt(cfg, state, batch)
    if have_torch():
        fns["pytorch eager"] = make_torch_gpt(cfg, state, batch, opts.device)
    if opts.device == "cpu" and have_dezero():
        fns["dezero"] = make_dezero_gpt(cfg, state, batch)
        notes.append("DeZero 0.0.13 (tinyllm/bench/dezero_gpt.py): its autograd and Adam (+ "
                     "decoupled decay of the matrices, its ClipGrad hook); LayerNorm, GELU and "
                     "attention composed of its Functions, attention looping over sequences "
                     "and heads (its matmul is 2-D only), GELU's cube as x * x * x (x ** 3 "
                     "hits NumPy's slow float power for negative bases); float32 weights, but "
                     "its backward runs in float64 as installed (softmax_cross_entropy's, "
                     "Tanh's and Pow's gradients promote under NumPy 2)")
    elif opts.device == "cpu":
        notes.append("DeZero not installed: skipped (pip install dezero)")
    stats = interleave(fns, opts.rounds, opts.warmup, device_sync(opts))
    if "dezero" in stats:
        notes.append(f"DeZero's median / tinyllm's: "
                     f"{stats['dezero'].median / stats['tinyllm'].median:.2f}x")
    base = "pytorch eager" if "pytorch eager" in stats else "numpy by hand"
    return [_step_table(f"GPT training step ({opts.device})", stats, base, gpt_flops(c), notes)]


# ---------------------------------------------------------------------------- MLP step
def make_mlp(sizes, batch, seed=0, device="cpu"):
    import tinyllm as tl  # noqa: PLC0415
    from tinyllm import functional as F  # noqa: PLC0415
    from tinyllm import nn  # noqa: PLC0415
    from tinyllm.optim import SGD  # noqa: PLC0415

    tl.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    state = {k: _host(v) for k, v in model.state_dict().items()}
    if device != "cpu":
        model.to(device)
    opt = SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch)
    xd, yd = tl.tensor(x, device=device), tl.tensor(y, device=device)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(xd), yd)
        loss.backward()
        opt.step()
        return loss

    return model, state, (x, y), step


def suite_mlp(opts: Options) -> list:
    sizes, batch = ((64, 128, 128, 10), 16) if opts.quick else ((784, 1000, 1000, 10), 100)
    _, state, (x, y), tl_step = make_mlp(sizes, batch, device=opts.device)
    fns = {"tinyllm": tl_step}
    notes = [f"sizes {'-'.join(map(str, sizes))}, ReLU, batch {batch}, mean cross-entropy, "
             "SGD lr 0.01, float32"]
    if opts.device == "cpu":
        from tinyllm.bench.numpy_gpt import NumpyMLP  # noqa: PLC0415

        ref = NumpyMLP(sizes, lr=0.01)
        ref.load_state(state)
        fns["numpy by hand"] = lambda: ref.train_step(x, y)
    if have_torch():
        import torch  # noqa: PLC0415

        from tinyllm.bench.torch_ref import TorchMLP, torch_state  # noqa: PLC0415

        tm = TorchMLP(sizes).to(opts.device)
        tm.load_state_dict(torch_state(state, opts.device))
        topt = torch.optim.SGD(tm.parameters(), lr=0.01)
        xt, yt = torch.tensor(x, device=opts.device), torch.tensor(y, device=opts.device)

        def torch_step():
            topt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tm(xt), yt).backward()
            topt.step()

        fns["pytorch eager"] = torch_step
    if opts.device == "cpu" and have_dezero():
        fns["dezero"] = _dezero_mlp(sizes, state, x, y)
        notes.append("DeZero's weights cast to float32 (under NumPy 2 its initialiser makes "
                     "float64)")
    elif opts.device == "cpu":
        notes.append("DeZero not installed: skipped (pip install dezero)")
    stats = interleave(fns, opts.rounds, opts.warmup, device_sync(opts))
    base = "pytorch eager" if "pytorch eager" in stats else "numpy by hand"
    flops = 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return [_step_table(f"MLP training step ({opts.device})", stats, base, flops, notes)]


def _dezero_mlp(sizes, state, x, y):
    _import_dezero()
    import dezero.functions as DF  # noqa: PLC0415
    from dezero import models, optimizers  # noqa: PLC0415

    m = models.MLP(tuple(sizes[1:]))
    m(x)  # DeZero initialises its weights on the first call
    for i in range(len(sizes) - 1):
        layer = getattr(m, f"l{i}")
        layer.W.data = state[f"{2 * i}.weight"].T.astype(np.float32)  # DeZero's W is (in, out)
        layer.b.data = state[f"{2 * i}.bias"].astype(np.float32)
    opt = optimizers.SGD(lr=0.01).setup(m)

    def step():
        loss = DF.softmax_cross_entropy(m(x), y)
        m.cleargrads()
        loss.backward()
        opt.update()

    return step


# ---------------------------------------------------------------------------- generation
def suite_generate(opts: Options) -> list:
    new = 16 if opts.quick else 200
    base = QUICK if opts.quick else BABY
    rounds = max(2, min(opts.rounds, 2 if opts.quick else 5))
    t = Table(f"Generation, {new} greedy tokens, batch 1, 1-token prompt ({opts.device})",
              ["model", "with cache ms/token", "without cache ms/token", "speedup",
               "same tokens"])
    blocks = [new + 1] if opts.quick else [256, base["block_size"]]
    for block in blocks:
        c = dict(base, block_size=block)
        _, model, _, _, _ = make_gpt(c, device=opts.device)
        model.eval()
        prompt = np.zeros((1, 1), dtype=np.int64)
        out = {}

        def run(cache, key, model=model, prompt=prompt, out=out):
            out[key] = model.generate(prompt, new, use_cache=cache)

        stats = interleave({"cache": lambda: run(True, "c"), "nocache": lambda: run(False, "n")},
                           rounds, warmup=1, sync=device_sync(opts))
        same = bool(np.array_equal(out["c"], out["n"]))
        assert same, "generation with and without the KV cache gave different tokens"
        sc, sn = stats["cache"].median, stats["nocache"].median
        t.rows.append([f"baby, block_size {block}", f"{sc / new * 1e3:.2f}",
                       f"{sn / new * 1e3:.2f}", f"{sn / sc:.1f}x", "yes" if same else "NO"])
    t.notes.append("medians of whole generate() calls divided by the tokens; random weights")
    if not opts.quick:
        t.notes.append(f"block_size {base['block_size']} (the preset) cannot hold 201 positions:"
                       " after 64 the cache is dropped and the context recomputed (nanoGPT's "
                       "cropping), so the cache helps only the first 63 tokens")
    return [t]
