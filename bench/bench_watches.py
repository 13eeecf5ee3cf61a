"""What watches cost indexing, and how fast their events reach an SSE client, in one run.

    python bench/bench_watches.py [--streams 40] [--watches 1000] [--seconds 120] [--live-minutes 3]

Part 1, the clips sink (streamvl.storage.sink.TableSink, the code each clips SinkActor runs), fed
what --streams live streams at one clip window per second send it: one write of --streams clip
rows per simulated second, 512-d. Three sinks on three databases, in alternating blocks of
--block writes so all see the same machine load:
  without     TableSink(watch=False)
  synchronous TableSink(watch=True): scoring and the event write inside write() (the old path)
  background  TableSink(watch=True, watch_in_background=True): what the SinkActor runs; write()
              returns after the commit, a thread scores and writes events (search/watch_thread.py)
The watched sinks hold --watches active watches (random unit vectors; planted episodes make some
streams match some watches for 4 windows, so events open, grow and close). A block's time is its
writes plus, for the background sink, waiting at the block's end until every batch is scored and
its new events written (closes and growth of stored events are held up to 10 stream seconds to
share one upsert, as in the SinkActor: they are written inside the blocks):
rows/s with that is the sustained rate with all watch work done (goal >= 0.95 x without); the
commit path (time inside write()) is printed beside it. Commit -> SSE client latency of the
background sink's events, through a real `streamvl serve` on 127.0.0.1.

Part 2, live: --streams real live cameras (one GStreamer RTSP server on 127.0.0.1 with a mount per
camera, RTP over TCP, serving generated h264 in real time; --cameras tcp: an `ffmpeg -re` per camera
on tcp://127.0.0.1), half static scenes, as bench/bench_capacity.py, indexed by the Ray runtime (IndexRun, the
shipped model by default) into a database a `streamvl serve` serves. After --warmup s, --watches
watches are added: --real of them built from clips already indexed (threshold: just above
their best score over the stored clips of the OTHER videos and at least their 0.9 quantile over
their own video's, see real_watches, so each fires when a stream playing its video loops through
its moment, not on other footage and not all the time), the rest random
(never firing). An SSE client on /api/v1/events/stream records when
each event arrives. Latency = that arrival - the arrival (frames.wallclock, taken at decode) of
the last frame of the event's first window: the frame that completed it, so time waiting for the
window, encoding, the commit, the watcher and the SSE poll are all inside it (goal p95 <= 2 s),
split at the event's opened_at (arrival -> stored, stored -> SSE client). The goal's figure counts
the events of frames that arrived once the watches were live in the sink (from the first stored
event on; the sink rereads the watches table every few seconds); all events are printed beside it.
Every figure is printed with os.getloadavg(); the machine's free cores are estimated as
cores - the 1-min load before the run. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
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


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def add_watches(db: str, vectors: np.ndarray, threshold, prefix: str = "w") -> list[str]:
    """One upsert of len(vectors) watches (threshold: one value or one per watch)."""
    ids = [f"{prefix}{i:05d}" for i in range(len(vectors))]
    ths = np.broadcast_to(np.asarray(threshold, np.float64), (len(vectors),))
    rows = [{"watch_id": wid, "adapter": "meanpool", "name": wid, "text": wid, "embedding": v.tolist(), "streams": [],
             "threshold": float(th), "webhook": None, "quiet_s": 2.0, "created_at": now(), "active": True}
            for wid, v, th in zip(ids, vectors, ths)]
    Store(db).upsert(WATCHES, pa.Table.from_pylist(rows, schema=watches_schema(vectors.shape[1])))
    return ids


def batch(t: int, streams: int, dim: int, rng, planted: dict[int, tuple[int, np.ndarray]]) -> pa.Table:
    emb = unit(rng.standard_normal((streams, dim)).astype(np.float32))
    for s, (start, vec) in planted.items():
        if start <= t % 60 < start + 4:  # a 4-window episode matching one watch, once a minute
            emb[s] = unit(vec + 0.01 * rng.standard_normal(dim).astype(np.float32))
    rows = {"stream_id": [f"cam{s:02d}" for s in range(streams)], "start": [float(t)] * streams,
            "end": [float(t) + 4.0] * streams, "adapter": ["meanpool"] * streams,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim), "model": ["bench"] * streams}
    return pa.table(rows, schema=clips_schema(dim))


class SSEClient(threading.Thread):
    """Reads the server's event feed; records each event (its JSON) and its arrival time."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.arrived, self.events, self.stop = url, {}, {}, False

    def run(self):
        import httpx

        try:
            with httpx.Client(base_url=self.url, timeout=None) as http, http.stream("GET", "/api/v1/events/stream") as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        ev = json.loads(line[6:])
                        self.arrived.setdefault(ev["event_id"], time.time())
                        self.events.setdefault(ev["event_id"], ev)
                    if self.stop:
                        return
        except httpx.HTTPError:  # the server stopped
            if not self.stop:
                raise


