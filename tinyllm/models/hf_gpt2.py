"""Read and write Hugging Face GPT-2 checkpoints (``config.json`` + ``model.safetensors``).

tinyllm's GPT is GPT-2's architecture, so only the names and two layout details differ:

=====================================  ========================================
Hugging Face (``transformer.`` prefix)  tinyllm
=====================================  ========================================
``wte.weight``, ``wpe.weight``          ``wte.weight``, ``wpe.weight``
``h.{i}.ln_1`` / ``ln_2``               ``blocks.{i}.ln_1`` / ``ln_2``
``h.{i}.attn.c_attn``                   ``blocks.{i}.attn.qkv``  (weight transposed)
``h.{i}.attn.c_proj``                   ``blocks.{i}.attn.proj`` (weight transposed)
``h.{i}.mlp.c_fc`` / ``c_proj``         ``blocks.{i}.mlp.fc`` / ``proj`` (transposed)
``ln_f``                                ``ln_f``
``lm_head.weight`` (if present)         tied to ``wte.weight``
=====================================  ========================================

GPT-2 stores its projections in ``Conv1D`` layers whose weight is (in, out), the transpose of a
Linear's (out, in). The old ``attn.bias`` / ``attn.masked_bias`` buffers (the causal mask) are
ignored. GPT-2's activation is ``gelu_new``, the tanh approximation of GELU.
"""

from __future__ import annotations

import json
import os

from tinyllm import atomic, serialization
from tinyllm.backend import np
from tinyllm.models.hf_config import (
    HFCheckpointError,
    model_from_state,
    read_config,
    refuse,
    typed,
)

__all__ = ["load_gpt2", "save_gpt2", "config_from_hf", "config_to_hf", "hf_to_tinyllm",
           "tinyllm_to_hf", "HFCheckpointError"]

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
_ACT_FROM_HF = {"gelu_new": "gelu_new", "gelu": "gelu", "relu": "relu",
                "gelu_pytorch_tanh": "gelu_tanh"}
_ACT_TO_HF = {"gelu_new": "gelu_new", "gelu": "gelu", "relu": "relu",
              "gelu_tanh": "gelu_pytorch_tanh"}
# tinyllm name inside a block -> (Hugging Face name inside h.{i}, transposed?)
_BLOCK = {
    "ln_1.weight": ("ln_1.weight", False), "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True), "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True), "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False), "ln_2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True), "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True), "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
_TOP = {"wte.weight": "wte.weight", "wpe.weight": "wpe.weight", "ln_f.weight": "ln_f.weight",
        "ln_f.bias": "ln_f.bias"}


def _name_map(n_layer: int) -> dict:
    """tinyllm name -> (Hugging Face name without the ``transformer.`` prefix, transposed?)."""
    out = {k: (v, False) for k, v in _TOP.items()}
    for i in range(n_layer):
        for k, (v, t) in _BLOCK.items():
            out[f"blocks.{i}.{k}"] = (f"h.{i}.{v}", t)
    return out


# ---------------------------------------------------------------------------- config
def config_from_hf(cfg: dict, where: str = CONFIG_NAME):
    """A ``GPTConfig`` from a Hugging Face GPT-2 ``config.json`` dict. A missing, wrongly typed
    or unsupported key raises ``HFCheckpointError`` naming ``where`` and the key."""
    from tinyllm.models.gpt import GPTConfig  # noqa: PLC0415

    if not isinstance(cfg, dict):
        raise HFCheckpointError(f"{where}: holds a JSON {type(cfg).__name__}, not a config object")
    model_type = typed(cfg, "model_type", str, where, "gpt2")
    if model_type != "gpt2":
        raise HFCheckpointError(f"{where}: model_type is {model_type!r}; GPT.from_pretrained "
                                "reads GPT-2 checkpoints (model_type 'gpt2')")
    sizes = {k: typed(cfg, k, int, where) for k in ("vocab_size", "n_positions", "n_embd",
                                                       "n_layer", "n_head")}
    act = typed(cfg, "activation_function", str, where, "gelu_new")
    if act not in _ACT_FROM_HF:
        raise HFCheckpointError(f"{where}: activation_function {act!r} is not supported; "
                                f"tinyllm has {sorted(_ACT_FROM_HF)}")
    refuse(cfg, where, "GPT", {
        "n_inner": (None, 4 * sizes["n_embd"]), "add_cross_attention": (False,),
        "scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,),
        "reorder_and_upcast_attn": (False,), "tie_word_embeddings": (True,)})
    dropout = typed(cfg, "resid_pdrop", float, where, 0.0)
    eps = typed(cfg, "layer_norm_epsilon", float, where, 1e-5)
    try:
        return GPTConfig(vocab_size=sizes["vocab_size"], block_size=sizes["n_positions"],
                         n_layer=sizes["n_layer"], n_head=sizes["n_head"], n_embd=sizes["n_embd"],
                         dropout=dropout, bias=True, activation=_ACT_FROM_HF[act],
                         layer_norm_eps=eps)
    except (TypeError, ValueError) as e:
        raise HFCheckpointError(f"{where}: {e}") from None


