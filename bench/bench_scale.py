"""Scale-out costs, in one run: the same Arrow batches committed to a local directory and to S3,
and the same streams indexed on one Ray node and on two.

    python bench/bench_scale.py [--commits 100] [--rows 64] [--dim 512] [--latency-ms 20]
                                [--modes append,upsert,claimed] [--streams 4] [--seconds 60] [--no-nodes]

Targets (each a fresh database):
  local        a directory under /tmp (the baseline)
  s3 (moto)    moto's S3 server on 127.0.0.1 (tests/e2e/s3_server.py): Lance's S3 client, HTTP and
               the request pattern, with moto's sub-millisecond answers
  s3 +N ms     the same with every request delayed N ms: a model of a remote store's round trip
               (same-region S3 is ~10-30 ms per small request), not a measurement of one
Modes:
  append       lancedb table.add: one commit of new rows (the write-fragments-then-commit pattern)
  upsert       streamvl.storage.store.Store.upsert: merge_insert on the clips keys, what the sink
               actors committed before the append path (it reads the keys of the rows already
               there: grows with the table); still what replays and the other tables use
  claimed      the sinks' path for frames and clips (storage/appender.py): a write group that a
               write claim proves new is appended (one commit); claims taken and renewed in the
               `leases` table (their commits and reads are counted here too)
Per commit: p50/p99 latency, bytes uploaded (S3) or added on disk (local), S3 requests by method
(mean over all commits, and GETs over the last 20%: what a table of that many fragments costs).
After the commits: one Store.maintain (compaction), its time and requests. The first commit
creates the table and is reported apart. Figures only; nothing is asserted.

Nodes (root only; --no-nodes skips it): the network-namespace cluster of tests/e2e/netns_cluster.py
(two Ray nodes of one Ray CPU each). `jobs/index.py` is submitted with runtime.encoders = "per-node"
over the same generated streams twice, into fresh local databases: with both nodes up (an encoder
and decoders on each), then after the worker node is stopped (the head alone). frames/s is the
run report's frames over its seconds (actor start-up and model load excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvl.storage.objectstore import resolve  # noqa: E402
from streamvl.storage.store import CLIPS, Store  # noqa: E402
from streamvl.storage.schema import clips_schema
from tests.e2e.s3_server import MotoS3  # noqa: E402

NODE_TOML = """
[runtime]
encoders = "per-node"
encode_cpus = 0.4
decode_cpus = 0.1
sink_cpus = 0.05
torch_threads = 1
max_active_streams = 8
"""
NODE_ARGS = ["--model", "streamvl-tiny@random:0", "--fps", "8", "--window", "8", "--stride", "4", "--json"]


def batches(commits: int, rows: int, dim: int, seed: int = 0) -> list[pa.Table]:
    """clips rows as a sink writes them: `rows` windows of one stream per commit, float32 embeddings."""
    rng = np.random.default_rng(seed)
    schema = clips_schema(dim, meta={"streamvl.model": "bench"})
    out = []
    for c in range(commits):
        starts = (c * rows + np.arange(rows)) * 2.0
        vectors = rng.standard_normal((rows, dim), dtype=np.float32)
        out.append(pa.table({"stream_id": [f"cam{c % 8:04d}"] * rows, "start": starts, "end": starts + 4.0,
                             "adapter": ["meanpool"] * rows,
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
                             "model": ["bench"] * rows}, schema=schema))
    return out


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Target:
    """One database location and how to read its costs."""

    def __init__(self, name: str, uri: str, server: MotoS3 | None = None, folder: Path | None = None) -> None:
        self.name, self.uri, self.server, self.folder = name, uri, server, folder

    def mark(self) -> int:
        return len(self.server.requests) if self.server else disk_bytes(self.folder)

    def cost(self, mark: int) -> tuple[int, Counter]:
        """(bytes written, requests by method) since mark."""
        if self.server is None:
            return disk_bytes(self.folder) - mark, Counter()
        log = self.server.requests.snapshot()[mark:]
        return sum(r.received for r in log), Counter(r.method for r in log)


def run(target: Target, mode: str, data: list[pa.Table]) -> dict:
    """Commit every batch to a fresh table; latencies and costs per commit, then one upkeep."""
    store = Store(target.uri)
    if mode == "append":
        import lancedb

        db = lancedb.connect(target.uri, **resolve(target.uri).connect_kwargs())

        def commit(batch: pa.Table, table: list) -> None:
            if table:
                table[0].add(batch)
            else:
                table.append(db.create_table(CLIPS, batch))
    elif mode == "claimed":
        from streamvl.storage.appender import Appender

        appender = Appender(store.conn, CLIPS)

        def commit(batch: pa.Table, table: list) -> None:
            with store.writer.group(CLIPS, appender.commit) as group:
                group.write(batch)
    else:
        def commit(batch: pa.Table, table: list) -> None:
            store.upsert(CLIPS, batch)
    handle: list = []
    seconds, written, requests, gets = [], [], Counter(), []
    for i, batch in enumerate(data):
        mark = target.mark()
        began = time.perf_counter()
        commit(batch, handle)
        elapsed = time.perf_counter() - began
        size, calls = target.cost(mark)
        if i == 0:
            first = (elapsed, size, calls)
            continue
        seconds.append(elapsed)
        written.append(size)
        requests += calls
        gets.append(calls.get("GET", 0))
    mark, began = target.mark(), time.perf_counter()
    upkeep = store.maintain(CLIPS, index_min_rows=None)
    upkeep_s = time.perf_counter() - began
    _, upkeep_calls = target.cost(mark)
    n = len(seconds)
    return {"first": first, "p50": statistics.median(seconds), "p99": float(np.percentile(seconds, 99)),
            "last": statistics.median(seconds[-max(1, n // 5):]), "bytes": statistics.mean(written),
            "requests": {k: v / n for k, v in sorted(requests.items())}, "upkeep_s": upkeep_s,
            "last_gets": statistics.mean(gets[-max(1, n // 5):]),
            "upkeep_requests": dict(sorted(upkeep_calls.items())), "fragments": upkeep["fragments"], "rows": upkeep["rows"]}


def job_report(logs: str) -> dict:
    """The `index --json` report at the end of a job's logs."""
    start = logs.rfind('{\n  "model"')
    return json.JSONDecoder().raw_decode(logs[start:])[0]


