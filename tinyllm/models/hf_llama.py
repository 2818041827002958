"""Read and write Hugging Face Llama checkpoints (``config.json`` + ``model.safetensors``).

tinyllm's Llama is the architecture of ``transformers``' ``LlamaForCausalLM``; only the names
differ (Linear weights are (out, in) in both, nothing is transposed):

=================================================  ===========================================
Hugging Face                                        tinyllm
=================================================  ===========================================
``model.embed_tokens.weight``                       ``wte.weight``
``model.layers.{i}.input_layernorm.weight``         ``blocks.{i}.attn_norm.weight``
``model.layers.{i}.self_attn.{q,k,v,o}_proj.weight``  ``blocks.{i}.attn.{q,k,v,o}_proj.weight``
``model.layers.{i}.post_attention_layernorm.weight``  ``blocks.{i}.mlp_norm.weight``
``model.layers.{i}.mlp.{gate,up,down}_proj.weight``  ``blocks.{i}.mlp.{gate,up,down}_proj.weight``
``model.norm.weight``                               ``norm_f.weight``
``lm_head.weight`` (absent when tied)               ``lm_head.weight`` (None when tied)
=================================================  ===========================================

The RoPE of the checkpoints is rotate-half (``tinyllm.rope``); old files may hold its
``rotary_emb.inv_freq`` buffers, which are recomputed and ignored. A sharded checkpoint
(``model.safetensors.index.json`` and its shards) loads too. Options tinyllm's Llama does not
implement are refused by name (``UNSUPPORTED``), never silently dropped.
"""

from __future__ import annotations

import json
import os

from tinyllm import atomic, json_files, serialization
from tinyllm.backend import np
from tinyllm.models.hf_config import HFCheckpointError, model_from_state, read_config, typed

__all__ = ["load_llama", "save_llama", "config_from_hf", "config_to_hf", "hf_to_tinyllm",
           "tinyllm_to_hf", "UNSUPPORTED", "HFCheckpointError"]

CONFIG_NAME, WEIGHTS_NAME, INDEX_NAME = ("config.json", "model.safetensors",
                                         "model.safetensors.index.json")
