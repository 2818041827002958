"""Shared test fixtures.

* ``rng``: a seeded NumPy generator; the seed is fresh each run unless TINYLLM_TEST_SEED is set,
  and it is printed so that a failure can be replayed (``TINYLLM_TEST_SEED=<seed> pytest ...``).
* ``device``: 'cpu'; 'cuda' when TINYLLM_TEST_DEVICE=cuda (skips without CuPy and a GPU) or
  TINYLLM_TEST_DEVICE=fake-cuda (the strict fake device of ``tests/fakecupy``, installed as
  ``cupy``/``cupyx`` here, before tinyllm asks for CuPy).
* ``fake_cuda``: the fake device for one test, in any run: installed for the test (unless the
  whole run is on it), its counters reset, everything put back afterwards.
* every test marked ``exercise`` runs with ``tl.fast_paths(False)`` (it grades the plain forms).
"""

import os
import secrets

import numpy as np
import pytest

TEST_DEVICE = os.environ.get("TINYLLM_TEST_DEVICE", "cpu")
if TEST_DEVICE not in ("cpu", "cuda", "fake-cuda"):
    raise pytest.UsageError(f"TINYLLM_TEST_DEVICE={TEST_DEVICE!r}: use cpu, cuda or fake-cuda")
if TEST_DEVICE == "fake-cuda":
    import fakecupy

    fakecupy.install()


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("TINYLLM_TEST_SEED", secrets.randbelow(2**31)))
    print(f"random seed {seed} (replay with TINYLLM_TEST_SEED={seed})")
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


@pytest.fixture
def device():
    if TEST_DEVICE == "cuda":
        try:
            from tinyllm.backend import cupy_or_error

            cupy_or_error()
        except RuntimeError as e:
            pytest.skip(str(e))
    return "cuda" if TEST_DEVICE == "fake-cuda" else TEST_DEVICE


@pytest.fixture
def fake_cuda():
    """The ``fakecupy`` module, installed as CuPy for this test; its counters start at zero."""
    if TEST_DEVICE == "cuda":
        pytest.skip("the fake device does not replace a real one (TINYLLM_TEST_DEVICE=cuda)")
    import fakecupy

    from tinyllm import backend

    whole_run = fakecupy.installed()
    saved = backend._cupy, backend.get_default_device()
    if not whole_run:
        fakecupy.install()
        backend._cupy = None
    fakecupy.reset()
    try:
        yield fakecupy
    finally:
        if not whole_run:
            backend.set_default_device("cpu")
            backend._cupy = saved[0]
            fakecupy.uninstall()
        backend.set_default_device(saved[1])


@pytest.fixture(autouse=True)
def _exercises_grade_the_plain_forms(request):
    """Exercise tests run the lesson's plain forward/backward, never a Function's fast path."""
    if request.node.get_closest_marker("exercise") is None:
        yield
        return
    import tinyllm as tl

    with tl.fast_paths(False):
        yield


def pytest_report_header(config):
    return f"tinyllm test device: {TEST_DEVICE}"
