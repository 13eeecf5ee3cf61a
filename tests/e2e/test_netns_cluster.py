"""Two Ray hosts in two network namespaces (tests/e2e/netns_cluster.py): jobs submitted from
outside run on both, and a job whose host dies mid-run completes on the surviving head."""

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.netns_cluster import PREFIX, ip, netns_cluster, netns_pids, netns_unavailable, remove_stale_namespaces  # noqa: F401

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

SPREAD_JOB = """
import json, time
import ray

ray.init()
deadline = time.time() + 60
while sum(n["Alive"] for n in ray.nodes()) < 2:
    assert time.time() < deadline, "the worker node never joined"
    time.sleep(0.5)


@ray.remote(num_cpus=0.25, scheduling_strategy="SPREAD")
class Where:
    def where(self):
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}


actors = [Where.remote() for _ in range(4)]
print("PLACED " + json.dumps(ray.get([a.where.remote() for a in actors])))
"""

# Tasks append one line per attempt to a file both hosts see (namespaces share the filesystem),
# so the test knows when work runs on the worker and can see the retry on the head.
RETRY_JOB = """
import json, os, sys, time
import ray

attempts, seconds = sys.argv[1], float(sys.argv[2])
ray.init()


@ray.remote(num_cpus=0.5, max_retries=3, scheduling_strategy="SPREAD")
def work(i):
    ip = ray.util.get_node_ip_address()
    with open(attempts, "a") as f:
        f.write(json.dumps({"task": i, "ip": ip, "pid": os.getpid()}) + "\\n")
    time.sleep(seconds)
    return {"task": i, "ip": ip}


print("RESULTS " + json.dumps(ray.get([work.remote(i) for i in range(4)])))
"""


# Writers on both hosts append to one LanceDB table on S3 (moto on the bridge's root address).
S3_WRITERS_JOB = """
import json, sys
import pyarrow as pa
import ray

uri, batches = sys.argv[1], int(sys.argv[2])
ray.init()


def connect():
    import lancedb
    from streamvl.storage.objectstore import resolve

    return lancedb.connect(uri, **resolve(uri).connect_kwargs())


@ray.remote(num_cpus=0.25, scheduling_strategy="SPREAD")
class Writer:
    def write(self, w):
        ip = ray.util.get_node_ip_address()
        table = connect().open_table("clips")
        for b in range(batches):
            start = w * 1_000_000 + b * 10
            table.add(pa.table({"id": pa.array(range(start, start + 10), pa.int64()), "ip": [ip] * 10}))
        return ip


connect().create_table("clips", schema=pa.schema([("id", pa.int64()), ("ip", pa.string())]))
writers = [Writer.remote() for _ in range(2)]
print("WROTE " + json.dumps(ray.get([w.write.remote(i) for i, w in enumerate(writers)])))
"""


def write_job(tmp_path: Path, name: str, code: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "job.py").write_text(textwrap.dedent(code))
    return folder


def tagged(output: str, tag: str):
    line = next(line for line in output.splitlines() if line.startswith(tag + " "))
    return json.loads(line[len(tag) + 1:])


def test_spread_actors_run_on_both_hosts(netns_cluster, tmp_path):
    cluster = netns_cluster
    assert cluster.alive_ips() == {cluster.head_ip, cluster.worker_ip}
    out = cluster.submit(write_job(tmp_path, "spread", SPREAD_JOB), "python", "job.py")
    placed = tagged(out, "PLACED")
    assert {p["ip"] for p in placed} == {cluster.head_ip, cluster.worker_ip}, placed
    assert len({p["node_id"] for p in placed}) == 2


def test_writers_on_both_hosts_append_to_one_s3_table(netns_cluster, tmp_path, monkeypatch):
    """The nodes reach S3 (moto bound to the bridge's root address) and their commits all land."""
    import lancedb

    from streamvl.storage.objectstore import resolve
    from tests.e2e.s3_server import MotoS3

    cluster = netns_cluster
    server = MotoS3(host=cluster.host_ip).start()
    try:
        uri = f"s3://{server.make_bucket()}/db"
        out = cluster.submit(write_job(tmp_path, "s3", S3_WRITERS_JOB), "python", "job.py", uri, "10",
                             env_vars={k: v for k, v in server.env().items() if k != "AWS_ALLOW_HTTP"})
        assert sorted(tagged(out, "WROTE")) == sorted([cluster.head_ip, cluster.worker_ip])
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        table = lancedb.connect(uri, **resolve(uri).connect_kwargs()).open_table("clips").to_arrow()
        expected = sorted(w * 1_000_000 + b * 10 + i for w in (0, 1) for b in range(10) for i in range(10))
        assert sorted(table["id"].to_pylist()) == expected  # 20 commits from two hosts, none lost
        assert set(table["ip"].to_pylist()) == {cluster.head_ip, cluster.worker_ip}
        assert {r.method for r in server.requests.snapshot()} >= {"PUT", "GET"}
    finally:
        server.stop()