_BLOCK = {  # tinyllm name inside blocks.{i} -> Hugging Face name inside model.layers.{i}
    "attn_norm.weight": "input_layernorm.weight",
    **{f"attn.{p}_proj.weight": f"self_attn.{p}_proj.weight" for p in "qkvo"},
    "mlp_norm.weight": "post_attention_layernorm.weight",
    **{f"mlp.{p}_proj.weight": f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")},
}

# config.json key -> (is the value one tinyllm's Llama cannot run?, what it would need)
UNSUPPORTED = {
    "hidden_act": (lambda v: v not in (None, "silu"), "SwiGLU with SiLU only"),
    "attention_bias": (bool, "biases in the attention projections"),
    "mlp_bias": (bool, "biases in the feed-forward projections"),
    "rope_scaling": (lambda v: v is not None, "a RoPE scaling variant (linear, dynamic, yarn, "
                     "llama3, ...); only the plain rotation is implemented"),
    "sliding_window": (lambda v: v is not None, "sliding-window attention"),
    "use_sliding_window": (bool, "sliding-window attention"),
    "layer_types": (lambda v: v is not None and any(t != "full_attention" for t in v),
                    "layers other than full attention"),
    "attention_chunk_size": (lambda v: v is not None, "chunked attention"),
    "no_rope_layers": (lambda v: bool(v), "layers without RoPE"),
    "quantization_config": (lambda v: v is not None, "quantized weights"),
}


def _name_map(n_layer: int, tied: bool) -> dict:
    """tinyllm name -> Hugging Face name."""
    out = {"wte.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight"}
    for i in range(n_layer):
        out.update({f"blocks.{i}.{k}": f"model.layers.{i}.{v}" for k, v in _BLOCK.items()})
    if not tied:
        out["lm_head.weight"] = "lm_head.weight"
    return out


# ---------------------------------------------------------------------------- config
def _rope(cfg: dict, where: str) -> float:
    """RoPE's base from ``rope_parameters`` (transformers 5) or ``rope_theta`` (older files);
    anything but the default rotation is refused."""
    params = cfg.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise HFCheckpointError(f"{where}: 'rope_parameters' must be an object, got "
                                f"{params!r} ({type(params).__name__})")
    params = dict(params)
    kind = params.pop("rope_type", params.pop("type", "default"))
    base = typed({"rope_theta": params.pop("rope_theta", cfg.get("rope_theta", 10000.0))},
                 "rope_theta", float, where)
    partial = params.pop("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if kind != "default" or params or partial != 1.0:
        raise HFCheckpointError(f"{where}: rope_parameters {cfg.get('rope_parameters')!r} are "
                                "not supported by tinyllm's Llama (rope_type 'default' with a "
                                "rope_theta only: no scaling variant, partial rotation or extra "
                                "factors)")
    if not base > 0:
        raise HFCheckpointError(f"{where}: rope_theta must be above 0, got {base!r}")
    return base


def config_from_hf(cfg: dict, where: str = CONFIG_NAME):
    """A ``LlamaConfig`` from a Hugging Face Llama ``config.json`` dict (unsupported options raise)."""
    from tinyllm.models.llama import LlamaConfig  # noqa: PLC0415

    if not isinstance(cfg, dict):
        raise HFCheckpointError(f"{where}: holds a JSON {type(cfg).__name__}; a config.json is "
                                "one JSON object of settings")
    model_type = cfg.get("model_type")
    if model_type != "llama":
        raise HFCheckpointError(f"{where}: model_type is {model_type!r}; Llama.from_pretrained "
                                "reads Llama checkpoints (model_type 'llama')")
    sizes = {k: typed(cfg, k, int, where) for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "max_position_embeddings")}
    bad = []
    for k, (test, why) in UNSUPPORTED.items():
        try:
            if k in cfg and test(cfg[k]):
                bad.append(f"{k}={cfg[k]!r} ({why})")
        except TypeError:  # e.g. layer_types that is not a list
            bad.append(f"{k}={cfg[k]!r} (not a value Hugging Face writes there)")
    hidden, heads = sizes["hidden_size"], sizes["num_attention_heads"]
    head_dim = typed(cfg, "head_dim", int, where, None, optional=True)
    if head_dim is not None and head_dim * heads != hidden:
        bad.append(f"head_dim={head_dim!r} (tinyllm's heads are hidden_size / "
                   f"num_attention_heads = {hidden // heads if heads else '?'} wide)")
    if bad:
        raise HFCheckpointError(f"{where}: Llama option(s) {'; '.join(bad)} are not supported "
                                "by tinyllm's Llama")
    return LlamaConfig(
        vocab_size=sizes["vocab_size"], block_size=sizes["max_position_embeddings"],
        n_layer=sizes["num_hidden_layers"], n_head=heads, n_embd=hidden,
        n_kv_head=typed(cfg, "num_key_value_heads", int, where, None, optional=True) or heads,
        intermediate_size=sizes["intermediate_size"], rope_base=_rope(cfg, where),
        rms_norm_eps=typed(cfg, "rms_norm_eps", float, where, 1e-6),
        tie_word_embeddings=typed(cfg, "tie_word_embeddings", bool, where, False),
        dropout=typed(cfg, "attention_dropout", float, where, 0.0, optional=True) or 0.0,
        initializer_range=typed(cfg, "initializer_range", float, where, 0.02))


def config_to_hf(config, dtype: str = "float32") -> dict:
    """The Hugging Face ``config.json`` dict of a ``LlamaConfig`` (read by transformers 4 and 5:
    the RoPE base is written both ways)."""
    c = config
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.n_embd,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim, "hidden_act": "silu",
        "max_position_embeddings": c.block_size, "rms_norm_eps": c.rms_norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
        "rope_theta": c.rope_base, "rope_scaling": None,
        "attention_bias": False, "attention_dropout": c.dropout, "mlp_bias": False,
        "tie_word_embeddings": c.tie_word_embeddings, "initializer_range": c.initializer_range,
        "pretraining_tp": 1, "use_cache": True, "dtype": dtype,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    }


# ---------------------------------------------------------------------------- weights
def _shapes(config) -> dict:
    """Hugging Face name -> expected shape (Linear weights are (out, in))."""
    c = config
    kv, f = c.n_kv_head * c.head_dim, c.intermediate_size
    per_layer = {"input_layernorm.weight": (c.n_embd,), "post_attention_layernorm.weight": (c.n_embd,),
                 "self_attn.q_proj.weight": (c.n_embd, c.n_embd), "self_attn.k_proj.weight": (kv, c.n_embd),
                 "self_attn.v_proj.weight": (kv, c.n_embd), "self_attn.o_proj.weight": (c.n_embd, c.n_embd),
                 "mlp.gate_proj.weight": (f, c.n_embd), "mlp.up_proj.weight": (f, c.n_embd),
                 "mlp.down_proj.weight": (c.n_embd, f)}
    out = {"model.embed_tokens.weight": (c.vocab_size, c.n_embd), "model.norm.weight": (c.n_embd,),
           "lm_head.weight": (c.vocab_size, c.n_embd)}
    for i in range(c.n_layer):
        out.update({f"model.layers.{i}.{k}": v for k, v in per_layer.items()})
    return out


