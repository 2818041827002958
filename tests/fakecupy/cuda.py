"""``cupy.cuda``: one fake GPU, always present."""

from __future__ import annotations


class runtime:  # noqa: N801  (CuPy's name: a module there)
    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802
        return 1


class Device:
    """``cupy.cuda.Device(0)``: ``use()``, ``synchronize()``, a context manager."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"fake CUDA has one device (0), not {self.id}")

    compute_capability = "90"

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id} (fake)>"


def is_available() -> bool:
    return True
