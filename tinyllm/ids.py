"""Integer ids (tokens, classes, positions): one check for every layer that takes them.

An embedding lookup, a cross-entropy target or a model's input is an integer array whose every
entry must lie in [0, high). A bad one is never harmless: NumPy reads a negative id from the end
of the table, CuPy does not check the range at all, and either way the result is silently wrong.
So each id array is checked once, where it enters:

    ids = as_ids(idx, "idx", ndim=2)                       # integers, (B, T): no device sync
    check_ids(ids, 65, "ids", kind="token id")             # every entry in [0, 65)

``check_ids`` reduces the array to its minimum and maximum and moves the two numbers to the host
together: one device-to-host transfer per call (on a GPU that is one synchronisation). Only when
an id is bad does it look further, to say where. Host ids (NumPy, as the trainer's batches
are) stay on the host: they are checked there and the layer that uses them moves them, so their
check costs no device transfer at all.
"""

from __future__ import annotations

from tinyllm import backend

__all__ = ["IdError", "IdTypeError", "as_ids", "as_mask", "check_ids", "mask_positions"]


class IdError(ValueError, IndexError):
    """An id outside its range: a bad value and a bad index at once (as NumPy's AxisError)."""


class IdTypeError(TypeError, ValueError):
    """Ids that are not integers (floats, booleans): a wrong type for an id argument."""


def _is_backend_array(x) -> bool:
    return isinstance(x, backend.np.ndarray) or backend.get_array_module(x) is not backend.np


def _backend_array(x, name: str, ndim, device):
    """The backend array of ``x``, where it lives: a Tensor's array (which must be on ``device``
    when one is given: tinyllm's rule for mixing devices), a backend array as is, anything else
    (lists, NumPy scalars) as a NumPy array. Host ids stay on the host: they are checked there
    and moved by the layer that uses them (no device synchronisation for the check)."""
    if not _is_backend_array(x) and _is_backend_array(getattr(x, "data", None)):
        if device is not None and getattr(x, "device", device) != device:
            raise RuntimeError(
                f"{name} is a tensor on {x.device} (shape {tuple(x.shape)}) but the model runs on "
                f"{device}; move it first with .to({device!r}) (NumPy arrays are moved for you)")
        x = x.data  # a Tensor: its backend array
    a = x if _is_backend_array(x) else backend.as_array(x)
    if ndim is not None and a.ndim != ndim:
        want = {1: "(N,)", 2: "(B, T)"}.get(ndim, f"{ndim} axes")
        hint = " (add a batch axis: x[None])" if ndim == 2 and a.ndim == 1 else ""
        raise ValueError(f"{name} must have shape {want}, got {tuple(a.shape)}{hint}")
    return a


def as_ids(x, name: str, ndim: int | None = None, device=None, kind: str = "token id"):
    """``x`` (an array, nested lists, or a Tensor, which must be on ``device`` when given) as a
    backend integer array where it lives, checked for dtype and number of axes (no transfer)."""
    a = _backend_array(x, name, None, device)
    if a.dtype.kind not in "iu":
        raise IdTypeError(f"{name} must hold integers ({kind}s), got dtype {a.dtype}")
    return _backend_array(a, name, ndim, None)


def as_mask(x, name: str, shape=None, device=None):
    """A 0/1 (or boolean) mask as a backend boolean array where it lives (a Tensor must be on
    ``device`` when given), True where the entry is not 0; ``shape``, when given, is the shape it
    must have (the message names it)."""
    a = _backend_array(x, name, None, device)
    if a.dtype.kind not in "iub":
        raise IdTypeError(f"{name} must be boolean or 0/1 integers (True at real tokens), got "
                          f"dtype {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}; it must be {tuple(shape)}")
    return a != 0 if a.dtype != bool else a


def check_ids(ids, high: int, name: str, *, kind: str = "id", ignore_index=None, hint: str = "",
              within: str = ""):
    """Raise ``IdError`` unless every entry of the integer array ``ids`` lies in [0, high).

    Entries equal to ``ignore_index`` are not checked (cross-entropy's skipped positions). The
    message names ``name``, the first bad id, where it is and the range (called ``within``, e.g.
    "the vocabulary", when given), then ``hint``. Returns ``ids``. Cost: one reduction to
    (min, max) and one transfer of those two numbers.
    """
    if ids.dtype.kind not in "iu":
        raise IdTypeError(f"{name} must hold integers ({kind}s), got dtype {ids.dtype}")
    if ids.size == 0:
        return ids
    xp = backend.get_array_module(ids)
    a = ids if ignore_index is None else xp.where(ids == ignore_index, 0, ids)
    lo, hi = (int(v) for v in backend.to_device(xp.stack([a.min(), a.max()]), "cpu"))
    if lo >= 0 and hi < high:
        return ids
    bad = (a < 0) | (a >= high)
    where = tuple(int(i) for i in backend.to_device(xp.argwhere(bad)[0], "cpu"))
    value = int(ids[where])
    at = f"{name}[{', '.join(map(str, where))}]" if where else name
    allowed = f"{within} [0, {high})" if within else f"[0, {high})"
    raise IdError(f"{kind} {value} at {at}: {name} holds {value}, outside {allowed}{hint}")


def mask_positions(real, offset: int = 0, dummy: int = 1):
    """Positions of the tokens of a padded batch, as transformers numbers them: ``real`` (B, S) is
    True at real tokens; a real token's position is the number of real tokens before it
    (cumsum(real) - 1), a padded one gets ``dummy``. Returns (B, S - offset): the new positions."""
    xp = backend.get_array_module(real)
    return xp.where(real, xp.cumsum(real, axis=1) - 1, dummy)[:, offset:]