def pct(xs, q):
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


# ------------------------------------------------------------------------------ part 1: the sink


def sink_cost(args, tmp: Path) -> None:
    from tests.e2e.service_support import Server

    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((args.watches, args.dim)).astype(np.float32))
    dbs = {name: str(tmp / name) for name in ("without", "synchronous", "background")}
    for name in ("synchronous", "background"):
        add_watches(dbs[name], vectors, threshold=0.8)  # random rows score ~0 +- 0.05: only planted episodes match
    planted = {s: (int(rng.integers(0, 54)), vectors[rng.integers(args.watches)]) for s in range(0, args.streams, 4)}
    sinks = {"without": TableSink(dbs["without"], CLIPS, watch=False),
             "synchronous": TableSink(dbs["synchronous"], CLIPS, watch=True),
             "background": TableSink(dbs["background"], CLIPS, watch=True, watch_in_background=True)}
    for sink in sinks.values():  # first write: table creation, watches loaded
        sink.write(batch(-10, args.streams, args.dim, rng, {}))
    sinks["background"].flush_watches()
    server = Server(dbs["background"]).start()
    client = SSEClient(server.url)
    client.start()
    time.sleep(1.0)
    spent = dict.fromkeys(sinks, 0.0)
    inside = dict.fromkeys(sinks, 0.0)  # time inside write() only
    cpu = dict.fromkeys(sinks, 0.0)  # this process's CPU time (every thread) during the block
    written_at: dict[int, float] = {}
    order = list(sinks)
    loads = [os.getloadavg()[0]]
    try:
        for b0 in range(0, args.seconds, args.block):
            ts = range(b0, min(args.seconds, b0 + args.block))
            data = [batch(t, args.streams, args.dim, rng, planted) for t in ts]
            for name in order:
                sink, t0, c0 = sinks[name], time.perf_counter(), time.process_time()
                for t, d in zip(ts, data):
                    w0 = time.perf_counter()
                    sink.write(d)
                    inside[name] += time.perf_counter() - w0
                    if name == "background":
                        written_at[t] = time.time()
                sink.flush_watches(held=False)  # closes held for a shared upsert are written on stream time, in the run
                spent[name] += time.perf_counter() - t0
                cpu[name] += time.process_time() - c0
            order = order[1:] + order[:1]
            loads.append(os.getloadavg()[0])
        deadline = time.time() + 10
        thread = sinks["background"].watch_thread
        opened = {e["event_id"]: e["start"] for e in thread.watcher.store.read("watch_events").to_pylist()}
        while time.time() < deadline and len(client.arrived) < len(opened):
            time.sleep(0.1)
    finally:
        client.stop = True
        server.stop()
        sinks["background"].close()
    rows = args.seconds * args.streams
    rate = {k: rows / v for k, v in spent.items()}
    lat = [client.arrived[e] - written_at[int(s)] for e, s in opened.items() if e in client.arrived and int(s) in written_at]
    print(f"part 1: clips sink, {args.streams} streams x {args.seconds} s (one {args.streams}-row write per s), "
          f"{args.watches} active watches, {args.dim}-d, {len(planted)} planted streams; blocks of {args.block} writes; "
          f"1-min load during it {min(loads):.2f}-{max(loads):.2f}")
    for name in sinks:
        ratio = "" if name == "without" else (f"  x{rate[name] / rate['without']:.3f} of without; "
                                              f"CPU x{cpu['without'] / cpu[name]:.3f}")
        print(f"  {name:<12} {rate[name]:7.0f} rows/s  ({spent[name] / args.seconds * 1e3:6.1f} ms/write with all watch work,"
              f" commit path {inside[name] / args.seconds * 1e3:6.1f} ms, CPU {cpu[name] / args.seconds * 1e3:5.1f} ms)"
              f"{ratio}")
    print(f"  goal: background >= 0.95 x without (rows/s; CPU x = rows per CPU-second against without).  background thread: {thread.batches} batches in {thread.drains} drains, "
          f"{thread.failures} failures, {thread.busy_s / args.seconds * 1e3:.1f} ms wall / "
          f"{thread.cpu_s / args.seconds * 1e3:.1f} ms CPU per write")
    print(f"  events stored {len(opened)}, reached the SSE client {len(lat)}")
    print(f"  commit -> SSE client   p50 {pct(lat, 50) * 1e3:7.1f} ms  p95 {pct(lat, 95) * 1e3:7.1f} ms   {load()}", flush=True)


