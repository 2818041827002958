"""tinyllm.serialization: the safetensors format written and read with NumPy.

Independent checks: the `safetensors` package (and `safetensors.torch`) must read what tinyllm
writes and tinyllm must read what they write; these tests skip when the packages are missing
(run them with the reference venv, see tests/fixtures/README.md). Corrupt files, made by hand
byte by byte from the format description, are in test_serialization_errors.py.
"""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tinyllm import serialization
from tinyllm.serialization import SafetensorsError, load, load_metadata, save

FIXTURES = Path(__file__).parent / "fixtures"

ALL_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8",
              "uint64", "uint32", "uint16", "uint8", "bool"]


def _random(rng, dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def raw_file(path, header, buffer=b"", pad=True, length=None):
    """Write a safetensors file by hand (header: dict or raw bytes)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    n = len(raw) if length is None else length
    Path(path).write_bytes(struct.pack("<Q", n) + raw + buffer)
    return path


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (5,), (2, 3, 4)])
def test_round_trip_every_dtype_and_shape(tmp_path, rng, dtype, shape):
    a = _random(rng, dtype, shape)
    save({"a": a, "b": a.T if a.ndim else a}, tmp_path / "w.safetensors")
    out = load(tmp_path / "w.safetensors")
    assert list(out) == ["a", "b"]
    for k, ref in (("a", a), ("b", a.T if a.ndim else a)):
        assert out[k].dtype == np.dtype(dtype) and out[k].shape == ref.shape
        np.testing.assert_array_equal(out[k], ref)
        # writable means a copy: views of the bytes read from the file would be read-only
        assert out[k].flags.writeable and out[k].flags.c_contiguous


def test_loaded_arrays_are_owned_writable_copies(tmp_path):
    save({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, tmp_path / "w.safetensors")
    a = load(tmp_path / "w.safetensors")["x"]
    b = load(tmp_path / "w.safetensors")["x"]
    a[0, 0] = 100.0
    assert b[0, 0] == 0.0 and load(tmp_path / "w.safetensors")["x"][0, 0] == 0.0


def test_keys_are_written_sorted_and_loaded_in_file_order(tmp_path):
    sd = {"z": np.zeros(2, np.float32), "a.b": np.ones(3, np.int8), "m": np.eye(2)}
    save(sd, tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert [k for k in header if k != "__metadata__"] == ["a.b", "m", "z"]
    assert n % 8 == 0
    assert list(load(tmp_path / "w.safetensors")) == ["a.b", "m", "z"]


def test_float32_is_never_converted_and_big_endian_input_is_stored_little(tmp_path):
    a = np.array([1.0000001, -2.5e-38, 3.4e38], dtype=np.float32)
    be = np.arange(4, dtype=">i4")
    save({"a": a, "be": be}, tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["a"]["dtype"] == "F32" and header["be"]["dtype"] == "I32"
    out = load(tmp_path / "w.safetensors")
    assert out["a"].dtype == np.float32 and out["a"].tobytes() == a.tobytes()
    np.testing.assert_array_equal(out["be"], [0, 1, 2, 3])
    assert raw[8 + n + header["be"]["data_offsets"][0]:][:8] == struct.pack("<2i", 0, 1)


def test_bf16_loads_as_float32_by_bit_shift(tmp_path, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype("<u2")  # truncate to bfloat16
    header = {"w": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, bits.nbytes]}}
    raw_file(tmp_path / "b.safetensors", header, bits.tobytes())
    out = load(tmp_path / "b.safetensors")["w"]
    assert out.dtype == np.float32
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, x, rtol=2 ** -7)


def test_metadata_round_trip_and_validation(tmp_path):
    p = tmp_path / "w.safetensors"
    save({"x": np.zeros(1, np.float32)}, p, metadata={"format": "np", "step": "12", "é": "✓"})
    assert load_metadata(p) == {"format": "np", "step": "12", "é": "✓"}
    save({"x": np.zeros(1, np.float32)}, p)
    assert load_metadata(p) == {}
    with pytest.raises(TypeError, match="str -> str"):
        save({"x": np.zeros(1)}, p, metadata={"step": 12})


def test_tensors_and_objects_with_numpy_method(tmp_path):
    class FakeTensor:
        def __init__(self, a):
            self.a = a

        def numpy(self):
            return self.a

    save({"t": FakeTensor(np.arange(3, dtype=np.float32)), "l": [1, 2]}, tmp_path / "w.st")
    out = load(tmp_path / "w.st")
    np.testing.assert_array_equal(out["t"], [0, 1, 2])
    assert out["l"].dtype == np.int64


def test_tinyllm_tensor_round_trip(tmp_path):
    tl = pytest.importorskip("tinyllm.tensor")
    t = tl.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    save({"t": t}, tmp_path / "w.safetensors")
    np.testing.assert_array_equal(load(tmp_path / "w.safetensors")["t"], t.numpy())


def test_unsupported_values_are_refused_before_writing(tmp_path):
    p = tmp_path / "w.safetensors"
    with pytest.raises(SafetensorsError, match=r"'c'.*complex128"):
        save({"a": np.zeros(2), "c": np.zeros(2, complex)}, p)
    with pytest.raises(SafetensorsError, match="__metadata__"):
        save({"__metadata__": np.zeros(2)}, p)
    with pytest.raises(TypeError, match="dict"):
        save([np.zeros(2)], p)
    assert list(tmp_path.iterdir()) == []


def test_device_round_trip(tmp_path, device):
    """Arrays on `device` (CuPy under TINYLLM_TEST_DEVICE=cuda) save, and load back there."""
    from tinyllm.backend import get_device, to_device

    a = to_device(np.arange(12, dtype=np.float32).reshape(3, 4), device)
    save({"a": a}, tmp_path / "w.safetensors")
    out = load(tmp_path / "w.safetensors", device=device)["a"]
    assert get_device(out) == device
    np.testing.assert_array_equal(to_device(out, "cpu"), np.arange(12).reshape(3, 4))


def test_device_cpu_and_unknown_device(tmp_path):
    p = tmp_path / "w.safetensors"
    save({"x": np.ones(2, np.float32)}, p)
    assert isinstance(load(p, device="cpu")["x"], np.ndarray)
    with pytest.raises(ValueError, match="unknown device"):
        load(p, device="tpu")


# ------------------------------------------------------------------------------ atomic writes
def test_failed_write_keeps_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    p = tmp_path / "w.safetensors"
    save({"old": np.arange(3, dtype=np.float32)}, p)
    before = p.read_bytes()
    calls = []

    def broken_write(f, arr):
        calls.append(arr.shape)
        if len(calls) == 2:
            f.write(b"\x00" * 5)
            raise OSError(28, "No space left on device")
        f.write(arr.tobytes())

    monkeypatch.setattr(serialization, "_write_tensor", broken_write)
    with pytest.raises(OSError, match="No space left"):
        save({"a": np.zeros((100, 100)), "b": np.ones(1000), "c": np.ones(3)}, p)
    assert len(calls) == 2
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]
    np.testing.assert_array_equal(load(p)["old"], [0, 1, 2])


def test_failed_fsync_or_interrupt_cleans_up(tmp_path, monkeypatch):
    p = tmp_path / "w.safetensors"

    def no_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.os, "fsync", no_fsync)
    with pytest.raises(KeyboardInterrupt):
        save({"a": np.zeros(3)}, p)
    assert os.listdir(tmp_path) == []


def test_save_replaces_existing_file_and_keeps_its_permissions(tmp_path):
    p = tmp_path / "w.safetensors"
    save({"a": np.zeros(3)}, p)
    assert os.stat(p).st_mode & 0o777 == 0o644
    os.chmod(p, 0o600)
    save({"b": np.ones(2, np.int32)}, p)
    assert list(load(p)) == ["b"] and os.stat(p).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["w.safetensors"]
    with pytest.raises(IsADirectoryError):
        save({"a": np.zeros(1)}, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save({"a": np.zeros(1)}, tmp_path / "no" / "w.safetensors")


# ---------------------------------------------------------------- the reference implementation
def _mixed(rng):
    return {
        "emb.weight": rng.standard_normal((7, 5)).astype(np.float32),
        "half": rng.standard_normal((3,)).astype(np.float16),
        "double": rng.standard_normal((2, 2)),
        "ids": np.arange(-3, 3, dtype=np.int64),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u8": np.array([0, 255], dtype=np.uint8),
        "flags": np.array([True, False, True]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }


def test_safetensors_package_reads_tinyllm_files(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    sd = _mixed(rng)
    save(sd, tmp_path / "w.safetensors", metadata={"format": "np"})
    out = st.load_file(str(tmp_path / "w.safetensors"))
    assert set(out) == set(sd)
    for k in sd:
        assert out[k].dtype == sd[k].dtype and out[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(out[k], sd[k])
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(tmp_path / "w.safetensors"), "np") as f:
        assert f.metadata() == {"format": "np"}


def test_tinyllm_reads_safetensors_package_files(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    sd = _mixed(rng)
    st.save_file(sd, str(tmp_path / "w.safetensors"), metadata={"who": "safetensors"})
    out = load(tmp_path / "w.safetensors")
    assert set(out) == set(sd)
    for k in sd:
        assert out[k].dtype == sd[k].dtype and out[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(out[k], sd[k])
    assert load_metadata(tmp_path / "w.safetensors") == {"who": "safetensors"}


def test_torch_round_trip_including_bf16(tmp_path, rng):
    torch = pytest.importorskip("torch")
    stt = pytest.importorskip("safetensors.torch")
    x = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    sd = {"f32": x, "bf16": x.to(torch.bfloat16), "f16": x.half(),
          "i64": torch.arange(5), "b": x > 0}
    stt.save_file(sd, str(tmp_path / "t.safetensors"))
    out = load(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(out["f32"], x.numpy())
    assert out["bf16"].dtype == np.float32
    np.testing.assert_array_equal(out["bf16"], sd["bf16"].float().numpy())
    np.testing.assert_array_equal(out["f16"], sd["f16"].numpy())
    np.testing.assert_array_equal(out["i64"], np.arange(5))
    np.testing.assert_array_equal(out["b"], (x > 0).numpy())

    save({k: v for k, v in sd.items() if k != "bf16"}, tmp_path / "n.safetensors")
    back = stt.load_file(str(tmp_path / "n.safetensors"))
    for k in ("f32", "f16", "i64", "b"):
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), k


@pytest.mark.parametrize("name", ["gpt2_tiny", "bert_tiny"])
def test_reads_transformers_checkpoints(name):
    """model.safetensors written by transformers' save_pretrained loads with the right names."""
    folder = FIXTURES / name
    if not (folder / "model.safetensors").exists():
        pytest.skip(f"fixture {folder} not present")
    weights = load(folder / "model.safetensors")
    expected = json.loads((folder / "expected.json").read_text())["weight_names"]
    assert {k: list(v.shape) for k, v in weights.items()} == expected
    assert all(v.dtype == np.float32 for v in weights.values())
