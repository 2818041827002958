"""Hugging Face BERT / RoBERTa checkpoints <-> tinyllm's BertModel, BertForPreTraining.

A HF folder holds ``config.json`` and ``model.safetensors``. The weight names differ from
tinyllm's, and HF keeps the query, key and value projections apart where tinyllm fuses them
into one ``attn.qkv`` Linear (C -> 3C), so their rows are concatenated in q, k, v order:

    HF (optionally prefixed "bert." / "roberta.")       tinyllm
    embeddings.word_embeddings.weight                   embeddings.word_embeddings.weight
    embeddings.position_embeddings / token_type_...     embeddings.position_embeddings / ...
    embeddings.LayerNorm.{weight,bias}                  embeddings.ln.{weight,bias}
    encoder.layer.i.attention.self.{query,key,value}    layers.i.attn.qkv (rows stacked)
    encoder.layer.i.attention.output.dense              layers.i.attn.proj
    encoder.layer.i.attention.output.LayerNorm          layers.i.ln_1
    encoder.layer.i.intermediate.dense                  layers.i.mlp.fc
    encoder.layer.i.output.dense                        layers.i.mlp.proj
    encoder.layer.i.output.LayerNorm                    layers.i.ln_2
    pooler.dense                                        pooler
    cls.predictions.transform.dense / .LayerNorm        mlm.dense / mlm.ln
    cls.predictions.bias                                mlm.bias
      (RoBERTa: lm_head.dense, lm_head.layer_norm, lm_head.bias)
    cls.predictions.decoder.weight                      tied to the word embeddings (not stored)
    cls.seq_relationship                                nsp

Old TensorFlow-converted checkpoints name LayerNorm parameters ``gamma``/``beta``; both are read.
A Hugging Face ``BertForMaskedLM`` has no pooler (``add_pooling_layer=False``): tinyllm's
``BertForMaskedLM`` then keeps its own (unused by the masked-LM head). Loading is all-or-nothing:
the config's keys are type-checked and its unsupported options refused (``config_from_hf``),
every weight key and shape is checked, and an error (``HFCheckpointError``) names the file and
the key.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from tinyllm import atomic, serialization
from tinyllm.backend import np
from tinyllm.models.bert import BertConfig
from tinyllm.models.hf_config import HFCheckpointError, read_config, refuse, typed

__all__ = ["hf_to_tinyllm", "tinyllm_to_hf", "load_pretrained", "save_pretrained",
           "config_from_hf", "HFCheckpointError"]

_IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight",
            "cls.predictions.decoder.bias", "lm_head.decoder.weight", "lm_head.decoder.bias",
            "embeddings.token_type_ids")


# Options of Hugging Face's BertConfig that tinyllm's encoder does not implement: the only
# value(s) it reads (a config with another one is refused, not loaded approximately).
_SUPPORTED = {"is_decoder": (False,), "add_cross_attention": (False,),
              "position_embedding_type": ("absolute",), "chunk_size_feed_forward": (0,),
              "tie_word_embeddings": (True,), "pruned_heads": ({},),
              "model_type": ("bert", "roberta")}


def config_from_hf(cfg: dict, where: str = "config.json") -> BertConfig:
    """A ``BertConfig`` from a Hugging Face BERT/RoBERTa ``config.json`` dict: every field
    tinyllm uses is type-checked, unsupported options are refused (``HFCheckpointError``)."""
    if not isinstance(cfg, dict):
        raise HFCheckpointError(f"{where}: holds a JSON {type(cfg).__name__}, not a config object")
    refuse(cfg, where, "BERT encoder", _SUPPORTED)
    hints = typing.get_type_hints(BertConfig)
    checked = {f.name: typed(cfg, f.name, hints[f.name], where)
               for f in dataclasses.fields(BertConfig)
               if f.name in cfg and hints[f.name] in (int, float, str, bool)}
    try:
        return BertConfig.from_dict({**cfg, **checked})
    except (TypeError, ValueError) as e:
        raise HFCheckpointError(f"{where}: {e}") from None


def _layer_map(i: int) -> dict[str, str]:
    """tinyllm name -> HF name for the non-fused tensors of encoder layer i."""
    h, t = f"encoder.layer.{i}.", f"layers.{i}."
    out = {}
    for tl_mod, hf_mod in (("attn.proj", "attention.output.dense"),
                           ("ln_1", "attention.output.LayerNorm"),
                           ("mlp.fc", "intermediate.dense"), ("mlp.proj", "output.dense"),
                           ("ln_2", "output.LayerNorm")):
        for p in ("weight", "bias"):
            out[f"{t}{tl_mod}.{p}"] = f"{h}{hf_mod}.{p}"
    return out


def name_map(config: BertConfig, heads: bool, nsp: bool) -> dict[str, str]:
    """tinyllm name -> HF name (without the ``bert.`` prefix) for every tensor but ``qkv``."""
    m = {f"embeddings.{e}.weight": f"embeddings.{e}.weight"
         for e in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    m["embeddings.ln.weight"] = "embeddings.LayerNorm.weight"
    m["embeddings.ln.bias"] = "embeddings.LayerNorm.bias"
    for i in range(config.num_hidden_layers):
        m.update(_layer_map(i))
    m["pooler.weight"], m["pooler.bias"] = "pooler.dense.weight", "pooler.dense.bias"
    if heads:
        roberta = config.model_type == "roberta"
        dense = "lm_head.dense" if roberta else "cls.predictions.transform.dense"
        ln = "lm_head.layer_norm" if roberta else "cls.predictions.transform.LayerNorm"
        for p in ("weight", "bias"):
            m[f"mlm.dense.{p}"] = f"{dense}.{p}"
            m[f"mlm.ln.{p}"] = f"{ln}.{p}"
        m["mlm.bias"] = "lm_head.bias" if roberta else "cls.predictions.bias"
        if nsp:
            m["nsp.weight"] = "cls.seq_relationship.weight"
            m["nsp.bias"] = "cls.seq_relationship.bias"
    return m


def _is_head_key(k: str) -> bool:
    return k.startswith(("cls.", "lm_head."))


def _canonical(hf: dict) -> dict:
    """Strip the ``bert.``/``roberta.`` prefix and rename gamma/beta; name -> (original, array)."""
    out = {}
    for k, v in hf.items():
        name = k
        for prefix in ("bert.", "roberta."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.endswith(".gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith(".beta"):
            name = name[: -len("beta")] + "bias"
        if name in out:
            raise HFCheckpointError(f"keys {out[name][0]!r} and {k!r} both give {name!r}")
        out[name] = (k, v)
    return out


def _untied_decoder(src: dict) -> list[str]:
    """A problem for an MLM decoder weight that is not the word embeddings (tinyllm ties it)."""
    word = src.get("embeddings.word_embeddings.weight")
    return [f"key {src[dec][0]!r} differs from the word embeddings; tinyllm ties the MLM "
            "decoder to them (untied decoders are not supported)"
            for dec in ("cls.predictions.decoder.weight", "lm_head.decoder.weight")
            if dec in src and word is not None and (src[dec][1].shape != word[1].shape
                                                    or not np.array_equal(src[dec][1], word[1]))]


def hf_to_tinyllm(hf: dict, model, source: str = "the checkpoint", strict: bool = True) -> dict:
    """Map a HF state dict onto ``model``'s names (qkv fused); check every key and shape.

    ``strict``: unexpected encoder keys and missing keys are errors (head keys in a checkpoint
    are always accepted by a bare BertModel, as HF does). Raises HFCheckpointError naming
    ``source`` and the key; returns {tinyllm name: array}."""
    config = model.config
    heads = hasattr(model, "mlm")
    want = dict(model.named_parameters())
    src = _canonical(hf)
    nmap = name_map(config, heads, heads and getattr(model, "has_nsp", False))
    used, out, problems = set(), {}, []

    def take(hf_name, tl_shape):
        if hf_name not in src:
            problems.append(f"missing key {hf_name!r}")
            return None
        orig, arr = src[hf_name]
        used.add(hf_name)
        if tuple(arr.shape) != tuple(tl_shape):
            problems.append(f"key {orig!r} has shape {tuple(arr.shape)}, expected "
                            f"{tuple(tl_shape)}")
            return None
        return arr

    body = "bert." if heads else ""  # tinyllm's prefix of the encoder's parameters
    nsp = heads and getattr(model, "has_nsp", False)
    no_pooler = heads and not nsp and "pooler.dense.weight" not in src  # HF BertForMaskedLM
    for tl_name, hf_name in nmap.items():
        if not tl_name.startswith(("mlm.", "nsp.")):
            tl_name = body + tl_name
        if no_pooler and hf_name.startswith("pooler."):
            out[tl_name] = want[tl_name].data  # the model keeps its own (the MLM head skips it)
            continue
        arr = take(hf_name, want[tl_name].shape)
        if arr is not None:
            out[tl_name] = arr
    h = config.hidden_size
    for i in range(config.num_hidden_layers):
        for p, shape in (("weight", (h, h)), ("bias", (h,))):
            parts = [take(f"encoder.layer.{i}.attention.self.{n}.{p}", shape)
                     for n in ("query", "key", "value")]
            if all(a is not None for a in parts):
                out[f"{body}layers.{i}.attn.qkv.{p}"] = np.concatenate(parts, axis=0)
    if heads:
        problems += _untied_decoder(src)
    if not strict:  # missing tensors keep their initial values; wrong shapes still fail
        problems = [p for p in problems if not p.startswith("missing")]
    skipped = [k for k in src if (not heads and _is_head_key(k))  # an encoder skips the heads,
               or (heads and not nsp and k.startswith("cls.seq_relationship."))]  # MLM the NSP
    unexpected = [src[k][0] for k in src if k not in used and k not in _IGNORED
                  and k not in skipped]
    if strict and unexpected:
        problems.append("unexpected keys " + ", ".join(repr(k) for k in unexpected))
    if problems:
        raise HFCheckpointError(f"cannot load {source} into {type(model).__name__} (nothing was "
                                "loaded): " + "; ".join(problems))
    return out


def tinyllm_to_hf(model) -> dict:
    """``model``'s weights with HF names (qkv split back; ``bert.`` prefix when it has heads)."""
    config = model.config
    heads = hasattr(model, "mlm")
    body = model.bert if heads else model
    sd = model.state_dict()
    prefix = ("roberta." if config.model_type == "roberta" else "bert.") if heads else ""
    out = {}
    for tl_name, hf_name in name_map(config, heads, heads and model.has_nsp).items():
        is_head = tl_name.startswith(("mlm.", "nsp."))
        key = tl_name if is_head or not heads else f"bert.{tl_name}"
        out[hf_name if is_head else prefix + hf_name] = sd[key]
    h = config.hidden_size
    for i in range(len(body.layers)):
        for p in ("weight", "bias"):
            key = f"layers.{i}.attn.qkv.{p}"
            qkv = sd[f"bert.{key}" if heads else key]
            for j, n in enumerate(("query", "key", "value")):
                out[f"{prefix}encoder.layer.{i}.attention.self.{n}.{p}"] = qkv[j * h:(j + 1) * h]
    return out