# ------------------------------------------------------------------------------ part 2: live


def live_latency(args, tmp: Path, free_cores: float) -> None:
    import ray

    from bench.bench_live import camera_video
    from bench.capacity_cameras import live_cameras, static_video
    from streamvl.config import IndexConfig
    from streamvl.runtime.driver import IndexRun
    from streamvl.storage.schema import FRAMES
    from streamvl.types import StreamInfo
    from tests.e2e.service_support import Server

    size = (320, 240)
    static = args.streams // 2
    moving = [camera_video(tmp / f"moving{i}.mp4", seed=i, seconds=args.loop_s, fps=25, size=size) for i in range(2)]
    still = [static_video(tmp / f"static{i}.mp4", seed=i, seconds=args.loop_s, fps=25, size=size) for i in range(2)]
    cameras = live_cameras(args.cameras, moving, still, args.streams, static, args.loop_s,
                           args.warmup + args.live_minutes * 60 + 600, tmp)
    db = str(tmp / "live")
    server = client = run_ = None
    try:
        cameras.wait_ready(timeout=180.0)  # a loaded machine starts 40 ffmpeg slowly
        start_ray(ray)
        sections = {"sampling": {"fps": 1.0, "decode": "keyframes"},
                    "runtime": {"decode_cpus": 0.01, "sink_cpus": 0.01, "encode_batch": 64}}
        for item in args.set:  # section.key=value (JSON value, else a string)
            key, value = item.split("=", 1)
            section, name = key.split(".", 1)
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
            sections.setdefault(section, {})[name] = value
        config = IndexConfig(db=db, model=args.model, store_frames=True, **sections)
        print(f"part 2: config {sections}", flush=True)
        streams = [StreamInfo(f"{'static' if i < static else 'moving'}{i:02d}", url, transport=cameras.transport)
                   for i, url in enumerate(cameras.urls)]
        run_ = IndexRun(streams, config, None).start()
        start, store = time.monotonic(), Store(db)
        while time.monotonic() - start < args.warmup or moving_clips(store) < 4 * args.real:
            run_.step()  # at least --warmup s, and until the moving streams have clips to make watches of
            if time.monotonic() - start > args.warmup + 900:
                raise SystemExit(f"part 2: {moving_clips(store)} clips of moving streams after 15 min more; not measured")
        warm_s = time.monotonic() - start
        frames_before = sum(r.frames for r in run_.reports.values())
        server = Server(db).start()
        client = SSEClient(server.url)
        client.start()
        footage = {st.stream_id: f"{st.stream_id[:-2]}{i % 2}" for i, st in enumerate(streams)}  # which video each plays
        seeds, thresholds, fires = real_watches(store, args.real, args.quantile, np.random.default_rng(1), footage)
        dim = seeds.shape[1]
        rand = unit(np.random.default_rng(2).standard_normal((args.watches - len(seeds), dim)).astype(np.float32))
        add_watches(db, seeds, thresholds, prefix="real")
        add_watches(db, rand, 0.9, prefix="rand")
        added, lags, loads = time.monotonic(), [], []
        kind = "rtsp:// cameras (GStreamer, RTP over TCP" if args.cameras == "rtsp" else "tcp:// cameras (ffmpeg -re, MPEG-TS"
        print(f"part 2: live, {args.streams} {kind}; {static} static, 320x240 h264 25 fps looping {args.loop_s:g} s), "
              f"1 frame/s each, {args.model}; {args.watches} watches added "
              f"after {warm_s:.0f} s ({len(seeds)} from indexed clips, thresholds {thresholds.min():.3f}-{thresholds.max():.3f}, "
              f"above which {fires.min():.1%}-{fires.max():.1%} of the stored clips of their own video score; the rest random)",
              flush=True)
        next_sample = added + 10
        while time.monotonic() - added < args.live_minutes * 60:
            run_.step()
            if time.monotonic() >= next_sample:
                next_sample += 10
                lag = [r.lag_s for r in run_.reports.values() if r.lag_s is not None]
                lags += lag
                loads.append(os.getloadavg()[0])
                print(f"  {(time.monotonic() - added):5.0f} s  frames {sum(r.frames for r in run_.reports.values())}  "
                      f"events on SSE {len(client.arrived)}  worst lag {max(lag, default=float('nan')):.1f}s  {load()}", flush=True)
        seconds = time.monotonic() - added
        if args.timeline:  # Ray's task timeline (chrome://tracing JSON): where a frame's time goes
            ray.timeline(filename=args.timeline)
        frames_with = sum(r.frames for r in run_.reports.values()) - frames_before
        time.sleep(3.0)
        detail = []  # per event: when its completing frame arrived, when the watcher stored it, when SSE had it
        for eid, ev in client.events.items():
            clip = store.read(CLIPS, f"stream_id = '{ev['stream_id']}' AND start = {float(ev['start'])!r} "
                                     "AND adapter = 'meanpool'", columns=["end"])
            if not clip.num_rows:
                continue
            end = float(clip["end"][0].as_py())
            fr = store.read(FRAMES, f"stream_id = '{ev['stream_id']}' AND pts >= {float(ev['start'])!r} AND pts < {end!r}",
                            columns=["wallclock"])
            walls = [w for w in fr["wallclock"].to_pylist() if w is not None] if fr.num_rows else []
            if walls:
                detail.append({**ev, "frame_arrival": max(walls), "sse_arrival": client.arrived[eid], "clip_end": end,
                               "stored": dt.datetime.fromisoformat(str(ev["opened_at"])).timestamp()})
        if args.events_out:
            Path(args.events_out).write_text(json.dumps(detail, default=str))
        print(f"  {seconds:.0f} s with watches: {frames_with} frames indexed ({frames_with / seconds:.1f}/s, real time "
              f"offers {args.streams}/s); stream lag p50 {pct(lags, 50):.1f} s p95 {pct(lags, 95):.1f} s")
        print(f"  events on the SSE client {len(client.arrived)}, with their frames found {len(detail)}")
        # The watches are live in the sink from its first reload after they were added (Watcher.reload_s):
        # the first stored event marks it. Events of frames that arrived earlier waited for that reload.
        live_from = min((d["stored"] for d in detail), default=0.0)
        steady = [d for d in detail if d["frame_arrival"] >= live_from]
        for label, rows in ((f"{len(steady)} events of frames that arrived once the watches were live (the goal)", steady),
                            (f"all {len(detail)} events (incl. frames that arrived before the watches were loaded)", detail)):
            lat = [d["sse_arrival"] - d["frame_arrival"] for d in rows]
            to_store = [d["stored"] - d["frame_arrival"] for d in rows]
            sse = [d["sse_arrival"] - d["stored"] for d in rows]
            print(f"  {label}:\n    frame arrival -> SSE client   p50 {pct(lat, 50) * 1e3:7.0f} ms  p95 {pct(lat, 95) * 1e3:7.0f} ms  "
                  f"max {max(lat, default=float('nan')) * 1e3:7.0f} ms  (goal p95 <= 2000 ms)")
            print(f"    of which frame arrival -> event stored (pipeline, commit, watcher) p50 {pct(to_store, 50) * 1e3:5.0f} "
                  f"p95 {pct(to_store, 95) * 1e3:5.0f} ms; event stored -> SSE client p50 {pct(sse, 50) * 1e3:5.0f} "
                  f"p95 {pct(sse, 95) * 1e3:5.0f} ms")
        print(f"  1-min load during it {min(loads, default=0):.2f}-{max(loads, default=0):.2f} on {os.cpu_count()} cores "
              f"(~{free_cores:.1f} free before the run); {load()}", flush=True)
    finally:
        if client is not None:
            client.stop = True
        if server is not None:
            server.stop()
        if run_ is not None:
            run_.close()
        if ray.is_initialized():
            ray.shutdown()
        cameras.stop()


