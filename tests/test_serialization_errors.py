"""tinyllm.serialization refuses damaged safetensors files, each with its own message, before
anything is loaded. The corrupt files are made by hand, byte by byte, from the format description
(``raw_file`` of test_serialization.py); round trips and the reference package are tested there.
"""

import pickle

import numpy as np
import pytest
from test_serialization import raw_file

from tinyllm.serialization import SafetensorsError, load, load_metadata, save


# ---------------------------------------------------------------------------- corrupt files
def _assert_bad(path, *patterns):
    with pytest.raises(SafetensorsError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for pat in patterns:
        assert pat in msg, msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(SafetensorsError):  # the header checks are the same without the data
        load_metadata(path)


GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


def test_file_shorter_than_8_bytes(tmp_path):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x10\x00\x00")
    _assert_bad(p, "3 bytes long", "shorter than the 8-byte")
    p.write_bytes(b"")
    _assert_bad(p, "0 bytes long")


def test_pickle_is_named_and_never_unpickled(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    _assert_bad(p, "not a safetensors file", "pickle")


def test_text_and_other_formats_are_named(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("these are not weights\nbut some notes\n")
    _assert_bad(p, "not a safetensors file", "text file")
    p = tmp_path / "w.npy"
    np.save(p, np.zeros(3))
    _assert_bad(p, "not a safetensors file", ".npy")
    p = tmp_path / "torch_zip.pt"
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    _assert_bad(p, "zip archive")


def test_header_length_beyond_file(tmp_path):
    p = raw_file(tmp_path / "h.safetensors", GOOD, b"\x00" * 8, length=10_000)
    _assert_bad(p, "header length field says 10000 bytes")


def test_header_not_json_or_not_object(tmp_path):
    p = raw_file(tmp_path / "j.safetensors", b'{"w": {"dtype": "F32", ')
    _assert_bad(p, "not valid UTF-8 JSON")
    p = raw_file(tmp_path / "l.safetensors", b"[1, 2, 3]")
    _assert_bad(p, "not a safetensors file", "JSON object")
    p = raw_file(tmp_path / "s.safetensors", b'{"a": 1} {"b": 2}')
    _assert_bad(p, "not valid UTF-8 JSON")
    p = raw_file(tmp_path / "d.safetensors",
                  b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
                  b' "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', b"ab")
    _assert_bad(p, "duplicate key 'w'")
    p = raw_file(tmp_path / "u.safetensors", b'{"\xff": 1}')
    _assert_bad(p, "not valid UTF-8 JSON")


def test_a_deeply_nested_header_is_a_safetensors_error(tmp_path):
    """100,000 nested lists: json raises RecursionError, which must not escape the checks."""
    deep = b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    p = raw_file(tmp_path / "bomb.safetensors", deep)
    _assert_bad(p, "nests JSON too deeply")


def test_bad_entries(tmp_path):
    cases = [
        ({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, 2,
         "unknown or unsupported dtype 'F8_E4M3'"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4,
         "= 8 bytes, but data_offsets [0, 4] span 4"),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, 8,
         "shape must be a list of non-negative integers"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, 8,
         "data_offsets out of order"),
        ({"w": {"dtype": "F32", "shape": [2]}}, 8, "exactly 'dtype', 'shape' and 'data_offsets'"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, True]}}, 8,
         "data_offsets must be [begin, end]"),
        ({"__metadata__": {"step": 3}, **GOOD}, 8, "__metadata__ must be an object of string"),
    ]
    for i, (header, nbytes, problem) in enumerate(cases):
        p = raw_file(tmp_path / f"bad{i}.safetensors", header, b"\x00" * nbytes)
        _assert_bad(p, problem)


def test_offsets_overlapping_holes_beyond_and_trailing(tmp_path):
    two = lambda a, b: {"a": {"dtype": "F32", "shape": [2], "data_offsets": a},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": b}}
    p = raw_file(tmp_path / "overlap.safetensors", two([0, 8], [4, 12]), b"\x00" * 12)
    _assert_bad(p, "overlaps tensor 'a'")
    p = raw_file(tmp_path / "hole.safetensors", two([0, 8], [12, 20]), b"\x00" * 20)
    _assert_bad(p, "hole in the data buffer: bytes 8..12")
    p = raw_file(tmp_path / "beyond.safetensors", two([0, 8], [8, 16]), b"\x00" * 12)
    _assert_bad(p, "reach beyond the data buffer (12 bytes)", "truncated")
    p = raw_file(tmp_path / "trailing.safetensors", two([0, 8], [8, 16]), b"\x00" * 20)
    _assert_bad(p, "4 trailing bytes")


def test_truncated_file(tmp_path, rng):
    p = tmp_path / "w.safetensors"
    save({"a": rng.standard_normal((4, 4)), "b": np.arange(10)}, p)
    data = p.read_bytes()
    for cut in (len(data) - 1, len(data) - 50, 20, 9):
        q = tmp_path / f"cut{cut}.safetensors"
        q.write_bytes(data[:cut])
        with pytest.raises(SafetensorsError, match=str(q).replace("\\", "\\\\")):
            load(q)


def test_validation_is_all_or_nothing(tmp_path):
    """A file whose first tensors are fine but a later one is bad returns nothing."""
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "z": {"dtype": "X99", "shape": [2], "data_offsets": [8, 16]}}
    p = raw_file(tmp_path / "half.safetensors", header, b"\x00" * 16)
    _assert_bad(p, "tensor 'z'", "X99")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.safetensors")