def hf_to_tinyllm(weights: dict, config, where: str = WEIGHTS_NAME) -> dict:
    """Map a Llama state dict (Hugging Face names) to tinyllm's names.

    Checks every key and shape first; raises naming ``where`` and the keys on any problem.
    """
    weights = {k: v for k, v in weights.items() if not k.endswith("rotary_emb.inv_freq")}
    tied = config.tie_word_embeddings
    names = _name_map(config.n_layer, tied)
    expected = set(names.values())
    lm_head = weights.pop("lm_head.weight", None) if tied else None
    missing = sorted(expected - set(weights))
    unexpected = sorted(set(weights) - expected)
    shapes = _shapes(config)
    wrong = [f"{k}: expected {shapes[k]}, got {tuple(weights[k].shape)}"
             for k in sorted(expected & set(weights)) if tuple(weights[k].shape) != shapes[k]]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}" + (" (tie_word_embeddings is false, so the "
                        "file needs its own lm_head.weight)" if "lm_head.weight" in missing else ""))
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong)}")
    if not problems and lm_head is not None and not np.array_equal(
            lm_head, weights["model.embed_tokens.weight"]):
        problems.append("lm_head.weight differs from model.embed_tokens.weight, but config.json "
                        "says tie_word_embeddings=true (one matrix for both)")
    if problems:
        raise ValueError(f"{where} does not hold the Llama of its config.json (nothing was "
                         "loaded): " + " | ".join(problems))
    return {ours: weights[hf] for ours, hf in names.items()}


def tinyllm_to_hf(state: dict, config) -> dict:
    """tinyllm's state dict -> Hugging Face Llama names (no lm_head.weight when tied)."""
    return {hf: np.asarray(state[ours])
            for ours, hf in _name_map(config.n_layer, config.tie_word_embeddings).items()}


# ---------------------------------------------------------------------------- files
def _read_weights(path: str, caller: str) -> tuple[dict, str]:
    """All tensors of the folder: model.safetensors, or the shards its index lists."""
    single, index = os.path.join(path, WEIGHTS_NAME), os.path.join(path, INDEX_NAME)
    if os.path.isfile(single):
        return serialization.load(single), single
    if not os.path.isfile(index):
        raise FileNotFoundError(f"{caller}: {single} not found (a Hugging Face Llama directory "
                                f"holds {CONFIG_NAME} and {WEIGHTS_NAME}, or {INDEX_NAME} and "
                                "its shards)")
    shards = _shard_map(index)
    weights = {}
    for shard, names in shards.items():
        file = os.path.join(path, shard)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{index}: lists the shard {shard!r}, but {file} is not "
                                    "there (nothing was loaded)")
        tensors = serialization.load(file)
        missing = sorted(names - tensors.keys())
        if missing:
            raise HFCheckpointError(f"{index}: maps {missing[:3]} to {shard!r}, which does not "
                                    f"hold {'them' if len(missing) > 1 else 'it'} (nothing was "
                                    "loaded)")
        twice = sorted(tensors.keys() & weights.keys())
        if twice:
            raise HFCheckpointError(f"{index}: the tensor(s) {twice[:3]} are in more than one "
                                    f"shard ({shard!r} and an earlier one): which is meant is "
                                    "ambiguous (nothing was loaded)")
        weights.update(tensors)
    return weights, index


def _shard_map(index: str) -> dict:
    """{shard file name: the tensor names the index puts there}, checked: plain file names in
    the folder, in sorted order."""
    d = json_files.read_json(index, HFCheckpointError, "is not valid JSON")
    weight_map = d.get("weight_map") if isinstance(d, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise HFCheckpointError(f"{index}: no 'weight_map' object (tensor name -> shard file)")
    shards = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or shard in ("", ".", "..") or \
                os.path.basename(shard) != shard:
            raise HFCheckpointError(f"{index}: weight_map[{name!r}] is {shard!r}; it must be "
                                    "the name of a shard file in the same folder")
        shards.setdefault(shard, set()).add(name)
    return dict(sorted(shards.items()))


def load_llama(cls, path, dtype="float32"):
    """Build ``cls(config)`` from a Hugging Face Llama directory and load its weights."""
    path = os.fspath(path)
    caller = f"Llama.from_pretrained({path!r})"
    cfg_path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{caller}: {cfg_path} not found (a Hugging Face Llama "
                                f"directory holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = config_from_hf(read_config(cfg_path), cfg_path)
    weights, where = _read_weights(path, caller)
    return model_from_state(cls, config, hf_to_tinyllm(weights, config, where), dtype)


def save_llama(model, path) -> None:
    """Write ``model`` (a tinyllm Llama) as a Hugging Face Llama directory (atomic writes)."""
    path = os.fspath(path)
    dtype = str(model.wte.weight.dtype)
    weights = tinyllm_to_hf(model.state_dict(), model.config)
    os.makedirs(path, exist_ok=True)
    serialization.save(weights, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
    atomic.write_text(os.path.join(path, CONFIG_NAME),
                      json.dumps(config_to_hf(model.config, dtype), indent=2) + "\n")
