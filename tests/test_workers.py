"""tinyllm.workers: per-item loops spread over threads give the plain loop's results bit for
bit (the optimizer, the clipping, the sum of the parts' gradients), run on several threads
only inside ``workers.use``, never nest, and report a worker's error."""

import threading
import time

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import autograd, workers
from tinyllm.optim import AdamW, clip_grad_norm_


def test_map_ordered_keeps_the_order_and_uses_the_threads(rng):
    n = int(rng.integers(5, 30))
    items = list(rng.integers(0, 1000, n))
    sizes = [workers.MIN_ELEMENTS] * n
    names = []

    def fn(x):
        names.append(threading.current_thread().name)
        return 3 * x + 1

    assert workers.map_ordered(fn, items, sizes) == [3 * x + 1 for x in items]
    assert set(names) == {threading.current_thread().name}, "outside use(): not this thread only"
    names.clear()
    with workers.use(2):
        assert workers.count() == 2
        got = workers.map_ordered(fn, items, sizes)
    assert workers.count() == 1, "use() did not restore the count"
    assert got == [3 * x + 1 for x in items], f"order lost: expected {[3 * x + 1 for x in items]}, got {got}"
    assert len(set(names)) == 2, f"expected 2 threads, got {sorted(set(names))}"


def test_small_work_runs_inline_and_a_worker_does_not_fan_out_again():
    names, inner = [], []

    def fn(x):
        names.append(threading.current_thread().name)
        inner.append(workers.count())
        return x

    with workers.use(2):
        workers.for_each(fn, range(10), sizes=[10] * 10)  # 100 elements: below the threshold
        assert set(names) == {threading.current_thread().name}
        workers.for_each(fn, range(4), sizes=[workers.MIN_ELEMENTS] * 4)
    assert set(inner) == {1, 2}, f"a worker's own loops must be plain (count 1), got {set(inner)}"


def test_an_error_in_a_worker_is_raised_after_every_group_finished():
    done = []

    def fn(x):
        time.sleep(0.005)
        if x == 3:
            raise ValueError("item 3 is bad")
        done.append(x)

    with workers.use(2), pytest.raises(ValueError, match="item 3"):
        workers.for_each(fn, range(8), sizes=[workers.MIN_ELEMENTS] * 8)
    seen = sorted(done)
    time.sleep(0.05)
    assert sorted(done) == seen, f"items still ran after the error was raised: {seen} -> {sorted(done)}"
    assert len(seen) >= 4, f"the group without item 3 must have run to its end, got {seen}"


def _params(rng):
    shapes = [(int(rng.integers(40, 200)), int(rng.integers(100, 400))) for _ in range(5)]
    shapes += [(int(rng.integers(3, 300)),) for _ in range(4)]
    return [tl.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
            for s in shapes]


@pytest.mark.parametrize("threads", [2, 3])
def test_clipping_and_adamw_on_threads_equal_the_plain_loop_bit_for_bit(threads, rng):
    seed = int(rng.integers(2**31))
    results = []
    for n in (1, threads):
        r = np.random.default_rng(seed)
        params = _params(r)
        opt = AdamW(params, lr=1e-2, weight_decay=0.1)
        norms = []
        for _ in range(3):
            for p in params:
                p.grad = (r.standard_normal(p.shape) * 3).astype(np.float32)
            with workers.use(n):
                norms.append(clip_grad_norm_(params, 1.0))
                opt.step()
        results.append(([p.data.copy() for p in params], norms))
    (w1, n1), (wn, nn) = results
    assert n1 == nn, f"clipping norms on {threads} threads: expected {n1}, got {nn}"
    for i, (a, b) in enumerate(zip(w1, wn)):
        assert np.array_equal(a, b), (f"parameter {i} {a.shape} after AdamW on {threads} threads "
                                      f"differs from the plain loop by {np.abs(a - b).max()}")


def test_the_parts_gradients_added_on_threads_equal_the_plain_sum(rng):
    params = _params(rng)
    parts = [{id(p): [p, rng.standard_normal(p.shape).astype(np.float32)] for p in params}
             for _ in range(3)]
    want = [parts[0][id(p)][1] + parts[1][id(p)][1] + parts[2][id(p)][1] for p in params]
    with workers.use(2):
        autograd.add_leaf_gradients(*parts)
    for i, (p, w) in enumerate(zip(params, want)):
        assert np.array_equal(p.grad, w), f"parameter {i}: summed gradient differs"
