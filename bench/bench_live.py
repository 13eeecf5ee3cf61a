"""Continuous indexing of live RTSP streams: freshness, lag, fragments, memory, recall@10.

Starts Debian's rtsp-server-perl on 127.0.0.1 and one ffmpeg per camera that pushes a looping
shapes-world video (real time, stream copy; UDP transport), then runs the streamvl runtime on all
cameras for --minutes while a reader in this process watches the tables like a user would:

  freshness   arrival wall-clock of a frame -> the moment a reader sees its row (frames table;
              polled every 0.25 s, so figures are upper bounds by up to that much). The same for
              clips: arrival of a window's last frame -> the clip row is visible.
  lag         per stream: now - arrival of its last committed frame, sampled every 10 s.
  queries     vector searches on the clips table while indexing runs (latency).
  fragments   per table, sampled every 10 s (the sinks compact every 50 writes / 60 s).
  memory      RSS of the driver and of every actor of this run, first vs last minute.
  recall@10   of LanceDB's IVF_PQ index against brute force: on the clips table the run built
              (index built by the sink once it passed --index-min-rows), and on a synthetic
              table of --recall-rows clustered vectors.

    python bench/bench_live.py [--streams 4] [--minutes 10] [--model default] [--fps 1]

Needs: apt-get install rtsp-server-perl ffmpeg. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import process_kind, rss_parts  # noqa: E402
from streamvl.config import IndexConfig, RuntimeConfig, StoreConfig  # noqa: E402
from streamvl.storage.schema import CLIPS, FRAMES, STREAMS, clips_schema  # noqa: E402
from streamvl.storage.store import Store  # noqa: E402
from streamvl.lab.synthetic.clips import iter_frames, sample_stream  # noqa: E402
from streamvl.types import StreamInfo  # noqa: E402
from tests.live_servers import RtspServer, have_rtsp_tools  # noqa: E402


def camera_video(path: Path, seed: int, seconds: float, fps: int, size: tuple[int, int]) -> Path:
    """A shapes-world stream as h264 with a keyframe every second (cameras send GOPs like this)."""
    import av

    spec = sample_stream(seed, seconds, width=size[0], height=size[1], fps=float(fps))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": str(fps), "preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i, (_, img) in enumerate(iter_frames(spec)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class Watcher:
    """A reader next to the job, in its own process (so the driver's RSS is the driver's): new
    rows -> freshness; searches while indexing; periodic lag, fragment and RSS samples."""

    def __init__(self, db: str, fps: float, root_pid: int, stop_event) -> None:
        self.store = Store(db)
        self.fps, self.root_pid = fps, root_pid
        self.stop_event = stop_event
        self.frame_fresh: list[float] = []
        self.clip_fresh: list[float] = []
        self.query_ms: list[float] = []
        self.lag: dict[str, list[float]] = defaultdict(list)
        self.fragments: dict[str, list[int]] = defaultdict(list)
        self.rss: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.anon: dict[str, list[tuple[float, float]]] = defaultdict(list)  # RssAnon: private heap only
        self._arrival: dict[tuple[str, float], float] = {}
        self._seen_wall = 0.0
        self._seen_clips: set[tuple[str, float]] = set()
        self.errors: list[str] = []

    def results(self) -> dict:
        return {k: (dict(v) if isinstance(v, defaultdict) else v) for k, v in vars(self).items()
                if k in ("frame_fresh", "clip_fresh", "query_ms", "lag", "fragments", "rss", "anon", "errors")}

    def run(self) -> None:
        last_sample = last_query = 0.0
        while not self.stop_event.wait(0.25):
            try:
                self._poll_frames()
                self._poll_clips()
                now = time.monotonic()
                if now - last_query >= 2.0:
                    self._query()
                    last_query = now
                if now - last_sample >= 10.0:
                    self._sample()
                    last_sample = now
            except Exception as exc:  # a reader must never take the bench down; count it
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _poll_frames(self) -> None:
        got = self.store.read(FRAMES, f"wallclock > {self._seen_wall!r}", ["stream_id", "pts", "wallclock"])
        if got.num_rows == 0:
            return
        now = time.time()
        for sid, pts, wall in zip(got["stream_id"].to_pylist(), got["pts"].to_pylist(), got["wallclock"].to_pylist()):
            key = (sid, round(pts, 6))
            if key not in self._arrival:
                self._arrival[key] = wall
                self.frame_fresh.append(now - wall)
            self._seen_wall = max(self._seen_wall, wall)

    def _poll_clips(self) -> None:
        since = max(0.0, max((e for _, e in self._seen_clips), default=0.0) - 60.0)
        got = self.store.read(CLIPS, f"`end` > {since!r}", ["stream_id", "start", "end"])
        if got.num_rows == 0:
            return
        now = time.time()
        for sid, start, end in zip(got["stream_id"].to_pylist(), got["start"].to_pylist(), got["end"].to_pylist()):
            key = (sid, end)
            if key in self._seen_clips:
                continue
            self._seen_clips.add(key)
            last_frame = round(end - 1.0 / self.fps, 6)
            wall = self._arrival.get((sid, last_frame))
            if wall is not None:
                self.clip_fresh.append(now - wall)

    def _query(self) -> None:
        if self.store.count(CLIPS) == 0:
            return
        vec = np.random.default_rng(len(self.query_ms)).normal(size=self.store.schema(CLIPS).field("embedding").type.list_size)
        start = time.perf_counter()
        self.store.search_clips(vec, 10, adapter="meanpool")
        self.query_ms.append((time.perf_counter() - start) * 1000)

    def _sample(self) -> None:
        now = time.time()
        for state in self.store.stream_states():
            if state.last_wallclock is not None and state.status.active:
                self.lag[state.stream_id].append(now - state.last_wallclock)
        for table in (FRAMES, CLIPS, STREAMS, "stream_events"):
            self.fragments[table].append(self.store.fragments(table))
        for proc in self._processes():
            try:
                cmd = " ".join(proc.cmdline())
                name = process_kind(cmd, proc.pid, self.root_pid)
                if name and proc.pid != os.getpid():
                    self.rss[f"{name}:{proc.pid}"].append((now, proc.memory_info().rss / 2**20))
                    self.anon[f"{name}:{proc.pid}"].append((now, rss_parts(proc.pid)["anon"]))
            except (psutil.NoSuchProcess, IndexError, FileNotFoundError):
                pass


    def _processes(self) -> list[psutil.Process]:
        """The driver and every Ray worker of this run: its descendants, plus `ray::` workers started
        since (workers with a runtime_env, e.g. the sinks, are not always children of the driver's tree)."""
        root = psutil.Process(self.root_pid)
        procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
        for p in psutil.process_iter(["cmdline", "create_time"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray::" in cmd and (p.info["create_time"] or 0) >= root.create_time():
                procs.setdefault(p.pid, p)
        return list(procs.values())


def watch(db: str, fps: float, root_pid: int, stop_event, out) -> None:
    watcher = Watcher(db, fps, root_pid, stop_event)
    watcher.run()
    watcher._sample()
    out.put(watcher.results())


def recall_at_10(store: Store, queries: np.ndarray, vectors: np.ndarray, candidates: int) -> float:
    """Mean |ANN top 10 ∩ exact top 10| / 10 over the queries (cosine; rows identified by start)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    hits = 0
    for q in queries:
        exact = set(np.argsort(-(unit @ (q / np.linalg.norm(q))))[:10].tolist())
        got = {int(r["start"]) for r in store.search_clips(q, 10, adapter="meanpool", candidates=candidates)}
        hits += len(exact & got)
    return hits / (10 * len(queries))


def synthetic_recall(work: Path, rows: int, dim: int, index_type: str) -> dict[int, float]:
    """recall@10 on a table of clustered unit vectors (like embeddings of many similar clips)."""
    import pyarrow as pa

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(64, dim))
    vectors = (centres[rng.integers(0, 64, rows)] + 0.5 * rng.normal(size=(rows, dim))).astype(np.float32)
    store = Store(work / "recall")
    for lo in range(0, rows, 10000):
        part = vectors[lo : lo + 10000]
        n = len(part)
        store.upsert(CLIPS, pa.Table.from_pydict({
            "stream_id": ["s"] * n, "start": np.arange(lo, lo + n, dtype=np.float64), "end": np.arange(lo, lo + n) + 1.0,
            "adapter": ["meanpool"] * n, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim),
            "model": ["synthetic"] * n}, schema=clips_schema(dim)))
    store.maintain(CLIPS, index_min_rows=256, index_type=index_type)
    queries = vectors[rng.integers(0, rows, 100)] + 0.1 * rng.normal(size=(100, dim)).astype(np.float32)
    return {c: recall_at_10(store, queries, vectors, c) for c in (10, 40, 100)}


def run_live(args, work: Path, urls: list[str]) -> tuple[SimpleNamespace, dict, float]:
    import ray

    from streamvl.runtime.driver import IndexRun

    from streamvl.runtime.cluster import keep_on_loopback  # 127.0.0.1 only
    keep_on_loopback()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    config = IndexConfig(db=str(work / "db"), model=args.model, sampling={"fps": args.fps},
                         live={"rtsp_transport": "udp"}, store={"index_min_rows": args.index_min_rows},
                         runtime={"sink_recycle_s": args.sink_recycle_s})
    run = IndexRun([StreamInfo(f"cam{i}", url) for i, url in enumerate(urls)], config, None).start()
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    watcher = ctx.Process(target=watch, args=(config.db, args.fps, os.getpid(), stop, out), daemon=True)
    watcher.start()
    start = time.monotonic()
    end = start + args.minutes * 60
    next_print = start + 60
    while time.monotonic() < end:
        run.step()
        if time.monotonic() >= next_print:
            next_print += 60
            frames = {s: r.frames for s, r in run.reports.items()}
            lags = {s: round(r.lag_s, 2) for s, r in run.reports.items() if r.lag_s is not None}
            print(f"  {(time.monotonic() - start) / 60:4.1f} min  frames {frames}  commit lag {lags}", flush=True)
    seconds = time.monotonic() - start
    run.flush_records()
    stop.set()
    results = out.get(timeout=120)
    watcher.join(timeout=30)
    info = {"reports": {s: vars(r) for s, r in run.reports.items()}, "model": run.info["model"],
            "sink_recycles": run.sink_recycles, "sink_recycle_failures": run.sink_recycle_failures}
    upkeep = ray.get(run.sinks[CLIPS].upkeep_now.remote())
    info["upkeep"] = upkeep
    ray.shutdown()
    return SimpleNamespace(**results), info, seconds



def print_memory(title: str, samples_by_process: dict[str, list[tuple[float, float]]], warmup_s: float) -> None:
    """One row per process: the mean of its samples within 30 s of 0/25/50/75/100% of the run,
    last/first, and the slope after warm-up (MiB/min, least squares over the samples taken
    warmup_s or later into the run: the sinks keep table versions that long, see StoreConfig)."""
    print(f"{title:<22}process              at 0%   25%   50%   75%  100% of the run   last/first"
          f"  MiB/min after {warmup_s / 60:g} min")
    for name, samples in sorted(samples_by_process.items()):
        if name.startswith("IDLE") or len(samples) < 2:
            continue
        t0, t1 = samples[0][0], samples[-1][0]
        series = [np.mean([m for t, m in samples if abs(t - (t0 + f * (t1 - t0))) <= 30]) for f in (0, .25, .5, .75, 1)]
        late = np.array([(t - t0, m) for t, m in samples if t - t0 >= warmup_s])
        slope = np.polyfit(late[:, 0] / 60, late[:, 1], 1)[0] if len(late) >= 3 else float("nan")
        print(f"                      {name:<18}" + "".join(f"{m:6.0f}" for m in series)
              + f"   {series[-1] / series[0]:14.2f}  {slope:+10.2f}")


def kind_totals(samples_by_process: dict[str, list[tuple[float, float]]], kind: str) -> dict[str, list[tuple[float, float]]]:
    """One series summing every process of `kind` sampled at the same moment: it follows the sinks
    across runtime.sink_recycle_s replacements. Only moments with the usual number of such
    processes are kept; while a new set starts next to the old one both exist for a few seconds,
    and those moments would show the overlap rather than what the sinks hold."""
    total: dict[float, float] = defaultdict(float)
    count: Counter[float] = Counter()
    for name, samples in samples_by_process.items():
        if name.startswith(f"{kind}:"):
            for t, m in samples:
                total[t] += m
                count[t] += 1
    if not total:
        return {}
    usual = Counter(count.values()).most_common(1)[0][0]
    return {f"all {kind} ({usual} at a time)": sorted((t, m) for t, m in total.items() if count[t] == usual)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate per stream")
    parser.add_argument("--model", default="default")
    parser.add_argument("--camera-fps", type=int, default=25)
    parser.add_argument("--camera-size", default="320x240")
    parser.add_argument("--index-min-rows", type=int, default=500, help="clips rows before the sink builds IVF_PQ")
    parser.add_argument("--recall-rows", type=int, default=50000)
    parser.add_argument("--sink-recycle-s", type=float, default=RuntimeConfig().sink_recycle_s,
                        help="replace the sink processes this often (0: never)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if not have_rtsp_tools():
        sys.exit("needs rtsp-server-perl and ffmpeg: apt-get install rtsp-server-perl ffmpeg")

    work = Path(tempfile.mkdtemp(prefix="streamvl-live-"))
    size = tuple(int(x) for x in args.camera_size.split("x"))
    server = RtspServer(work).start()
    try:
        for i in range(args.streams):
            video = camera_video(work / f"cam{i}.mp4", seed=i, seconds=60.0, fps=args.camera_fps, size=size)
            server.push(video, f"cam{i}", wait=False)
        time.sleep(1.5)
        print(f"{args.streams} RTSP cameras ({args.camera_size} h264 {args.camera_fps} fps, UDP) for {args.minutes:g} min, "
              f"sampling {args.fps:g} frame/s each, {os.cpu_count()} cores", flush=True)
        watcher, info, seconds = run_live(args, work, [server.url(f"cam{i}") for i in range(args.streams)])
    finally:
        server.stop()
    report(args, work, watcher, info, seconds)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def report(args, work: Path, w: SimpleNamespace, info: dict, seconds: float) -> None:
    print(f"\nmodel                 {info['model']}")
    print(f"ran                   {seconds / 60:.1f} min")
    print(f"freshness frames      p50 {pct(w.frame_fresh, 50):.2f}s  p95 {pct(w.frame_fresh, 95):.2f}s  "
          f"max {max(w.frame_fresh, default=float('nan')):.2f}s  ({len(w.frame_fresh)} frames; arrival -> visible to a reader)")
    print(f"freshness clips       p50 {pct(w.clip_fresh, 50):.2f}s  p95 {pct(w.clip_fresh, 95):.2f}s  "
          f"({len(w.clip_fresh)} clips; arrival of the window's last frame -> clip visible)")
    print(f"queries while indexing p50 {pct(w.query_ms, 50):.0f} ms  p95 {pct(w.query_ms, 95):.0f} ms  ({len(w.query_ms)})")
    expected = seconds * args.fps
    print("per stream            frames (expected ~%d)  lag p50/max (s)  reconnects  gaps  restarts  status" % expected)
    for sid, r in sorted(info["reports"].items()):
        lag = w.lag.get(sid, [])
        print(f"  {sid:<20}{r['frames']:>8}            {pct(lag, 50):5.1f} / {max(lag, default=float('nan')):5.1f}"
              f"    {r['reconnects']:>6}  {r['gaps']:>4}  {r['restarts']:>7}  {r['status']}")
    print("fragments (max/last)  " + "  ".join(f"{t} {max(v)}/{v[-1]}" for t, v in w.fragments.items() if v))
    print(f"clips table           {info['upkeep']}")
    warmup_s = StoreConfig().keep_versions_s
    print(f"sink processes        replaced {info['sink_recycles']} time(s), {info['sink_recycle_failures']} new set(s) failed to start "
          f"(runtime.sink_recycle_s {args.sink_recycle_s:g})")
    print_memory("RSS MiB", w.rss, warmup_s)
    print_memory("RssAnon MiB", w.anon, warmup_s)
    print_memory("RssAnon MiB, summed", kind_totals(w.anon, "SinkActor"), warmup_s)
    if w.errors:
        print(f"reader errors         {len(w.errors)} (first: {w.errors[0]})")
    live = Store(work / "db")
    if live.count(CLIPS) and info["upkeep"].get("indexed"):
        table = live.read(CLIPS)
        vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
        starts = table["start"].to_numpy()
        rng = np.random.default_rng(1)
        queries = vectors[rng.integers(0, len(vectors), 50)]
        # Tie-aware: the cameras loop their videos, so many clips are exact duplicates and "the"
        # exact top 10 is arbitrary among them. A returned row is a hit when its exact cosine is at
        # least the 10th best exact cosine (rows keyed by (stream, start)).
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        row = {(sid, float(st)): i for i, (sid, st) in enumerate(zip(table["stream_id"].to_pylist(), starts))}
        duplicates = len(vectors) - len(np.unique(np.round(unit, 5), axis=0))
        for cand in (10, 40, 100):
            hits = 0
            for q in queries:
                sims = unit @ (q / np.linalg.norm(q))
                kth = np.sort(sims)[-10]
                got = [row[(r["stream_id"], float(r["start"]))] for r in live.search_clips(q, 10, adapter="meanpool", candidates=cand)]
                hits += sum(bool(sims[i] >= kth - 1e-6) for i in got)
            print(f"recall@10 live clips  {hits / (10 * len(queries)):.3f}  ({len(vectors)} rows, {duplicates} exact duplicates "
                  f"of another row, tie-aware, IVF_PQ, candidates={cand})")
    else:
        print(f"recall@10 live clips  (no index: the clips table stayed below --index-min-rows {args.index_min_rows})")
    clips_schema_ = live.schema(CLIPS)
    dim = clips_schema_.field("embedding").type.list_size if clips_schema_ is not None else 128
    for cand, r in synthetic_recall(work, args.recall_rows, dim, "IVF_PQ").items():
        print(f"recall@10 synthetic   {r:.3f}  ({args.recall_rows} clustered {dim}-d rows, IVF_PQ, candidates={cand})")


if __name__ == "__main__":
    main()
