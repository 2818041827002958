"""Exercises 18.1-18.4: a rank's shard of the batch, the ring reduce-scatter and all-gather, and
ZeRO's partition of the parameters.

The ring runs on the in-process simulated world (threads behind mpi4py's ``Sendrecv``), so the
tests are fast and need no MPI; each checks the result against a sum or a copy made directly,
and the bytes each rank sent against what the ring must send. One check runs the ring on real
MPI processes against MPI's own ``Allreduce`` (skipped without mpi4py and mpiexec).
"""

import json

import numpy as np
import pytest
from exercise_asserts import assert_close, assert_equal, fail

from tinyllm.distributed.ring import ring_all_gather, ring_chunks, ring_reduce_scatter
from tinyllm.distributed.simulated import run_world
from tinyllm.optim.zero import partition
from tinyllm.train.data_parallel import shard_batch


# ----------------------------------------------------------------------------- 18.1
@pytest.mark.exercise("18.1")
def test_18_1_each_rank_gets_its_consecutive_rows_in_micro_batches(rng):
    for _ in range(6):
        n, k, m = (int(v) for v in rng.integers(1, 5, size=3))
        b = n * k * m
        t = int(rng.integers(1, 5))
        inputs = {"row": np.arange(b), "idx": rng.integers(0, 50, (b, t)),
                  "mask": rng.standard_normal((b, t, 2)).astype(np.float32)}
        ids = np.arange(b).reshape(n, k, m)  # rank r's micro-batch j holds rows ids[r, j]
        for r in range(n):
            case = f"shard_batch of {b} rows, rank {r} of {n}, {k} micro-batches"
            got = shard_batch(inputs, r, n, k)
            if not isinstance(got, list) or len(got) != k:
                fail(case, f"expected a list of {k} dicts, got {type(got).__name__} "
                           f"{got if not isinstance(got, list) else f'of length {len(got)}'}", rng)
            for j, micro in enumerate(got):
                assert_equal(f"{case}: the names in micro-batch {j}", sorted(micro),
                             sorted(inputs), rng)
                want = ids[r, j]  # rank r keeps the consecutive rows [r B/N, (r+1) B/N), in order
                assert_equal(f"{case}: the rows of micro-batch {j}", micro["row"], want, rng)
                for key in ("idx", "mask"):
                    assert_equal(f"{case}: {key!r} of micro-batch {j} (sliced like the rows)",
                                 micro[key], inputs[key][want], rng)


@pytest.mark.exercise("18.1")
def test_18_1_the_shards_of_every_rank_cover_the_batch_once(rng):
    n, k = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    b = n * k * int(rng.integers(1, 4))
    rows = np.concatenate([m["x"] for r in range(n)
                           for m in shard_batch({"x": np.arange(b)}, r, n, k)])
    assert_equal(f"the rows of ranks 0..{n - 1} and their {k} micro-batches, in order (each row "
                 "once)", rows, np.arange(b), rng)


# ----------------------------------------------------------------------------- the ring
def _arrays(rng, n):
    size = int(rng.integers(1, 40))
    return [rng.standard_normal(size) for _ in range(n)]


def _reduce_scatter_on_rank(comm, x):
    chunks = ring_chunks(x, comm.Get_size())
    owned = ring_reduce_scatter(comm, chunks)
    return owned, [c.copy() for c in chunks], comm.bytes_sent


@pytest.mark.exercise("18.2")
@pytest.mark.parametrize("n", [2, 3, 5])
def test_18_2_reduce_scatter_leaves_rank_r_the_sum_of_chunk_r_plus_1(rng, n):
    for _ in range(3):
        xs = _arrays(rng, n)
        want = ring_chunks(np.sum(xs, axis=0), n)
        sizes = [c.size for c in want]
        results = run_world(n, _reduce_scatter_on_rank, [x.copy() for x in xs])
        for r, (owned, chunks, sent) in enumerate(results):
            case = f"ring_reduce_scatter on {n} ranks, {sum(sizes)} elements, rank {r}"
            assert_equal(f"{case}: the returned index (r + 1) mod N", owned, (r + 1) % n, rng)
            assert_close(f"{case}: chunk {owned}, the sum over the ranks (N - 1 steps, each "
                         "adding the received chunk into chunk (r - s - 1) mod N)",
                         chunks[owned], want[owned], rng, atol=1e-12, rtol=1e-12)
            expected = 8 * sum(sizes[(r - s) % n] for s in range(n - 1))
            assert_equal(f"{case}: bytes sent (N - 1 chunks, chunk (r - s) mod N at step s)",
                         sent, expected, rng)


@pytest.mark.exercise("18.2")
def test_18_2_one_rank_is_already_reduced(rng):
    x = rng.standard_normal(7)
    [(owned, chunks, sent)] = run_world(1, _reduce_scatter_on_rank, [x.copy()])
    assert_equal("ring_reduce_scatter on one rank: (index, bytes sent)", (owned, sent), (0, 0), rng)
    assert_equal("ring_reduce_scatter on one rank: the chunk", chunks[0], x, rng)