def load_pretrained(cls, directory, strict: bool = True):
    """``cls.from_pretrained(dir)``: config.json + model.safetensors -> a model in eval mode."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; from_pretrained expects a "
                                "Hugging Face model folder with config.json and model.safetensors")
    cfg_path = directory / "config.json"
    config = config_from_hf(read_config(cfg_path), str(cfg_path))
    weights = directory / "model.safetensors"
    if not weights.exists():
        others = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(f"{weights} not found (the folder holds {others}); only "
                                "safetensors weights are read (no pickles such as "
                                "pytorch_model.bin)")
    hf = serialization.load(weights)
    model = cls(config)
    sd = hf_to_tinyllm(hf, model, source=str(weights), strict=strict)
    model.load_state_dict(sd, strict=strict)
    return model.eval()


def hf_config_dict(model) -> dict:
    d = model.config.to_dict()
    arch = {"BertModel": "Model", "BertForPreTraining": "ForPreTraining",
            "BertForMaskedLM": "ForMaskedLM"}.get(type(model).__name__, "Model")
    base = "Roberta" if model.config.model_type == "roberta" else "Bert"
    d["architectures"] = [base + arch]
    d["tie_word_embeddings"] = True
    return d


def save_pretrained(model, directory) -> None:
    """Write ``config.json`` and ``model.safetensors`` (HF names) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    serialization.save(tinyllm_to_hf(model), directory / "model.safetensors",
                       metadata={"format": "pt"})
    text = json.dumps(hf_config_dict(model), indent=2) + "\n"
    atomic.write_text(directory / "config.json", text)
