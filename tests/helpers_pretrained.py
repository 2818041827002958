"""Shared checks of the tests against a tiny Hugging Face reference (tests/fixtures/gpt2_tiny,
llama_tiny): the recorded outputs, transformers' generate keywords, and the saved folder.

Each fixture folder holds ``expected.json`` (the inputs as lists, every ``generate`` keyword, the
beam records) and ``expected.safetensors`` (ids, logits, sequences, beam scores), written by the
script beside it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.models import beam_search


def load_expected(fixture):
    """(expected.json as a dict, expected.safetensors as a dict of arrays) of ``fixture``."""
    return json.loads((fixture / "expected.json").read_text()), tl.load(fixture / "expected.safetensors")


def reference_fixtures(fixture, model_class):
    """The module-scoped pytest fixtures ``expected`` (``load_expected(fixture)``) and ``model``
    (``model_class.from_pretrained(fixture)``) of a test file: ``expected, model = ...``."""

    @pytest.fixture(scope="module")
    def expected():
        return load_expected(fixture)

    @pytest.fixture(scope="module")
    def model():
        return model_class.from_pretrained(fixture)

    return expected, model


def generate_kwargs(kwargs):
    """(max_new_tokens, the other keywords) of a recorded transformers ``generate`` call: every
    recorded keyword is one that tinyllm's ``generate`` takes."""
    kw = dict(kwargs)
    return kw.pop("max_new_tokens"), kw


def check_generate(model, meta, arrays, search, use_cache, atol):
    """``generate`` with the recorded keywords of ``search`` ("greedy", or the name of a beam
    record: "beam1", "beam2") gives transformers' sequences; for a beam record ``beam_search``
    also gives its scores (within ``atol``)."""
    record = meta["greedy"] if search == "greedy" else next(r for r in meta["beam"]
                                                            if r["name"] == search)
    max_new, kw = generate_kwargs(record["kwargs"])
    out = model.generate(arrays["input_ids"], max_new, use_cache=use_cache, **kw)
    np.testing.assert_array_equal(out, arrays[f"{search}_sequences"])
    if search == "greedy":
        return
    with tl.no_grad():
        _, scores = beam_search(model, arrays["input_ids"], max_new, kw["num_beams"],
                                kw["num_return_sequences"])
    np.testing.assert_allclose(scores, arrays[f"{search}_scores"], atol=atol)


def check_saved_folder(model, arrays, out, fixture, config_keys):
    """``model.save_pretrained(out)`` writes exactly config.json and model.safetensors, with the
    names, shapes and values of the file transformers wrote and its ``config_keys``; loading it
    back gives the same config and logits."""
    model.save_pretrained(out)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    ours, theirs = tl.load(out / "model.safetensors"), tl.load(fixture / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    cfg, ref = (json.loads(p.read_text()) for p in (out / "config.json", fixture / "config.json"))
    for k in config_keys:
        assert cfg[k] == ref[k], k
    again = type(model).from_pretrained(out)
    assert again.config == model.config
    np.testing.assert_array_equal(again(arrays["input_ids"]).numpy(), model(arrays["input_ids"]).numpy())


def check_reloaded(model, path):
    """``type(model).from_pretrained(path)`` has the config and every state entry of ``model``."""
    back = type(model).from_pretrained(path)
    assert back.config == model.config
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=n)
