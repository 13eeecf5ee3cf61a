"""What watches cost indexing, and how fast their events reach an SSE client.

    python bench/bench_watches.py [--streams 40] [--watches 1000] [--seconds 60] [--dim 512]

Drives streamvl.storage.sink.TableSink, the code each clips SinkActor runs, with what 40 live
streams at one clip window per second send it: one write of 40 clip rows per simulated second.
Two sinks on two databases, writes interleaved so both see the same machine load:
  without  TableSink(watch=False)
  with     TableSink(watch=True) and 1,000 active watches (random unit vectors; a few planted
           episodes make some streams match some watches for a few windows, so events open,
           grow and close as they would)
Prints clip rows/s of each and the ratio (goal: with >= 0.95 x without), the matcher's own time
per write, and the latency from the end of each commit that opened an event to its arrival on an
SSE client of a real `streamvl serve` on 127.0.0.1 (p50/p95; goal p95 <= 2 s). Frame -> commit
time (decode, encode, the runtime's batching) comes on top of that and is not measured here.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvl.storage.schema import CLIPS, WATCHES, clips_schema, watches_schema  # noqa: E402
from streamvl.storage.sink import TableSink  # noqa: E402
from streamvl.storage.store import Store  # noqa: E402
from streamvl.storage.watches import now  # noqa: E402


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def add_watches(db: str, vectors: np.ndarray, threshold: float) -> list[str]:
    ids = [f"w{i:05d}" for i in range(len(vectors))]
    rows = [{"watch_id": wid, "adapter": "meanpool", "name": wid, "text": wid, "embedding": v.tolist(), "streams": [],
             "threshold": threshold, "webhook": None, "quiet_s": 2.0, "created_at": now(), "active": True}
            for wid, v in zip(ids, vectors)]
    Store(db).upsert(WATCHES, pa.Table.from_pylist(rows, schema=watches_schema(vectors.shape[1])))
    return ids


def batch(t: int, streams: int, dim: int, rng, planted: dict[int, tuple[int, np.ndarray]]) -> pa.Table:
    emb = unit(rng.standard_normal((streams, dim)).astype(np.float32))
    for s, (start, vec) in planted.items():
        if start <= t < start + 4:  # a 4-window episode matching one watch
            emb[s] = unit(vec + 0.01 * rng.standard_normal(dim).astype(np.float32))
    rows = {"stream_id": [f"cam{s:02d}" for s in range(streams)], "start": [float(t)] * streams,
            "end": [float(t) + 4.0] * streams, "adapter": ["meanpool"] * streams,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim), "model": ["bench"] * streams}
    return pa.table(rows, schema=clips_schema(dim))


class SSEClient(threading.Thread):
    """Reads the server's event feed; records the arrival time of each event_id."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.arrived, self.stop = url, {}, False

    def run(self):
        import httpx

        with httpx.Client(base_url=self.url, timeout=None) as http, http.stream("GET", "/api/v1/events/stream") as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.arrived.setdefault(json.loads(line[6:])["event_id"], time.time())
                if self.stop:
                    return


def pct(xs, q):
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--watches", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=60, help="simulated seconds (writes per sink)")
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    from tests.e2e.service_support import Server

    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-watches-"))
    plain_db, watched_db = str(tmp / "plain"), str(tmp / "watched")
    vectors = unit(rng.standard_normal((args.watches, args.dim)).astype(np.float32))
    add_watches(watched_db, vectors, threshold=0.8)  # random rows score ~0 +- 0.05: only planted episodes match
    planted = {s: (int(rng.integers(0, max(1, args.seconds - 6))), vectors[rng.integers(args.watches)])
               for s in range(0, args.streams, 4)}
    plain, watched = TableSink(plain_db, CLIPS, watch=False), TableSink(watched_db, CLIPS, watch=True)
    watched.write(batch(-10, args.streams, args.dim, rng, {}))  # first write: table creation, watches loaded
    plain.write(batch(-10, args.streams, args.dim, rng, {}))

    server = Server(watched_db).start()
    client = SSEClient(server.url)
    client.start()
    time.sleep(1.0)
    spent = {"without": 0.0, "with": 0.0}
    match_s, committed_at = 0.0, {}
    try:
        for t in range(args.seconds):
            data = batch(t, args.streams, args.dim, rng, planted)
            for name, sink in (("without", plain), ("with", watched)) if t % 2 else (("with", watched), ("without", plain)):
                t0 = time.perf_counter()
                if name == "with":
                    sink.write(data)
                    end = time.time()
                    for ev in watched.watcher.builder.events.values():
                        for e in ev:
                            committed_at.setdefault(e["event_id"], end)
                else:
                    sink.write(data)
                spent[name] += time.perf_counter() - t0
            t1 = time.perf_counter()
            watched.watcher.matcher.match(data["stream_id"].to_pylist(), data["start"].to_pylist(), data["end"].to_pylist(),
                                          data["adapter"].to_pylist(),
                                          data["embedding"].combine_chunks().flatten().to_numpy().reshape(args.streams, -1))
            match_s += time.perf_counter() - t1
        deadline = time.time() + 10
        while time.time() < deadline and len(client.arrived) < len(committed_at):
            time.sleep(0.1)
    finally:
        client.stop = True
        server.stop()
    rows = args.seconds * args.streams
    rate = {k: rows / v for k, v in spent.items()}
    lat = [client.arrived[e] - committed_at[e] for e in committed_at if e in client.arrived]
    print(f"{args.streams} streams x {args.seconds} s, {args.watches} active watches, {args.dim}-d, "
          f"{len(planted)} planted episodes")
    print(f"  clips sink without watches  {rate['without']:9.0f} rows/s  ({spent['without'] / args.seconds * 1e3:6.1f} ms/write)")
    print(f"  clips sink with watches     {rate['with']:9.0f} rows/s  ({spent['with'] / args.seconds * 1e3:6.1f} ms/write)"
          f"  x{rate['with'] / rate['without']:.3f} of without (goal >= 0.95)")
    print(f"  matcher alone ({args.streams} rows x {args.watches} watches, one product) "
          f"{match_s / args.seconds * 1e3:.2f} ms/write")
    print(f"  events opened {len(committed_at)}, reached the SSE client {len(lat)}")
    print(f"  commit -> SSE client        p50 {pct(lat, 50) * 1e3:7.1f} ms  p95 {pct(lat, 95) * 1e3:7.1f} ms  (goal p95 <= 2000 ms)")


if __name__ == "__main__":
    main()