def test_a_job_whose_worker_host_dies_completes_on_the_head(netns_cluster, tmp_path):
    """Kill every process of the worker namespace while its tasks run: Ray notices the dead node,
    retries those tasks on the head, and the job succeeds with each task's result exactly once."""
    cluster = netns_cluster
    assert cluster.alive_ips() == {cluster.head_ip, cluster.worker_ip}
    attempts = tmp_path / "attempts.jsonl"
    job = cluster.submit(write_job(tmp_path, "retry", RETRY_JOB), "python", "job.py", str(attempts), "20", wait=False)

    def lines():
        return [json.loads(x) for x in attempts.read_text().splitlines()] if attempts.exists() else []

    deadline = time.monotonic() + 300
    while not any(a["ip"] == cluster.worker_ip for a in lines()):
        assert time.monotonic() < deadline, f"no task started on the worker: {lines()}, job {cluster.job_status(job)}"
        time.sleep(0.5)
    on_worker = {a["task"] for a in lines() if a["ip"] == cluster.worker_ip}
    killed = cluster.kill_node(cluster.worker_ns)
    assert killed and not netns_pids(cluster.worker_ns)

    assert cluster.wait_for_job(job) == "SUCCEEDED", cluster.job_logs(job)[-4000:]
    results = tagged(cluster.job_logs(job), "RESULTS")
    assert sorted(r["task"] for r in results) == [0, 1, 2, 3]  # each task's result exactly once
    finals = {r["task"]: r["ip"] for r in results}
    assert all(finals[t] == cluster.head_ip for t in on_worker), finals  # the worker's tasks finished on the head
    retried = {a["task"] for a in lines() if a["ip"] == cluster.head_ip} & on_worker
    assert retried == on_worker, lines()
    assert cluster.alive_ips() == {cluster.head_ip}
    cluster.start_worker()  # the module's cluster has two hosts again for the tests after this one
    assert cluster.alive_ips() == {cluster.head_ip, cluster.worker_ip}


def test_what_a_killed_test_run_left_is_removed_at_the_next_start():
    """A namespace (with a process in it), bridge and temp dir named for a run whose process is gone
    are deleted by remove_stale_namespaces, which NetnsCluster.start() calls first."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID that no longer runs: the "killed test run"
    run_id = "0ddba1"
    ns, bridge = f"{PREFIX}-{gone.pid}-{run_id}-head", f"svb{run_id}"
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{run_id}-"))
    ip("netns", "add", ns)
    ip("link", "add", bridge, "type", "bridge")
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        while sleeper.pid not in netns_pids(ns):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ns in remove_stale_namespaces()
        assert sleeper.wait(timeout=10) != 0  # killed
        assert ns not in ip("netns", "list").stdout
        assert ip("link", "show", bridge, check=False).returncode != 0
        assert not folder.exists()
    finally:
        sleeper.kill()
        ip("netns", "del", ns, check=False)
        ip("link", "del", bridge, check=False)


# -- jobs/index.py on the two hosts: per-node encoders, the worker killed mid-run, exactly once --

INDEX_TOML = """
[runtime]
encoders = "per-node"
encode_cpus = 0.4
decode_cpus = 0.1
sink_cpus = 0.05
torch_threads = 1
encode_batch = 8
inflight_per_stream = 1
max_active_streams = 4
restart_wait_s = 90
max_rewinds = 4
"""
FPS, WINDOW, STRIDE = 4.0, 4, 2
INDEX_ARGS = ["--model", "streamvl-tiny@random:0", "--fps", str(FPS), "--window", str(WINDOW), "--stride", str(STRIDE)]
STREAMS = [f"cam{i}" for i in range(4)]


def actors_by_ip(cluster) -> dict[str, set[str]]:
    """ALIVE actor classes on each node, from the head's state API."""
    ips = {n["node_id"]: n["node_ip"] for n in cluster.nodes()}
    placed: dict[str, set[str]] = {}
    for a in cluster.api("/api/v0/actors?limit=1000&detail=1")["data"]["result"]["result"]:
        if a["state"] == "ALIVE":
            placed.setdefault(ips.get(a["node_id"], "?"), set()).add(a["class_name"])
    return placed


def stored_keys(db: str) -> dict[str, list[tuple]]:
    """Each stream's clip keys (adapter, start) and frame keys (pts), as stored (duplicates kept)."""
    from streamvl.storage.schema import CLIPS, FRAMES
    from streamvl.storage.store import Store

    store, keys = Store(db), {}
    for r in store.read(CLIPS, columns=["stream_id", "adapter", "start"]).to_pylist():
        keys.setdefault(r["stream_id"], []).append(("clip", r["adapter"], round(r["start"], 6)))
    for r in store.read(FRAMES, columns=["stream_id", "pts"]).to_pylist():
        keys.setdefault(r["stream_id"], []).append(("frame", round(r["pts"], 6)))
    return keys