def config_to_hf(config) -> dict:
    """The Hugging Face GPT-2 ``config.json`` dict for a ``GPTConfig``."""
    if not config.bias:
        raise ValueError("GPT-2 checkpoints always have biases; a GPT with bias=False cannot be "
                         "saved in Hugging Face's GPT-2 format")
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
        "n_inner": None, "activation_function": _ACT_TO_HF[config.activation],
        "layer_norm_epsilon": config.layer_norm_eps, "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout, "attn_pdrop": config.dropout, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": True, "use_cache": True, "dtype": "float32",
        "bos_token_id": None, "eos_token_id": None,
    }


# ---------------------------------------------------------------------------- weights
def hf_to_tinyllm(weights: dict, config, where: str = WEIGHTS_NAME) -> dict:
    """Map a GPT-2 state dict (HF names, Conv1D layouts) to tinyllm's names and layouts.

    Checks every key and shape first; raises naming ``where`` and the key on any problem.
    """
    plain = {}
    for key, arr in weights.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name.endswith((".attn.bias", ".attn.masked_bias")) and name.startswith("h."):
            continue  # the causal-mask buffers of old checkpoints
        if name in plain:
            raise HFCheckpointError(f"{where}: {key!r} appears both with and without 'transformer.'")
        plain[name] = (key, arr)
    lm_head = plain.pop("lm_head.weight", None)
    names = _name_map(config.n_layer)
    expected_hf = {hf for hf, _ in names.values()}
    missing = sorted(f"transformer.{n}" for n in expected_hf - set(plain))
    unexpected = sorted(plain[n][0] for n in set(plain) - expected_hf)
    c, v, t = config.n_embd, config.vocab_size, config.block_size
    shapes = {"wte.weight": (v, c), "wpe.weight": (t, c)}
    for i in range(config.n_layer):
        shapes.update({f"h.{i}.attn.c_attn.weight": (c, 3 * c), f"h.{i}.attn.c_attn.bias": (3 * c,),
                       f"h.{i}.attn.c_proj.weight": (c, c), f"h.{i}.mlp.c_fc.weight": (c, 4 * c),
                       f"h.{i}.mlp.c_fc.bias": (4 * c,), f"h.{i}.mlp.c_proj.weight": (4 * c, c)})
    wrong = [f"{plain[n][0]}: expected {shapes.get(n, (c,))}, got {tuple(plain[n][1].shape)}"
             for n in sorted(expected_hf & set(plain))
             if tuple(plain[n][1].shape) != shapes.get(n, (c,))]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong)}")
    if not problems and lm_head is not None:
        key, arr = lm_head
        if tuple(arr.shape) != (v, c) or not np.array_equal(arr, plain["wte.weight"][1]):
            problems.append(f"{key!r} differs from the token embedding; tinyllm's GPT ties the "
                            "LM head to wte (tie_word_embeddings=True)")
    if problems:
        raise HFCheckpointError(f"{where} does not hold the GPT-2 of its config.json (nothing was "
                         "loaded): " + " | ".join(problems))
    out = {}
    for ours, (hf, transposed) in names.items():
        arr = plain[hf][1]
        out[ours] = np.ascontiguousarray(arr.T) if transposed else arr
    return out


def tinyllm_to_hf(state: dict, n_layer: int) -> dict:
    """tinyllm's state dict -> GPT-2's names (with ``transformer.``) and Conv1D layouts."""
    out = {}
    for ours, (hf, transposed) in _name_map(n_layer).items():
        arr = np.asarray(state[ours])
        out[f"transformer.{hf}"] = np.ascontiguousarray(arr.T) if transposed else arr
    return out


# ---------------------------------------------------------------------------- files
def load_gpt2(cls, path, dtype="float32"):
    """Build ``cls(config)`` from a Hugging Face GPT-2 directory and load its weights."""
    path = os.fspath(path)
    cfg_path, w_path = os.path.join(path, CONFIG_NAME), os.path.join(path, WEIGHTS_NAME)
    for f in (cfg_path, w_path):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"GPT.from_pretrained({path!r}): {f} not found (a Hugging "
                                    f"Face GPT-2 directory holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = config_from_hf(read_config(cfg_path), cfg_path)
    weights = hf_to_tinyllm(serialization.load(w_path), config, w_path)
    return model_from_state(cls, config, weights, dtype)


def save_gpt2(model, path) -> None:
    """Write ``model`` (a tinyllm GPT) as a Hugging Face GPT-2 directory.

    Both files are written atomically (temporary file, then rename).
    """
    path = os.fspath(path)
    hf_cfg = config_to_hf(model.config)
    weights = tinyllm_to_hf(model.state_dict(), model.config.n_layer)
    os.makedirs(path, exist_ok=True)
    serialization.save(weights, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
    atomic.write_text(os.path.join(path, CONFIG_NAME), json.dumps(hf_cfg, indent=2) + "\n")
