"""Shared test fixtures.

* ``rng``: a seeded NumPy generator; the seed is fresh each run unless TINYLLM_TEST_SEED is set,
  and it is printed so that a failure can be replayed (``TINYLLM_TEST_SEED=<seed> pytest ...``).
* ``device``: 'cpu', or 'cuda' when TINYLLM_TEST_DEVICE=cuda (skips without CuPy and a GPU).
* every test marked ``exercise`` runs with ``tl.fast_paths(False)`` (it grades the plain forms).
"""

import os
import secrets

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("TINYLLM_TEST_SEED", secrets.randbelow(2**31)))
    print(f"random seed {seed} (replay with TINYLLM_TEST_SEED={seed})")
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


@pytest.fixture
def device():
    dev = os.environ.get("TINYLLM_TEST_DEVICE", "cpu")
    if dev == "cuda":
        try:
            from tinyllm.backend import cupy_or_error

            cupy_or_error()
        except RuntimeError as e:
            pytest.skip(str(e))
    return dev


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
    return f"tinyllm test device: {os.environ.get('TINYLLM_TEST_DEVICE', 'cpu')}"