# ------------------------------------------------------------------------------ part 3: the pipeline


def pipeline_cost(args, tmp: Path) -> None:
    """Frames/s of whole indexing runs (Ray runtime, --streams files at full speed) into a database
    without watches and into one with --watches active ones, in the order without, with, with,
    without (--pairs 2) so a load trend falls on both arms alike."""
    import ray

    from bench.bench_live import camera_video
    from streamvl.config import IndexConfig
    from streamvl.runtime.driver import IndexRun
    from streamvl.types import StreamInfo

    videos = [camera_video(tmp / f"file{i}.mp4", seed=10 + i, seconds=args.file_s, fps=10, size=(320, 240)) for i in range(4)]
    rng = np.random.default_rng(3)
    if not args.pipe_dim:
        from streamvl.models.loading import load_model

        args.pipe_dim = load_model(args.model).embed_dim
    order = (["without", "with", "with", "without"] * args.pairs)[: 2 * args.pairs]
    rates: dict[str, list[float]] = {"without": [], "with": []}
    loads = []
    start_ray(ray)
    try:
        for i, arm in enumerate(order):
            db = str(tmp / f"pipe{i}")
            if arm == "with":
                add_watches(db, unit(rng.standard_normal((args.watches, args.pipe_dim)).astype(np.float32)), 0.5)
            config = IndexConfig(db=db, model=args.model, sampling={"fps": args.file_fps}, store_frames=True,
                                 runtime={"decode_cpus": 0.01, "sink_cpus": 0.01, "encode_batch": 64})
            streams = [StreamInfo(f"f{j:02d}", str(videos[j % len(videos)])) for j in range(args.streams)]
            run_ = IndexRun(streams, config, None)
            try:
                report = run_.run()
            finally:
                run_.close()
            rates[arm].append(report.frames / report.seconds)
            loads.append(os.getloadavg()[0])
            events = Store(db).count("watch_events") if arm == "with" else 0
            print(f"  run {i + 1} {arm:<8} {report.frames} frames in {report.seconds:6.1f} s = {rates[arm][-1]:6.1f} frames/s"
                  f"  (events {events}; {load()})", flush=True)
    finally:
        ray.shutdown()
    ratio = np.mean(rates["with"]) / np.mean(rates["without"])
    print(f"part 3: pipeline, {args.streams} files x {args.file_s:g} s at {args.file_fps:g} frame/s, {args.model}, "
          f"{args.watches} watches (random, threshold 0.5): frames/s with / without x{ratio:.3f} (goal >= 0.95); "
          f"1-min load {min(loads):.2f}-{max(loads):.2f}", flush=True)