def single_process_keys(paths: dict[str, Path]) -> dict[str, list[tuple]]:
    """The keys one uninterrupted pass stores: each file decoded once in this process by the same
    sampler, its frames windowed by the same Windower (keys do not depend on the model)."""
    import numpy as np

    from streamvl.config import IndexConfig
    from streamvl.pipeline.windows import Windower
    from streamvl.sources import open_stream
    from streamvl.types import StreamInfo

    config = IndexConfig(db="unused", sampling={"fps": FPS}, clips={"window": WINDOW, "stride": STRIDE})
    keys = {}
    for sid, path in paths.items():
        pts = np.concatenate([b.pts for b in open_stream(StreamInfo(sid, str(path)), config.sampling, config.live)])
        windower = Windower(sid, WINDOW, STRIDE, 1.0 / FPS)
        windows = windower.push(pts, np.zeros((len(pts), 1), np.float32)) + windower.flush()
        keys[sid] = [("clip", "meanpool", round(w.start, 6)) for w in windows] + [("frame", round(p, 6)) for p in pts]
    return keys


@pytest.mark.timeout(900)  # the cluster, a job of 4 x 120 frames with a replay, on a loaded 2-core machine
def test_index_job_with_per_node_encoders_survives_the_worker_dying_exactly_once(netns_cluster, tmp_path,
                                                                                  monkeypatch):
    """`ray job submit -- python jobs/index.py --db s3://...` with runtime.encoders = "per-node":
    encode and decode actors run on both hosts; the worker's Ray processes are killed mid-run; the
    job completes on the head and every stream's frame and window keys equal those of one
    uninterrupted pass over the same files in this process (no duplicates, no holes), with the
    worker's streams replayed from their checkpoints."""
    from tests.e2e.s3_server import MotoS3
    from tests.videos import make_video

    cluster = netns_cluster
    if cluster.alive_ips() != {cluster.head_ip, cluster.worker_ip}:
        cluster.start_worker()
    videos = tmp_path / "videos"  # both namespaces share the filesystem
    videos.mkdir()
    paths = [make_video(videos / f"{s}.mp4", seconds=30.0, fps=8, pattern="noise", size=(96, 72), gop=8).path
             for s in STREAMS]
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "index.py").write_text((REPO / "jobs" / "index.py").read_text())
    (job_dir / "index.toml").write_text(INDEX_TOML)
    server = MotoS3(host=cluster.host_ip).start()
    try:
        db = f"s3://{server.make_bucket()}/db"
        ids = [a for s in STREAMS for a in ("--id", s)]
        env = {k: v for k, v in server.env().items() if k != "AWS_ALLOW_HTTP"} | {"OMP_NUM_THREADS": "1"}
        job = cluster.submit(job_dir, "python", "index.py", *map(str, paths), *ids, "--db", db, "--config",
                             "index.toml", *INDEX_ARGS, wait=False, env_vars=env)
        deadline = time.monotonic() + 300
        while True:
            placed = actors_by_ip(cluster)
            both = all({"EncodeActor", "DecodeActor"} <= placed.get(ip_, set())
                       for ip_ in (cluster.head_ip, cluster.worker_ip))
            if both:
                break
            status = cluster.job_status(job)
            assert status in ("PENDING", "RUNNING"), cluster.job_logs(job)[-4000:]
            assert time.monotonic() < deadline, f"actors never on both hosts: {placed}"
            time.sleep(0.5)
        assert cluster.kill_node(cluster.worker_ns) and not netns_pids(cluster.worker_ns)
        assert cluster.job_status(job) == "RUNNING"  # killed mid-run, not after the end
        assert cluster.wait_for_job(job) == "SUCCEEDED", cluster.job_logs(job)[-4000:]
        assert cluster.alive_ips() == {cluster.head_ip}

        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        got, want = stored_keys(db), single_process_keys(dict(zip(STREAMS, paths)))
        assert set(got) == set(want) == set(STREAMS)
        for sid in STREAMS:
            assert len(got[sid]) == len(set(got[sid])), f"{sid}: duplicate keys"
            assert sorted(got[sid]) == sorted(want[sid]), f"{sid}: keys differ from one uninterrupted pass"
            assert sum(k[0] == "frame" for k in got[sid]) == 120  # 30 s at 4 frames/s
        from streamvl.storage.store import Store

        rows = {s.stream_id: s for s in Store(db).stream_states()}
        assert {sid: rows[sid].status.value for sid in STREAMS} == dict.fromkeys(STREAMS, "done")
        assert sum(rows[sid].restarts or 0 for sid in STREAMS) >= 1, "no stream was replayed: the kill hit nothing"
    finally:
        server.stop()  # the last test of the module: the fixture stops the head and the namespaces