def index_on(cluster, job_dir: Path, videos: list[Path], db: Path) -> dict:
    """Submit jobs/index.py over the videos into db; frames, seconds and frames/s of its report."""
    ids = [a for i in range(len(videos)) for a in ("--id", f"cam{i}")]
    logs = cluster.submit(job_dir, "python", "index.py", *map(str, videos), *ids, "--db", str(db), "--config",
                          "index.toml", *NODE_ARGS, env_vars={"OMP_NUM_THREADS": "1"})
    report = job_report(logs)
    frames = sum(s["frames"] for s in report["streams"])
    assert all(s["status"] == "done" for s in report["streams"]), report["streams"]
    return {"frames": frames, "seconds": report["seconds"], "fps": frames / report["seconds"]}


def head_alone(cluster, timeout: float = 60.0) -> None:
    """Stop the worker node and wait until the head reports it dead (per-node encoders go only to alive nodes)."""
    cluster.kill_node(cluster.worker_ns)
    deadline = time.monotonic() + timeout
    while cluster.alive_ips() != {cluster.head_ip}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker node is still reported alive {timeout:.0f}s after it was stopped")
        time.sleep(0.5)


def nodes_table(streams: int, seconds: float) -> None:
    """frames/s of the same streams indexed on two nodes, then on the head alone (see the module doc)."""
    from tests.e2e.netns_cluster import NetnsCluster, netns_unavailable
    from tests.videos import make_video

    reason = netns_unavailable()
    if reason:
        print(f"\none node vs two: skipped ({reason})")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-nodes-"))  # both namespaces share the filesystem
    videos = [make_video(work / f"cam{i}.mp4", seconds=seconds, fps=8, pattern="noise", size=(128, 96)).path
              for i in range(streams)]
    job_dir = work / "job"
    job_dir.mkdir()
    (job_dir / "index.py").write_text((ROOT / "jobs" / "index.py").read_text())
    (job_dir / "index.toml").write_text(NODE_TOML)
    cluster = NetnsCluster().start()
    try:
        print(f"\none node vs two: {streams} streams x {seconds:g} s at 8 frames/s, jobs/index.py by job submission, "
              f"runtime.encoders = per-node, local-disk tables")
        print(f"{'nodes':<6} {'frames':>7} {'seconds':>8} {'frames/s':>9} {'ratio':>6}  load average (1, 5, 15 min)")
        rows = [("2", lambda: index_on(cluster, job_dir, videos, work / "db2"))]
        rows.append(("1", lambda: (head_alone(cluster), index_on(cluster, job_dir, videos, work / "db1"))[1]))
        base = None
        for name, measure in rows:
            r = measure()
            base = base or r["fps"]
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"{name:<6} {r['frames']:>7} {r['seconds']:>8.1f} {r['fps']:>9.1f} {r['fps'] / base:>6.2f}  {load}")
        print("Two nodes of one Ray CPU each here are two network namespaces on one 2-core machine shared with other "
              "work: they show that decoding and encoding run on both nodes and what the cross-node traffic and "
              "per-node encoders cost, not how throughput scales with real hosts; a ratio near 1 (or below) means "
              "the two cores were already busy, not that a second host would not help.")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def fmt_requests(per: dict) -> str:
    return " ".join(f"{k} {v:.1f}" for k, v in per.items()) if per else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--rows", type=int, default=64, help="clip rows per commit")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (ViT-B/32: 512; the shipped tiny model: 128)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added per S3 request in the modelled remote target (0: skip it)")
    parser.add_argument("--modes", default="append,upsert,claimed")
    parser.add_argument("--streams", type=int, default=4, help="streams of the one- vs two-node runs")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each of those streams")
    parser.add_argument("--no-nodes", action="store_true", help="skip the one- vs two-node runs (they need root)")
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    data = batches(args.commits + 1, args.rows, args.dim)
    arrow_bytes = data[0].nbytes
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = MotoS3().start()
    saved = dict(os.environ)
    os.environ.update(server.env())  # Store (not yet given storage_options) reaches S3 through these
    print(f"{args.commits} commits of {args.rows} clip rows x {args.dim}-d float32 ({arrow_bytes / 1024:.0f} KiB of Arrow each), "
          f"after one that creates the table; lancedb/Lance via {server.endpoint}")
    print(f"{'target':<14} {'mode':<7} {'create s':>8} {'p50 ms':>8} {'p99 ms':>8} {'last20% ms':>10} {'KiB/commit':>10}  "
          f"{'S3 requests/commit':<28} {'GET last20%':>11} {'upkeep s':>8}  upkeep requests")
    try:
        for mode in args.modes.split(","):
            targets = [Target("local", str(work / f"local-{mode}"), folder=work / f"local-{mode}"),
                       Target("s3 (moto)", f"s3://{server.make_bucket()}/db", server=server)]
            if args.latency_ms > 0:
                targets.append(Target(f"s3 +{args.latency_ms:g} ms", f"s3://{server.make_bucket()}/db", server=server))
            base = None
            for target in targets:
                if target.folder is not None:
                    target.folder.mkdir(parents=True)
                delayed = target.name.startswith("s3 +")
                with server.latency(args.latency_ms / 1000 if delayed else 0.0):
                    r = run(target, mode, data)
                base = base or r["p50"]
                print(f"{target.name:<14} {mode:<7} {r['first'][0]:>8.3f} {r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} "
                      f"{r['last'] * 1e3:>10.1f} {r['bytes'] / 1024:>10.0f}  {fmt_requests(r['requests']):<28} "
                      f"{r['last_gets'] if target.server else float('nan'):>11.1f} {r['upkeep_s']:>8.2f}  {fmt_requests(r['upkeep_requests'])}   (p50 x{r['p50'] / base:.1f} of local; "
                      f"load {os.getloadavg()[0]:.1f})")
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.no_nodes:
        nodes_table(args.streams, args.seconds)


if __name__ == "__main__":
    main()