def start_ray(ray, attempts: int = 3) -> None:
    """A private local Ray; tried again when its raylet misses Ray's fixed 30 s start-up wait (a loaded machine)."""
    for attempt in range(1, attempts + 1):
        try:
            from streamvl.runtime.cluster import keep_on_loopback  # 127.0.0.1 only
            keep_on_loopback()
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
                     _node_ip_address="127.0.0.1")
            return
        except Exception as exc:  # noqa: BLE001
            if ray.is_initialized():
                ray.shutdown()
            if attempt == attempts:
                raise
            print(f"  Ray did not start ({str(exc)[:80]}); trying again", flush=True)


def moving_clips(store: Store) -> int:
    try:
        return store.read(CLIPS, "adapter = 'meanpool' AND stream_id LIKE 'moving%'", columns=["start"]).num_rows
    except Exception:  # noqa: BLE001 (no clips table yet)
        return 0


def real_watches(store: Store, k: int, quantile: float, rng,
                 footage: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k watch vectors from indexed meanpool clips of moving streams. Each one's threshold is the
    higher of (a) its `quantile` score (default: the highest) over the stored clips of OTHER videos
    (footage: stream -> video it plays) plus MARGIN: it never fires on footage it was not made
    from; and (b) its OWN_QUANTILE score over the clips of its own video: it fires on the ~10% of
    that video nearest its moment, once each time a stream playing the video loops through it, not
    on the whole video. At most 0.995: the same moment on another stream or loop scores ~1.0. A
    quantile over every stored clip (the old rule) landed on those duplicates (threshold 1.000) and
    hardly fired. Also returns, per watch, the share of its own video's stored clips at or above it."""
    clips = store.read(CLIPS, "adapter = 'meanpool'", columns=["stream_id", "embedding"])
    emb = unit(np.stack(clips["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32))
    video = np.array([footage.get(s, s) for s in clips["stream_id"].to_pylist()])
    moving = np.array([s.startswith("moving") for s in clips["stream_id"].to_pylist()])
    pick = rng.choice(np.nonzero(moving)[0], size=min(k, int(moving.sum())), replace=False)
    seeds, scores = emb[pick], emb @ emb[pick].T  # [clips, k]
    thresholds, fires = np.empty(len(pick)), np.empty(len(pick))
    for j, i in enumerate(pick):
        own = video == video[i]
        other = scores[~own, j]
        floor = float(np.quantile(other, quantile)) + MARGIN if len(other) else 0.9
        thresholds[j] = min(max(floor, float(np.quantile(scores[own, j], OWN_QUANTILE))), 0.995)
        fires[j] = float(np.mean(scores[own, j] >= thresholds[j]))
    return seeds, thresholds, fires


MARGIN = 0.01  # part 2: a real watch's threshold above the best score of footage it was not made from ...
OWN_QUANTILE = 0.9  # ... and at least this quantile of its scores over its own video's clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--watches", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=120, help="part 1: simulated seconds (writes per sink; 0: skip part 1)")
    ap.add_argument("--block", type=int, default=10, help="part 1: writes per block")
    ap.add_argument("--dim", type=int, default=512, help="part 1: embedding size")
    ap.add_argument("--live-minutes", type=float, default=3.0, help="part 2: minutes measured with watches (0: skip)")
    ap.add_argument("--warmup", type=float, default=75.0, help="part 2: seconds indexed before the watches are added")
    ap.add_argument("--loop-s", type=float, default=30.0, help="part 2: length of the looping camera videos")
    ap.add_argument("--model", default="default")
    ap.add_argument("--real", type=int, default=20, help="part 2: watches built from indexed clips")
    ap.add_argument("--quantile", type=float, default=1.0,
                    help="part 2: their threshold: this quantile of their scores over clips of other videos (+0.01)")
    ap.add_argument("--cameras", choices=("rtsp", "tcp"), default="rtsp",
                    help="part 2: one GStreamer RTSP server with a mount per camera (rtsp), or an ffmpeg -re per camera (tcp)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="part 2: an IndexConfig setting (repeatable), e.g. runtime.streams_per_decoder=20")
    ap.add_argument("--events-out", default="", help="part 2: write every measured event (JSON) here")
    ap.add_argument("--timeline", default="", help="part 2: write Ray's task timeline (chrome://tracing JSON) here")
    ap.add_argument("--pairs", type=int, default=1, help="part 3: pipeline runs per arm (0: skip part 3)")
    ap.add_argument("--file-s", type=float, default=30.0, help="part 3: seconds per file")
    ap.add_argument("--file-fps", type=float, default=2.0, help="part 3: frames sampled per second of file")
    ap.add_argument("--pipe-dim", type=int, default=0, help="part 3: embedding size of --model (0: ask the model)")
    args = ap.parse_args()
    before = os.getloadavg()[0]
    free = max(0.0, (os.cpu_count() or 1) - before)
    print(f"{os.cpu_count()} cores, 1-min load {before:.2f} before the run (~{free:.1f} cores free)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-watches-"))
    try:
        if args.seconds > 0:
            sink_cost(args, tmp)
        if args.live_minutes > 0:
            live_latency(args, tmp, free)
        if args.pairs > 0:
            pipeline_cost(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
