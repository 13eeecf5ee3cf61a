"""The frames sink of a 40-stream live run, fast-forwarded in one process (issue 43, goal 5).

    python bench/frames_sink_memory.py [--writes 3600] [--streams 40] [--every 100]
        [--no-upkeep] [--no-release] [--thumb-bytes N | --no-thumbnails] [--append] [--compact-rows 16384]
        [--keep-versions-s auto|S] [--no-tracemalloc] [--ray-buffers] [--trim-only-at-upkeep] [--compare]

Drives streamvl.storage.sink.TableSink on the `frames` table as the runtime's SinkActor builds it
(streamvl/runtime/actors.py: upkeep_first=True, watch_in_background=True, the run's StoreConfig;
the process environment SINK_PROCESS_ENV, set by re-executing this script with it). One write per
simulated second carries one frame row per stream (stream_id, pts, wallclock, 128-d embedding of the
shipped model, model, a 256x192 JPEG thumbnail; half the streams static, repeating their thumbnail),
as streamvl.pipeline.encode builds them. The sink's clock is the simulated one, so upkeep runs at
its live cadence (every optimize_every_s=60 simulated s or 50 writes) however fast the writes go.
Lance removes old versions by wall-clock age, so `--keep-versions-s auto` sets keep_versions_s
before each write to the wall-clock span of the last 300 writes (300 simulated seconds of versions
kept, as live).

Prints, every --every writes: simulated minutes, rows, fragments, versions on disk, RssAnon
(median and min of the per-write samples of that window, and the last sample), glibc heap in use
(mallinfo2), Python traced MiB (tracemalloc), LanceDB cache items, load average; then the growth
of the window medians from the first window after --warmup-min to the last.

Bisect with the flags: --no-upkeep (never compact), --no-release (keep handles and caches, no
trim), --no-thumbnails / --thumb-bytes (empty or synthetic-size thumbnails), --append (write claims
and the appender instead of the upsert), --compact-rows 0 (LanceDB's optimize), --ray-buffers
(each batch round-trips Arrow IPC, as Ray hands it to the actor), --trim-only-at-upkeep (the sink
before issue 43's fix); --compare runs that and the sink as it is, one fresh process after the
other, and prints both growths. Every database is made under a temporary directory and deleted at
the end (also on SIGTERM). Figures only; nothing is asserted.

What it found (2026-12-07): the growth follows the upsert. Each merge_insert reads the keys of
every fragment, so it allocates and frees in proportion to the table's rows; glibc kept those
pages resident until the upkeep's malloc_trim, so RssAnon between upkeeps grew with the table
(x1.10 from 10 to 60 simulated minutes; the minimum right after each upkeep's trim and the heap in
use grew ~2 MiB). Unchanged with thumbnails off or Arrow-IPC buffers; the appender path (no read
of the table) x1.03; the sink now trims after every upsert too: x1.01-1.02, ~1.5 ms per trim.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvl.storage.sink import SINK_PROCESS_ENV  # noqa: E402  (light: no lancedb at import)

LIVE_KEEP_S = 300.0  # StoreConfig.keep_versions_s, the live run's


def rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t)
                for f in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def heap_in_use_mib() -> float:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def thumbnails(streams: int, pool: int, thumb_bytes: int | None, seed: int = 0) -> list[list[bytes | None]]:
    """Per stream, the JPEGs it cycles through: `pool` moving frames, or one for a static stream
    (even streams are static). thumb_bytes: None = real JPEGs, 0 = no thumbnail (null), N = N random bytes."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    if thumb_bytes is not None:
        return [[rng.bytes(thumb_bytes) if thumb_bytes else None for _ in range(1 if s % 2 == 0 else pool)]
                for s in range(streams)]
    scenes = []
    for s in range(4):  # like the live bench: two moving and two static camera videos, shared by the streams
        frames = []
        for k in range(1 if s < 2 else pool):
            img = Image.new("RGB", (256, 192), tuple(int(c) for c in rng.integers(0, 255, 3)))
            draw = ImageDraw.Draw(img)
            for j in range(6):
                x, y = (int(40 * j + 7 * k) % 256, int(30 * j + 3 * k) % 192)
                draw.ellipse([x, y, x + 40, y + 30], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            pixels = np.asarray(img).astype(np.int16) + rng.integers(-12, 12, (192, 256, 3))  # sensor noise
            buf = io.BytesIO()
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=75)
            frames.append(buf.getvalue())
        scenes.append(frames)
    return [scenes[(0 if s % 2 == 0 else 2) + (s // 2) % 2] for s in range(streams)]


class Feed:
    """One write per simulated second: a frame row per stream, shaped as the encode stage makes them."""

    def __init__(self, streams: int, dim: int, thumbs: list[list[bytes | None]], with_thumbnails: bool) -> None:
        import numpy as np

        from streamvl.models.loading import DEFAULT_SPEC
        from streamvl.storage.schema import THUMBNAIL, frames_schema

        meta = {"streamvl.model": DEFAULT_SPEC, "streamvl.embed_dim": str(dim), "streamvl.image_size": "64",
                "streamvl.weights": "shipped", "streamvl.weights_sha256": "0" * 64}
        self.schema = frames_schema(dim, meta)
        if with_thumbnails:
            self.schema = self.schema.append(THUMBNAIL)
        self.streams, self.dim, self.thumbs = streams, dim, thumbs
        self.ids = [f"cam{i:02d}" for i in range(streams)]
        self.rng = np.random.default_rng(1)
        self.t0 = time.time()

    def batch(self, second: int):
        import numpy as np
        import pyarrow as pa

        from streamvl.pipeline.encode import fixed_size_list

        n = self.streams
        pts = second + np.linspace(0.0, 0.04, n)  # each stream's own start offset
        cols = {"stream_id": pa.array(self.ids, pa.string()), "pts": pa.array(pts, pa.float64()),
                "wallclock": pa.array(self.t0 + pts + self.rng.uniform(0.05, 0.3, n), pa.float64()),
                "embedding": fixed_size_list(self.rng.normal(size=(n, self.dim)).astype(np.float32)),
                "model": pa.array(["streamvl-shapes@v1"] * n, pa.string())}
        if "thumbnail" in self.schema.names:
            cols["thumbnail"] = pa.array([t[second % len(t)] for t in self.thumbs], pa.binary())
        return pa.Table.from_pydict(cols, schema=self.schema)


def ray_like(table):
    """The batch as a Ray actor receives it: deserialized from a serialized buffer (Arrow IPC)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return pa.ipc.open_stream(sink.getvalue()).read_all()


def versions_on_disk(db: Path) -> int:
    path = db / "frames.lance" / "_versions"
    return sum(1 for _ in path.iterdir()) if path.exists() else 0


def describe(args: argparse.Namespace) -> str:
    """The header line: load, the setting of every flag, the malloc/Arrow environment."""
    def on(flag: bool) -> str:
        return "on" if flag else "off"

    thumbs = ("JPEG" if args.thumb_bytes < 0 else f"{args.thumb_bytes} random bytes") if args.thumbnails else "none"
    trims = "at upkeep only (before the fix)" if args.trim_only_at_upkeep else "at upkeep and after upserts"
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "ARROW_DEFAULT")))
    return (f"# load {' '.join(f'{x:.1f}' for x in os.getloadavg())}; frames sink, {args.writes} writes of "
            f"{args.streams} rows (1 simulated s each); upkeep {on(args.upkeep)}, release {on(args.release)}, "
            f"thumbnails {thumbs}, {'append (claims)' if args.append else 'upsert'}, compact_rows {args.compact_rows}, "
            f"keep_versions_s {args.keep_versions_s}, tracemalloc {on(args.tracemalloc)}, ray buffers "
            f"{on(args.ray_buffers)}, sink trims {trims}, bench trims each write {on(args.trim_each_write)}; {env}")


def run(args: argparse.Namespace, db: Path) -> None:
    import tracemalloc

    from streamvl.config import StoreConfig
    from streamvl.memory import release_free_heap
    from streamvl.storage.schema import FRAMES
    from streamvl.storage.sink import TableSink

    import streamvl.storage.sink as sink_module

    trims = [0, 0.0]  # the sink's own release_free_heap calls (upkeep, and after upserts where it does so), seconds

    in_upkeep = [False]

    def timed_trim(release=sink_module.release_free_heap) -> bool:
        if args.trim_only_at_upkeep and not in_upkeep[0]:
            return False  # the sink before issue 43's fix: no trim after an upsert
        began = time.perf_counter()
        try:
            return release()
        finally:
            trims[0], trims[1] = trims[0] + 1, trims[1] + time.perf_counter() - began

    sink_module.release_free_heap = timed_trim
    if args.tracemalloc:
        tracemalloc.start()
    auto_keep = args.keep_versions_s == "auto"
    keep = LIVE_KEEP_S if auto_keep else float(args.keep_versions_s)
    never = 1e12
    config = StoreConfig(keep_versions_s=keep, release_after_upkeep=args.release, compact_rows=args.compact_rows,
                         append_hot_tables=args.append,
                         optimize_every_s=60.0 if args.upkeep else never,
                         optimize_every_writes=50 if args.upkeep else 10**9)
    sim = [0.0]
    sink = TableSink(str(db), FRAMES, config, clock=lambda: sim[0], upkeep_first=args.upkeep,
                     watch_in_background=True)
    upkeep = sink._upkeep

    def marked_upkeep():
        in_upkeep[0] = True
        try:
            return upkeep()
        finally:
            in_upkeep[0] = False

    sink._upkeep = marked_upkeep
    feed = Feed(args.streams, args.dim, thumbnails(args.streams, 60, None if args.thumb_bytes < 0 else args.thumb_bytes),
                args.thumbnails)
    print(describe(args), flush=True)
    print(f"{'writes':>6} {'sim min':>7} {'rows':>7} {'frags':>5} {'vers':>5} {'anon med':>8} {'min':>6} {'last':>6}"
          f" {'heap':>6} {'py MiB':>6} {'cache':>6} {'w/s':>5} {'load':>5}", flush=True)
    window: list[float] = []
    medians: list[tuple[float, float]] = []  # (simulated minutes at the window's end, median RssAnon)
    began = last = time.perf_counter()
    trim_s = 0.0
    stamps: deque[float] = deque(maxlen=int(LIVE_KEEP_S) + 1)  # wall-clock time of the last 301 writes
    for i in range(args.writes):
        sim[0] = float(i)
        stamps.append(time.time())
        if auto_keep and args.upkeep:  # the versions of the last 300 simulated seconds, at the speed now
            keep_s = stamps[-1] - stamps[0] + 0.5 if len(stamps) > LIVE_KEEP_S else LIVE_KEEP_S
            sink.upkeep = sink.upkeep.model_copy(update={"keep_versions_s": keep_s})
        data = feed.batch(i)
        if args.ray_buffers:
            data = ray_like(data)
        sink.write(data)
        del data
        if args.trim_each_write:
            t = time.perf_counter()
            release_free_heap()
            trim_s += time.perf_counter() - t
        window.append(rss_anon_mib())
        if (i + 1) % args.every == 0:
            now = time.perf_counter()
            traced = tracemalloc.get_traced_memory()[0] / 2**20 if args.tracemalloc else float("nan")
            stats = sink.store.cache_stats()
            medians.append(((i + 1) / 60, statistics.median(window)))
            print(f"{i + 1:6d} {(i + 1) / 60:7.1f} {(i + 1) * args.streams:7d} {sink.last_upkeep.get('fragments', 0):5d}"
                  f" {versions_on_disk(db):5d} {medians[-1][1]:8.1f} {min(window):6.1f} {window[-1]:6.1f}"
                  f" {heap_in_use_mib():6.1f} {traced:6.2f} {stats['items']:6d} {args.every / (now - last):5.1f}"
                  f" {os.getloadavg()[0]:5.1f}", flush=True)
            window, last = [], now
    sink.close()
    after = [m for t, m in medians if t > args.warmup_min]
    if len(after) >= 2:
        span = medians[-1][0] - next(t for t, _ in medians if t > args.warmup_min)
        print(f"# RssAnon window medians after {args.warmup_min:g} simulated min: {after[0]:.1f} -> {after[-1]:.1f} MiB, "
              f"x{after[-1] / after[0]:.3f} ({(after[-1] - after[0]) / span:+.3f} MiB per simulated min); "
              f"{args.writes / (time.perf_counter() - began):.1f} writes/s; sink's trims {trims[0]} ({1e3 * trims[1] / max(1, trims[0]):.2f} ms each); "
              f"bench's own trims {1e3 * trim_s / args.writes:.2f} ms/write; garbage {gc.collect()}; upkeeps {sink.upkeeps}")


def compare(argv: list[str]) -> None:
    """Before (trim at upkeep only) and after, one fresh process at a time; then both growths."""
    import re
    import subprocess

    growth = {}
    for label, extra in (("before", ["--trim-only-at-upkeep"]), ("after", [])):
        print(f"## {label}", flush=True)
        out = subprocess.run([sys.executable, __file__, *argv, *extra], capture_output=True, text=True)
        print(out.stdout, end="", flush=True)
        if out.returncode:
            raise SystemExit(f"{label} run failed:\n{out.stderr[-3000:]}")
        found = re.search(r"(\S+) -> (\S+) MiB, x(\S+) \((\S+) MiB per simulated min\); (\S+) writes/s", out.stdout)
        growth[label] = found.groups() if found else None
    if all(growth.values()):
        (b0, b1, bx, bs, bw), (a0, a1, ax, as_, aw) = growth["before"], growth["after"]
        print(f"# frames sink RssAnon growth after warm-up: before x{bx} ({b0} -> {b1} MiB, {bs} MiB/sim min, {bw} writes/s),"
              f" after x{ax} ({a0} -> {a1} MiB, {as_} MiB/sim min, {aw} writes/s); after/before at the end "
              f"{float(a1) / float(b1):.3f}; load now {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=3600, help="writes (simulated seconds)")
    parser.add_argument("--streams", type=int, default=40, help="rows per write (one per stream)")
    parser.add_argument("--dim", type=int, default=128, help="embedding width (the shipped model's: 128)")
    parser.add_argument("--every", type=int, default=100, help="print a row every this many writes")
    parser.add_argument("--warmup-min", type=float, default=10.0, help="simulated minutes before growth is measured")
    parser.add_argument("--no-upkeep", dest="upkeep", action="store_false", help="never compact")
    parser.add_argument("--no-release", dest="release", action="store_false",
                        help="store.release_after_upkeep=false: keep handles and caches, no malloc_trim")
    parser.add_argument("--thumb-bytes", type=int, default=-1, help="-1: real JPEGs (~256x192); N: N random bytes; "
                        "0: empty (null) thumbnails")
    parser.add_argument("--no-thumbnails", dest="thumbnails", action="store_false",
                        help="no thumbnail column at all (frames as written without thumbnails)")
    parser.add_argument("--append", action="store_true", help="store.append_hot_tables: write claims + appender")
    parser.add_argument("--compact-rows", type=int, default=16384, help="store.compact_rows (0: LanceDB's optimize)")
    parser.add_argument("--keep-versions-s", default="auto", help="'auto': the live 300 s scaled by the speed; or seconds")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false")
    parser.add_argument("--trim-each-write", action="store_true", help="the bench calls malloc_trim after every write")
    parser.add_argument("--trim-only-at-upkeep", action="store_true",
                        help="the sink as it was before issue 43's fix: free heap released at upkeep only")
    parser.add_argument("--compare", action="store_true", help="run --trim-only-at-upkeep and then the sink as it "
                        "is, each in a fresh process with the other flags, and print both growths")
    parser.add_argument("--ray-buffers", action="store_true", help="round-trip each batch through Arrow IPC")
    args = parser.parse_args()
    if args.keep_versions_s != "auto":
        float(args.keep_versions_s)
    if args.compare:
        compare([a for a in sys.argv[1:] if a != "--compare"])
        return
    if any(os.environ.get(k) != v for k, v in SINK_PROCESS_ENV.items()):  # the sink process's environment
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **SINK_PROCESS_ENV})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` or kill: still delete the database
    work = Path(tempfile.mkdtemp(prefix="memfr-"))
    try:
        run(args, work / "db")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
