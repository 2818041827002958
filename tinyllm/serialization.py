"""Safe weight files: the safetensors format, written and read with NumPy alone.

A safetensors file is three parts::

    8 bytes     N, the header length, an unsigned 64-bit little-endian integer
    N bytes     a UTF-8 JSON object, padded with spaces to a multiple of 8:
                {"__metadata__": {"key": "value", ...},          (optional, strings only)
                 "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
    the rest    the byte buffer: every tensor's raw little-endian C-order bytes; the offsets
                are relative to the buffer's start, and the tensors tile it with no gaps

tinyllm writes this format itself instead of depending on the ``safetensors`` package. The whole
format fits in this one file, so a student can read exactly what a checkpoint holds byte by
byte. It needs no compiled dependency, only NumPy. And loading runs no code: unlike a pickle
(``torch.save``, ``np.load(allow_pickle=True)``), a weight file can only ever produce arrays, so
a downloaded checkpoint cannot execute anything. The files are byte-compatible with the
``safetensors`` package and the Hugging Face Hub (the tests check both directions).

API: ``save(state_dict, path, metadata=None)``, ``load(path, device=None)``,
``load_metadata(path)``. Every problem with a file raises ``SafetensorsError`` (a ``ValueError``)
that names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from tinyllm.atomic import atomic_open

__all__ = ["save", "load", "load_metadata", "SafetensorsError", "DTYPES"]

# safetensors dtype name -> NumPy dtype of the bytes on disk (little-endian).
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bfloat16: the top 16 bits of a float32; loads as float32
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAME_OF = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items() if k != "BF16"}
_MAX_HEADER = 100 * 1024 * 1024  # the limit the reference implementation uses


class SafetensorsError(ValueError):
    """A file that is not a valid safetensors file, or data that cannot be saved as one."""


# ----------------------------------------------------------------------------------- saving
def _to_numpy(value):
    """NumPy array from a NumPy array, a CuPy array or anything with ``.numpy()`` (a Tensor)."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    elif hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):  # CuPy
        value = value.get()
    return np.asarray(value)


def _dtype_name(key, arr) -> str:
    if arr.dtype.name == "bfloat16":  # ml_dtypes.bfloat16, if a caller uses it
        return "BF16"
    name = _NAME_OF.get(arr.dtype.newbyteorder("="))
    if name is None:
        raise SafetensorsError(
            f"cannot save {key!r}: dtype {arr.dtype} has no safetensors equivalent "
            f"(supported: {', '.join(DTYPES)}); convert it, e.g. .astype(np.float32)")
    return name


def _check_metadata(metadata) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata must be a dict of str -> str (safetensors stores only strings); "
                        f"got {metadata!r}. Encode other values first, e.g. with json.dumps.")
    return dict(metadata)


def _header_bytes(entries: dict, metadata: dict) -> bytes:
    header = {"__metadata__": metadata} if metadata else {}
    header.update(entries)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)  # pad so the buffer starts 8-byte aligned


def _write_tensor(f, arr: np.ndarray) -> None:
    """Write one array's raw bytes (C order, little-endian). A seam the tests break on purpose."""
    if arr.dtype.name != "bfloat16":
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    f.write(arr.tobytes(order="C"))


def save(state_dict, path, metadata=None) -> None:
    """Write ``state_dict`` (name -> array or Tensor) to ``path`` as a safetensors file.

    Keys are written in sorted order. float32 stays float32 (nothing is converted). ``metadata``
    is an optional dict of strings stored in the header. The write is atomic: the data go to a
    temporary file in the same folder, which is flushed, fsynced and then renamed onto ``path``,
    so ``path`` always holds either the old file or the complete new one.
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"save() needs a dict of name -> array, got {type(state_dict).__name__}")
    metadata = _check_metadata(metadata)
    arrays, entries, offset = {}, {}, 0
    for key in sorted(state_dict):
        if not isinstance(key, str) or key == "__metadata__":
            raise SafetensorsError(f"cannot save key {key!r}: names must be strings other than "
                                   "'__metadata__'")
        arr = _to_numpy(state_dict[key])
        name = _dtype_name(key, arr)
        arrays[key] = arr
        entries[key] = {"dtype": name, "shape": [int(n) for n in arr.shape],
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    header = _header_bytes(entries, metadata)

    with atomic_open(path, "wb") as f:  # a crash never leaves half a file under this name
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for key in arrays:
            _write_tensor(f, arrays[key])


# ----------------------------------------------------------------------------------- loading
def _not_safetensors_hint(head: bytes) -> str:
    """Say what a file that is not safetensors looks like instead."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return ("it looks like a Python pickle (torch.save or pickle.dump); tinyllm never "
                "unpickles files, because loading a pickle can run arbitrary code")
    if head[:4] == b"PK\x03\x04":
        return ("it looks like a zip archive (the torch.save format, which holds a pickle); "
                "convert it to safetensors with the safetensors package")
    if head[:6] == b"\x93NUMPY":
        return "it looks like a NumPy .npy file; load it with np.load"
    if head and all(32 <= b < 127 or b in b"\t\n\r" for b in head):
        return f"it looks like a text file (it starts with {head.decode('ascii')!r})"
    return "it is not a safetensors file"