def _gather_on_rank(comm, chunks, owned):
    ring_all_gather(comm, chunks, owned)
    return [c.copy() for c in chunks], comm.bytes_sent


@pytest.mark.exercise("18.3")
@pytest.mark.parametrize("n", [2, 3, 4])
def test_18_3_all_gather_gives_every_rank_every_final_chunk(rng, n):
    for _ in range(3):
        final = ring_chunks(rng.standard_normal(int(rng.integers(n, 40))), n)
        shift = int(rng.integers(0, n))  # rank r holds the final chunk (r + shift) mod N
        args = []
        for r in range(n):
            chunks = [rng.standard_normal(c.size) for c in final]  # partial sums elsewhere
            chunks[(r + shift) % n] = final[(r + shift) % n].copy()
            args.append((chunks, (r + shift) % n))
        results = run_world(n, _gather_on_rank, args)
        for r, (chunks, sent) in enumerate(results):
            owned = (r + shift) % n
            case = f"ring_all_gather on {n} ranks, rank {r} starting with chunk {owned}"
            for i in range(n):
                assert_equal(f"{case}: chunk {i}", chunks[i], final[i], rng)
            expected = 8 * sum(final[(owned - s) % n].size for s in range(n - 1))
            assert_equal(f"{case}: bytes sent (N - 1 chunks)", sent, expected, rng)


@pytest.mark.exercise("18.3")
def test_18_3_ring_all_reduce_on_real_mpi_matches_allreduce(tmp_path):
    from tinyllm.distributed.launch import mpi_available, run_mpi

    ok, why = mpi_available()
    if not ok:
        pytest.skip(f"the real-MPI check needs MPI: {why}")
    script = tmp_path / "ring.py"
    script.write_text(
        "import json, sys\nimport numpy as np\nfrom mpi4py import MPI\n"
        "from tinyllm.distributed.ring import ring_all_reduce\n"
        "comm = MPI.COMM_WORLD\nr = comm.Get_rank()\nout = []\n"
        "for size in (1, 5, 37, 1000):\n"
        "    x = np.random.default_rng([size, r]).standard_normal(size).astype(np.float32)\n"
        "    want = x.copy()\n    comm.Allreduce(MPI.IN_PLACE, want, op=MPI.SUM)\n"
        "    got = ring_all_reduce(comm, x.copy())\n"
        "    out.append(float(np.abs(got - want).max() / (np.abs(want).max() + 1e-30)))\n"
        "every = comm.gather({'rank': r, 'errors': out})\n"   # one printer: lines never interleave
        "if r == 0:\n    print(json.dumps(every))\n")
    proc = run_mpi(3, [script], timeout=120)
    assert proc.returncode == 0, f"mpiexec -n 3 failed:\n{proc.stderr[-3000:]}"
    [lines] = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("[")]
    assert sorted(d["rank"] for d in lines) == [0, 1, 2]
    for d in lines:
        assert_close(f"rank {d['rank']} of 3 MPI processes: the ring all-reduce's relative "
                     "difference from MPI's Allreduce, sizes 1, 5, 37, 1000", d["errors"],
                     np.zeros(4), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- 18.4
def _brute_force(sizes, n):
    total = sum(sizes)
    c = -(-total // n)
    owner = np.arange(total) // max(c, 1)
    param = np.repeat(np.arange(len(sizes)), sizes)
    offset = np.concatenate([np.arange(s) for s in sizes]) if total else np.zeros(0, int)
    out = []
    for r in range(n):
        pieces = []
        for i in range(len(sizes)):
            mine = offset[(owner == r) & (param == i)]
            if mine.size:
                pieces.append((i, int(mine[0]), int(mine[-1]) + 1))
        out.append(pieces)
    return out


@pytest.mark.exercise("18.4")
def test_18_4_partition_matches_element_by_element_ownership(rng):
    """Against ownership worked out element by element (element e belongs to rank e // c)."""
    cases = [([6, 6], 2), ([5, 3, 4], 3), ([10], 4), ([2, 0, 7, 1], 3), ([1, 1, 1], 5)]
    for _ in range(20):
        sizes = [int(s) for s in rng.integers(0, 25, size=int(rng.integers(1, 9)))]
        cases.append((sizes, int(rng.integers(1, 6))))
    for sizes, n in cases:
        want = _brute_force(sizes, n)
        got = partition(sizes, n)
        got = [[tuple(int(v) for v in piece) for piece in pieces] for pieces in got]
        assert_equal(f"partition({sizes}, {n}), c = ceil({sum(sizes)} / {n}) = "
                     f"{-(-sum(sizes) // n)}: the pieces (i, lo, hi) of each rank (lo, hi inside "
                     "parameter i, no empty pieces)", got, want, rng)
