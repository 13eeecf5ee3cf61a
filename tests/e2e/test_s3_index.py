"""streamvl on object storage: `--db s3://bucket/prefix` against moto's S3 server on 127.0.0.1.

The CLI indexes (each on its own private local Ray), searches and lists streams; upkeep builds a
small ANN index on s3://; two index processes write the same tables at once (different streams
and the same stream); the keys of the environment never reach the output, the logs or the objects
the tables are made of.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamvl.storage.schema import CLIPS, FRAMES, STREAMS
from streamvl.storage.store import Store
from tests.e2e.s3_server import ACCESS_KEY, SECRET_KEY, moto_s3, s3  # noqa: F401  (fixtures)
from tests.videos import make_video

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "streamvl"
MODEL = "streamvl-tiny@random:0"
INDEX = ["--model", MODEL, "--fps", "2", "--window", "4", "--stride", "2", "--ray-address", "local"]


def cli(*args, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *map(str, args)], env=env | {"OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def keys_of(store: Store) -> list[tuple]:
    return [(r["stream_id"], r["start"]) for r in store.read(CLIPS, columns=["stream_id", "start"]).to_pylist()]


def test_index_search_upkeep_on_s3_and_no_key_anywhere(s3, tmp_path):
    video = make_video(tmp_path / "a.mp4", seconds=6.0, fps=25, pattern="noise", size=(128, 96)).path
    db = s3.uri("lib/db")
    out = cli("index", video, "--db", db, "--id", "a", *INDEX, env=s3.env)
    assert out.returncode == 0, out.stderr[-3000:]
    store = Store(db)
    assert {CLIPS, FRAMES, STREAMS} <= set(store.table_names())
    assert store.count(FRAMES) == 12 and len(keys_of(store)) == len(set(keys_of(store))) > 0
    assert any(k.startswith("lib/db/clips.lance/") for k in s3.keys("lib/db/"))  # in the bucket, nowhere else
    streams = json.loads(cli("streams", "--db", db, "--json", env=s3.env).stdout)
    assert [(s["stream_id"], s["status"], s["frames_indexed"]) for s in streams] == [("a", "done", 12)]
    hits = cli("search", "a noisy clip", "--db", db, "--k", "3", "--json", env=s3.env)
    assert hits.returncode == 0 and json.loads(hits.stdout)[0]["stream_id"] == "a", hits.stderr[-2000:]

    # upkeep with a small ANN index: enough rows to train IVF_PQ, then a search through it
    real = store.read(CLIPS)
    extra = real.take(np.zeros(300, dtype=np.int64)).set_column(
        real.schema.get_field_index("stream_id"), "stream_id", [[f"x{i}" for i in range(300)]])
    store.upsert(CLIPS, extra)
    done = store.maintain(CLIPS, index_min_rows=256, index_type="IVF_PQ")
    assert done["indexed"] and done["rows"] == 300 + len(real) and done["fragments"] == 1
    hits = cli("search", "a noisy clip", "--db", db, "--k", "3", "--stream", "a", "--json", env=s3.env)
    assert hits.returncode == 0 and {h["stream_id"] for h in json.loads(hits.stdout)} == {"a"}, hits.stderr[-2000:]

    # the keys: not in any output, log, table metadata or stored object
    logs = "".join(p.read_text(errors="replace") for p in Path("/tmp/ray").rglob("*.log")
                   if p.stat().st_mtime > video.stat().st_mtime) if Path("/tmp/ray").exists() else ""
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert secret not in out.stdout + out.stderr + hits.stdout + hits.stderr + logs
        for table in store.table_names():
            data = store.conn.open(table).to_arrow()  # every table, the optimiser's `leases` too
            assert secret not in repr(data.schema.metadata) and secret not in data.to_string()
        client = s3.server.client()
        assert not [k for k in s3.keys("lib/") if secret.encode() in client.get_object(Bucket=s3.name, Key=k)["Body"].read()]
    missing = cli("search", "x", "--db", s3.uri("nothing/here"), env=s3.env)
    assert missing.returncode != 0 and "no database at s3://" in missing.stderr and SECRET_KEY not in missing.stderr


def test_two_index_processes_write_the_same_tables_at_once(s3, tmp_path):
    videos = {name: make_video(tmp_path / f"{name}.mp4", seconds=8.0, fps=25, pattern="noise", size=(128, 96)).path
              for name in ("p", "q", "shared")}
    db = s3.uri("two/db")
    procs = [subprocess.Popen([str(BIN), "index", str(videos[own]), str(videos["shared"]),
                               "--id", own, "--id", "shared", "--db", db, *INDEX],
                              env=s3.env | {"OMP_NUM_THREADS": "1"}, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for own in ("p", "q")]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    store = Store(db)
    keys = keys_of(store)
    assert len(keys) == len(set(keys))  # no duplicates, though both processes wrote "shared"
    by_stream = {sid: sorted(s for k, s in keys if k == sid) for sid in ("p", "q", "shared")}
    assert by_stream["p"] == by_stream["q"] == by_stream["shared"] and by_stream["p"]  # same length videos: same grid
    frames = store.read(FRAMES, columns=["stream_id", "pts"]).to_pylist()
    assert len(frames) == len({(f["stream_id"], f["pts"]) for f in frames}) == 3 * 16
    assert {s.stream_id: s.frames_indexed for s in store.stream_states()} == {"p": 16, "q": 16, "shared": 16}