def _reject_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def _is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _read_header(f, path, file_size):
    """Read and check the header; return (entries in file order, metadata, buffer start)."""
    def fail(what):
        raise SafetensorsError(f"{path}: {what}")

    head = f.read(8)
    if len(head) < 8:
        fail(f"not a safetensors file: it is {file_size} bytes long, shorter than the 8-byte "
             "header length")
    (n,) = struct.unpack("<Q", head)
    if n > file_size - 8 or n > _MAX_HEADER:
        fail(f"not a safetensors file: the header length field says {n} bytes but the file has "
             f"{file_size - 8} after it; {_not_safetensors_hint(head + f.read(8))}")
    raw = f.read(n)
    if raw[:1] != b"{":
        fail(f"not a safetensors file: the header should be a JSON object starting with '{{' "
             f"but starts with {raw[:16]!r}; {_not_safetensors_hint(head + raw[:8])}")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"the header is not valid UTF-8 JSON ({e})")
    except RecursionError:  # a safetensors header is two levels deep; this one is a bomb
        fail("the header nests JSON too deeply to be a safetensors header (tensor entries are "
             "flat objects); the file is damaged or was made to break readers")
    if not isinstance(header, dict):
        fail(f"the header is JSON but not an object (got {type(header).__name__})")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        fail(f"__metadata__ must be an object of string -> string, got {metadata!r}")

    buffer_len = file_size - 8 - n
    entries = [_check_entry(key, info, buffer_len, fail) for key, info in header.items()]
    _check_tiling(entries, buffer_len, fail)
    return entries, metadata, 8 + n


def _check_entry(key, info, buffer_len, fail):
    """One header entry -> (key, dtype, shape, begin, end), its bytes checked against its shape."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        fail(f"tensor {key!r}: the entry must be an object with exactly 'dtype', 'shape' and "
             f"'data_offsets', got {info!r}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        fail(f"tensor {key!r}: unknown or unsupported dtype {dtype!r} "
             f"(tinyllm reads {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        fail(f"tensor {key!r}: shape must be a list of non-negative integers, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_uint(o) for o in offsets)):
        fail(f"tensor {key!r}: data_offsets must be [begin, end] non-negative integers, "
             f"got {offsets!r}")
    begin, end = offsets
    if begin > end:
        fail(f"tensor {key!r}: data_offsets out of order: begin {begin} > end {end}")
    nbytes = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize
    if end - begin != nbytes:
        fail(f"tensor {key!r}: shape {shape} x {DTYPES[dtype].itemsize} bytes ({dtype}) = "
             f"{nbytes} bytes, but data_offsets {offsets} span {end - begin}")
    if end > buffer_len:
        fail(f"tensor {key!r}: data_offsets {offsets} reach beyond the data buffer "
             f"({buffer_len} bytes); the file is truncated or the header is wrong")
    return key, dtype, tuple(shape), begin, end


def _check_tiling(entries, buffer_len, fail):
    """The tensors must tile the buffer exactly: no overlap, no hole, nothing after the last.

    Sorts ``entries`` in place by offset (stable: header order among equal offsets)."""
    entries.sort(key=lambda e: (e[3], e[4]))
    pos, prev = 0, None
    for key, _, _, begin, end in entries:
        if begin < pos:
            fail(f"tensor {key!r} (bytes {begin}..{end}) overlaps tensor {prev!r} "
                 f"(which ends at {pos})")
        if begin > pos:
            fail(f"hole in the data buffer: bytes {pos}..{begin} before tensor {key!r} belong "
                 "to no tensor")
        pos, prev = end, key
    if pos != buffer_len:
        fail(f"the data buffer is {buffer_len} bytes but the tensors use {pos}: "
             f"{buffer_len - pos} trailing bytes belong to no tensor")


def _decode(raw, dtype: str, shape) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=DTYPES[dtype])
    if dtype == "BF16":  # bfloat16 bits are the high half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    # An owned, writable, native-endian C-contiguous copy (never a view of the file bytes).
    return arr.astype(arr.dtype.newbyteorder("="), copy=True).reshape(shape)


def load(path, device=None) -> dict:
    """Read a safetensors file into ``{name: array}``, in the order the data lie in the file.

    The whole file is checked before anything is returned, so a bad file gives nothing at all.
    The arrays are owned, writable NumPy copies (not views of the file); BF16 comes back as
    float32. ``device=None`` or ``'cpu'`` gives NumPy arrays, ``'cuda'`` CuPy arrays.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        entries, _, start = _read_header(f, path, file_size)
        f.seek(start)
        buffer = f.read(file_size - start)
    if len(buffer) != file_size - start:  # the file shrank while we read it
        raise SafetensorsError(f"{path}: truncated while reading ({len(buffer)} of "
                               f"{file_size - start} data bytes)")
    view = memoryview(buffer)  # slicing a memoryview copies nothing; _decode copies once
    out = {key: _decode(view[b:e], dtype, shape) for key, dtype, shape, b, e in entries}
    if device is not None and str(device) != "cpu":
        from tinyllm.backend import to_device

        out = {k: to_device(v, device) for k, v in out.items()}
    return out


def load_metadata(path) -> dict:
    """The ``__metadata__`` strings of a safetensors file (``{}`` when it has none).

    The header is checked as in ``load`` but the tensor data are not read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        _, metadata, _ = _read_header(f, path, os.fstat(f.fileno()).st_size)
    return dict(metadata)
