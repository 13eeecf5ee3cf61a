"""Two Ray hosts in two network namespaces (tests/e2e/netns_cluster.py): jobs submitted from
outside run on both, and a job whose host dies mid-run completes on the surviving head."""

import json
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.netns_cluster import PREFIX, ip, netns_cluster, netns_pids, netns_unavailable, remove_stale_namespaces  # noqa: F401

pytestmark = pytest.mark.e2e

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
