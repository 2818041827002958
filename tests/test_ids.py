"""tinyllm.ids: one check of integer ids (tokens, classes, positions) for every layer, with one
device-to-host transfer per check, and each id array of a training step checked once."""

import sys

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import backend, ids
from tinyllm.ids import IdError, IdTypeError, as_ids, as_mask, check_ids


def test_check_ids_names_the_argument_the_id_where_and_the_range():
    a = np.array([[0, 3, 1], [2, 7, 4]])
    with pytest.raises(IdError) as info:
        check_ids(a, 5, "idx", kind="token id", hint=" (vocab_size in the config)")
    msg = str(info.value)
    assert msg == ("token id 7 at idx[1, 1]: idx holds 7, outside [0, 5) (vocab_size in the "
                   "config)"), msg
    with pytest.raises(IdError, match=r"id -2 at t\[0\]: t holds -2, outside \[0, 5\)"):
        check_ids(np.array([-2, 9]), 5, "t")
    # a bad id is a bad value and a bad index: both kinds of handler catch it
    assert issubclass(IdError, ValueError) and issubclass(IdError, IndexError)
    assert check_ids(a, 8, "idx") is a
    assert check_ids(np.zeros((0, 3), dtype=np.int64), 1, "empty").shape == (0, 3)


def test_ignore_index_is_not_checked():
    t = np.array([1, -100, 3])
    assert check_ids(t, 4, "targets", ignore_index=-100) is t
    with pytest.raises(IdError, match="-100"):
        check_ids(t, 4, "targets")


def test_one_transfer_per_check(monkeypatch):
    calls = []
    real = backend.to_device
    monkeypatch.setattr(backend, "to_device", lambda a, d: (calls.append(d), real(a, d))[1])
    check_ids(np.arange(1000).reshape(10, 100), 1000, "ids")
    assert calls == ["cpu"], f"check_ids moved {len(calls)} arrays to the host, not one"


def test_as_ids_and_as_mask():
    assert as_ids([[1, 2]], "idx", ndim=2).dtype.kind == "i"
    assert as_ids(tl.tensor(np.array([[3]])), "idx", ndim=2).tolist() == [[3]]  # a Tensor
    with pytest.raises(TypeError, match="idx must hold integers"):
        as_ids(np.zeros((1, 2)), "idx")
    with pytest.raises(ValueError, match="integers"):  # IdTypeError is a ValueError too
        as_ids(np.zeros((1, 2)), "idx")
    assert issubclass(IdTypeError, TypeError)
    with pytest.raises(ValueError, match=r"idx must have shape \(B, T\), got \(3,\)"):
        as_ids(np.arange(3), "idx", ndim=2)
    m = as_mask(np.array([[0, 1, 2]]), "attention_mask", (1, 3))
    assert m.dtype == bool and m.tolist() == [[False, True, True]]
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\); it must be"):
        as_mask(np.ones((1, 3), dtype=int), "attention_mask", (1, 4))
    with pytest.raises(TypeError, match="boolean or 0/1"):
        as_mask(np.ones(3), "m")


def _count_checks(monkeypatch):
    """Count check_ids calls, wherever a module imported it."""
    names = []
    real = ids.check_ids

    def counting(a, high, name, **kw):
        names.append(name)
        return real(a, high, name, **kw)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("tinyllm") and \
                getattr(mod, "check_ids", None) is real:
            monkeypatch.setattr(mod, "check_ids", counting)
    return names


def test_a_gpt_step_checks_its_ids_and_targets_once(monkeypatch, rng):
    from tinyllm.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    x, y = rng.integers(0, 11, size=(2, 8)), rng.integers(0, 11, size=(2, 8))
    names = _count_checks(monkeypatch)
    _, loss = model(x, y)
    loss.backward()
    assert sorted(names) == ["ids", "targets"], names


def test_a_bert_step_checks_each_id_array_once(monkeypatch, rng):
    from tinyllm.models import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=16,
                                       max_position_embeddings=8))
    x = rng.integers(0, 20, size=(2, 6))
    names = _count_checks(monkeypatch)
    out = model(x, np.ones_like(x), np.zeros_like(x), labels=x)
    out.loss.backward()
    assert sorted(names) == ["input_ids", "targets", "token_type_ids"], names
