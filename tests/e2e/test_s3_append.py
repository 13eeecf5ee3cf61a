"""The frames/clips append path (storage/appender.py) on moto's S3 server: two processes write the
same table at once, each its own stream and one stream both write (the same keys: two runs of the
same file), through TableSink as the Ray sink actors do; every row is there exactly once. And
the cost the append path exists for: a fresh group is one commit that reads no fragment, where an
upsert reads every one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamvl.config import StoreConfig
from streamvl.storage.schema import FRAMES
from streamvl.storage.sink import TableSink
from streamvl.storage.store import Store
from tests.e2e.s3_server import moto_s3, s3  # noqa: F401  (fixtures)
from tests.rows import frames, unit

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
NO_UPKEEP = StoreConfig(optimize_every_writes=10_000, optimize_every_s=1e9, append_hot_tables=True)
WRITER = """
import sys
from streamvl.config import StoreConfig
from streamvl.storage.sink import TableSink
from tests.rows import frames, unit
db, own = sys.argv[1], sys.argv[2]
sink = TableSink(db, "frames", StoreConfig(optimize_every_writes=10_000, optimize_every_s=1e9, append_hot_tables=True),
                 watch=False)
for i in range(8):
    sink.write(frames(own, [float(4 * i + k) for k in range(4)], unit(4, seed=i)))
    sink.write(frames("shared", [float(4 * i + k) for k in range(4)], unit(4, seed=100 + i)))
print(sink.appender.stats)
"""


def test_two_processes_append_the_same_table_and_stream_exactly_once(s3):
    db = s3.uri("append/db")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db, own], env=s3.env, cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for own in ("p", "q")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    got = [(r["stream_id"], r["pts"]) for r in Store(db).read(FRAMES, columns=["stream_id", "pts"]).to_pylist()]
    assert len(got) == len(set(got)) == 3 * 32
    assert {sid for sid, _ in got} == {"p", "q", "shared"}


def test_a_fresh_group_reads_no_fragment_an_upsert_reads_them_all(s3):
    appending = TableSink(s3.uri("cost/a"), FRAMES, NO_UPKEEP, watch=False)
    upserting = TableSink(s3.uri("cost/u"), FRAMES, NO_UPKEEP.model_copy(update={"append_hot_tables": False}), watch=False)
    requests = s3.server.requests
    gets = {}
    for name, sink in (("append", appending), ("upsert", upserting)):
        for i in range(12):  # 12 fragments
            sink.write(frames("cam", [float(4 * i + k) for k in range(4)], unit(4, seed=i)))
        mark = len(requests)
        sink.write(frames("cam", [float(100 + k) for k in range(4)], unit(4, seed=99)))
        gets[name] = sum(1 for r in requests.snapshot()[mark:] if r.method == "GET" and "/data/" in r.path)
    assert gets["append"] == 0 and gets["upsert"] >= 12, gets
