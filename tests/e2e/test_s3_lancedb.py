"""LanceDB (the pinned version) on a real S3 endpoint: moto's server on 127.0.0.1, started here.

What streamvl relies on when its tables live in s3://: create, append, read, an ANN index,
optimize (compaction, index deltas, their merge through pylance), and concurrent appends from
several processes with no lost rows (Lance commits each version with a conditional PUT of the
next manifest and retries on conflict).
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamvl.storage.objectstore import resolve
from tests.e2e.s3_server import MotoS3, moto_s3, s3  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DIM = 16


def rows(start: int, n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed + start)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)})


def connect(uri: str):
    import lancedb

    return lancedb.connect(uri, **resolve(uri).connect_kwargs())


def manifest_puts(server: MotoS3, since: int = 0) -> list:
    return [r for r in server.requests.snapshot()[since:] if r.method == "PUT" and "/_versions/" in r.path]


def test_conditional_put_is_atomic_only_with_the_fixture(monkeypatch):
    """moto checks If-None-Match, then stores: racing writers can both win unless MotoS3 serialises.

    moto's put is slowed to widen the window deterministically; AWS S3 lets exactly one win."""
    from botocore.exceptions import ClientError
    from moto.s3.models import S3Backend

    original = S3Backend.put_object

    def slow_put(self, *args, **kwargs):
        time.sleep(0.05)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", slow_put)

    def race(server: MotoS3) -> int:
        bucket, client = server.make_bucket(), server.client()
        wins, start = [], threading.Barrier(6)

        def writer(i: int) -> None:
            start.wait()
            try:
                client.put_object(Bucket=bucket, Key="v/1.manifest", Body=f"writer {i}".encode(), IfNoneMatch="*")
                wins.append(i)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "PreconditionFailed"

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        body = client.get_object(Bucket=bucket, Key="v/1.manifest")["Body"].read().decode()
        assert len(wins) >= 1 and body.startswith("writer ")
        return len(wins)

    for serialise, check in ((True, lambda w: w == 1), (False, lambda w: w > 1)):
        server = MotoS3(serialise_writes=serialise).start()
        try:
            winners = race(server)
            assert check(winners), f"serialise_writes={serialise}: {winners} writers won the same conditional PUT"
        finally:
            server.stop()


def test_lancedb_creates_appends_reads_indexes_and_optimizes_on_s3(s3):
    server = s3.server
    db = connect(s3.uri("prefix/db"))
    table = db.create_table("clips", rows(0, 256))
    for i in range(1, 5):
        before = len(server.requests)
        table.add(rows(256 * i, 256))
        # each append is one commit: a conditional PUT of the next manifest
        puts = manifest_puts(server, before)
        assert len(puts) == 1 and puts[0].conditional and puts[0].status == 200, puts
    assert table.count_rows() == 1280

    from lancedb.index import IvfPq

    table.create_index("embedding", config=IvfPq(distance_type="cosine", num_partitions=4, num_sub_vectors=4))
    table.add(rows(1280, 256))
    table.optimize()  # compacts, indexes the new rows as a delta
    table.add(rows(1536, 256))
    table.optimize()
    (index,) = [ix.name for ix in table.list_indices()]
    assert table.index_stats(index).num_indices == 2  # two deltas, as on a local disk
    table.to_lance().optimize.optimize_indices(num_indices_to_merge=2, index_names=[index])  # pylance, same options
    table.checkout_latest()
    table.optimize()
    stats = table.index_stats(index)
    assert stats.num_indices == 1 and stats.num_indexed_rows == 1792 and stats.num_unindexed_rows == 0
    assert table.stats()["fragment_stats"]["num_fragments"] == 1

    # a fresh connection (another reader) sees it all; the ANN search finds a stored vector itself
    again = connect(s3.uri("prefix/db")).open_table("clips")
    probe = rows(768, 256)["embedding"][777 - 768].values.to_numpy()  # row 777 as written
    query = again.search(probe, vector_column_name="embedding").distance_type("cosine").nprobes(4)
    hit = query.refine_factor(64).limit(1).to_arrow()  # PQ codes shortlist, exact vectors rank
    assert hit["id"].to_pylist() == [777]
    ids = again.to_arrow()["id"].to_numpy()
    assert sorted(ids) == list(range(1792))
    keys = s3.keys("prefix/db/clips.lance/")
    assert any("/_versions/" in k for k in keys) and any("/_indices/" in k for k in keys) and any("/data/" in k for k in keys)
    assert not any(k for k in s3.keys() if not k.startswith("prefix/db/")), "LanceDB wrote outside its prefix"


WRITER = """
import pathlib, sys, time
import numpy as np, pyarrow as pa, lancedb
from streamvl.storage.objectstore import resolve
uri, writer, commits, per, sync = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), pathlib.Path(sys.argv[5])
table = lancedb.connect(uri, **resolve(uri).connect_kwargs()).open_table("clips")
(sync / f"ready{writer}").touch()
while not (sync / "go").exists():  # start together: imports take seconds on a busy machine
    time.sleep(0.002)
for c in range(commits):
    start = writer * 1_000_000 + c * per
    table.add(pa.table({"id": pa.array(range(start, start + per), pa.int64()),
                        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(per * %d, np.float32)), %d)}))
""" % (DIM, DIM)


def test_two_processes_appending_at_once_lose_no_rows(s3, tmp_path):
    """Two writer processes, 20 commits each, started at the same instant: every row present once.

    Each manifest PUT is delayed 50 ms (a remote store's round trip), so the writers' first commits
    are in flight together for the same version: the one that loses gets 412 Precondition Failed,
    which shows the conditional PUT at work, and Lance rebases and commits the next version.
    Observed here: after losing, a writer backs off until the other's burst of commits ends (its
    first append took 3.7 s against 20 commits of the other, 6.9 s against 60): no loss, but a
    latency spike; streamvl's sinks commit every few seconds, not back to back."""
    server = s3.server
    connect(s3.uri("db")).create_table("clips", schema=rows(0, 1).schema)
    before = len(server.requests)
    commits, per = 20, 10
    with server.latency(0.05, "/_versions/"):
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, s3.uri("db"), str(w), str(commits), str(per), str(tmp_path)],
                                  env=s3.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for w in (1, 2)]
        try:
            deadline = time.monotonic() + 120
            while not all((tmp_path / f"ready{w}").exists() for w in (1, 2)):
                assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "a writer did not start"
                time.sleep(0.01)
            (tmp_path / "go").touch()
            outs = [p.communicate(timeout=300) for p in procs]
        finally:
            for p in procs:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ids = connect(s3.uri("db")).open_table("clips").to_arrow()["id"].to_pylist()
    expected = [w * 1_000_000 + i for w in (1, 2) for i in range(commits * per)]
    assert len(ids) == len(expected) and sorted(ids) == expected  # nothing lost, nothing twice
    puts = manifest_puts(server, before)
    won, lost = [r for r in puts if r.status == 200], [r for r in puts if r.status == 412]
    assert all(r.conditional for r in puts)
    assert len(won) == 2 * commits  # one version per append, none overwritten
    print(f"manifest PUTs: {len(won)} committed, {len(lost)} lost a race and were retried")
    assert lost, "the writers never collided: this run did not exercise concurrent commits"
