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
            got = shard_batch(inputs, r, n, k)
            assert isinstance(got, list) and len(got) == k, (
                f"{b} rows, rank {r} of {n}, {k} micro-batches: expected a list of {k} dicts, "
                f"got {type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}")
            for j, micro in enumerate(got):
                assert set(micro) == set(inputs), f"micro-batch {j} has keys {sorted(micro)}"
                want = ids[r, j]
                assert np.array_equal(micro["row"], want), (
                    f"{b} rows, rank {r} of {n}, micro-batch {j} of {k}: expected rows "
                    f"{want.tolist()}, got {np.asarray(micro['row']).tolist()} (rank r keeps "
                    "the consecutive rows [r B/N, (r+1) B/N), cut in order)")
                for key in ("idx", "mask"):
                    assert np.array_equal(micro[key], inputs[key][want]), (
                        f"rank {r}, micro-batch {j}: {key!r} is not sliced like the rows")


@pytest.mark.exercise("18.1")
def test_18_1_the_shards_of_every_rank_cover_the_batch_once(rng):
    n, k = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    b = n * k * int(rng.integers(1, 4))
    rows = np.concatenate([m["x"] for r in range(n)
                           for m in shard_batch({"x": np.arange(b)}, r, n, k)])
    assert np.array_equal(rows, np.arange(b)), (
        f"ranks 0..{n - 1} in order, micro-batches in order, should list every row once in "
        f"order: got {rows.tolist()}")


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
            assert owned == (r + 1) % n, f"rank {r} should return {(r + 1) % n}, got {owned}"
            assert np.allclose(chunks[owned], want[owned], atol=1e-12), (
                f"{n} ranks, {sum(sizes)} elements: rank {r}'s chunk {owned} should be the sum "
                f"over the ranks {want[owned]}, got {chunks[owned]} (N - 1 steps, each adding "
                "the received chunk into chunk (r - s - 1) mod N)")
            expected = 8 * sum(sizes[(r - s) % n] for s in range(n - 1))
            assert sent == expected, (
                f"rank {r} should send N - 1 = {n - 1} chunks ({expected} bytes: chunk "
                f"(r - s) mod N at step s), sent {sent} bytes")


@pytest.mark.exercise("18.2")
def test_18_2_one_rank_is_already_reduced(rng):
    x = rng.standard_normal(7)
    [(owned, chunks, sent)] = run_world(1, _reduce_scatter_on_rank, [x.copy()])
    assert owned == 0 and sent == 0 and np.array_equal(chunks[0], x)


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
            for i in range(n):
                assert np.array_equal(chunks[i], final[i]), (
                    f"{n} ranks, rank {r} started with chunk {(r + shift) % n}: its chunk {i} "
                    f"should be {final[i]}, got {chunks[i]}")
            owned = (r + shift) % n
            expected = 8 * sum(final[(owned - s) % n].size for s in range(n - 1))
            assert sent == expected, (f"rank {r} should send {n - 1} chunks ({expected} "
                                      f"bytes), sent {sent}")


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
        assert max(d["errors"]) < 1e-5, (
            f"rank {d['rank']}: the ring all-reduce differs from MPI's Allreduce by "
            f"{d['errors']} (relative, for sizes 1, 5, 37, 1000)")


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
    cases = [([6, 6], 2), ([5, 3, 4], 3), ([10], 4), ([2, 0, 7, 1], 3), ([1, 1, 1], 5)]
    for _ in range(20):
        sizes = [int(s) for s in rng.integers(0, 25, size=int(rng.integers(1, 9)))]
        cases.append((sizes, int(rng.integers(1, 6))))
    for sizes, n in cases:
        want = _brute_force(sizes, n)
        got = partition(sizes, n)
        got = [[tuple(int(v) for v in piece) for piece in pieces] for pieces in got]
        assert got == want, (
            f"partition({sizes}, {n}) with c = ceil({sum(sizes)} / {n}) = {-(-sum(sizes) // n)}: "
            f"expected {want}, got {got} (pieces (i, lo, hi) with lo, hi inside parameter i, "
            "no empty pieces)")
