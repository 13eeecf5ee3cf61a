"""Memory of a long-running sink: many small LanceDB upserts with upkeep every 50 writes (or every
optimize_every_s seconds), as the sink actors do under live streams, in a fresh process per setting.

    python bench/bench_sink_memory.py [--commits 3000] [--table frames|clips|streams]
        [--keep-versions-s 30] [--rate 0] [--rows 1] [--settings before,...,after,tiered]
        [--compact-rows 16384] [--dim 128] [--index-min-rows 20000] [--thumbnail-bytes 0]

`tiered` is `after` with size-tiered compaction (StoreConfig.compact_rows, issue 43); every other
setting compacts with LanceDB's optimize (compact_rows=0). Also printed: the peak RssAnon of each
upkeep window (a 20 ms sampler thread) at 0/25/50/75/100% of the upkeeps.

--rows R: R rows per commit (R streams' rows; for `streams` the states of R streams in one
record_states commit, as the runtime's Recorder sends them since issue 43). `--settings after
--commits 3600 --rows 40` is an hour of 40 live streams at one commit a second.

Drives streamvl.storage.sink.TableSink (the code each SinkActor runs) with one-row writes (4 cameras at
1 frame/s give each sink ~4 commits/s; the streams sink gets a StreamState with the live columns):
  before          MALLOC_ARENA_MAX=2 only and release_after_upkeep=false: one set of table
                  handles for the whole run
  reopen + trim   release_after_upkeep=true: handles and LanceDB caches reopened, free heap
                  pages returned to the OS (malloc_trim) after each upkeep, but with the reference
                  cycles of before (a missing table found by LanceDB raising; no gc at upkeep)
  system pool     the same in SINK_PROCESS_ENV (Arrow on the system allocator): what the runtime
                  shipped before the cycle fixes
  after           what the runtime runs now: SINK_PROCESS_ENV, reopen, no LanceDB exception for a
                  missing table, cycles collected at upkeep (free_dropped_handles), trim
Prints RssAnon (the private heap) at 0/25/50/75/100% of the commits and last/first after warm-up
(100%/25%), the peak malloc heap in use after warm-up (mallinfo2), the LanceDB cache items at the
end, and objects freed by a final gc.collect() (garbage a slow process would still be holding).
--rate paces the commits (commits/s; 0 = as fast as possible). At live pace (--rate 4
--keep-versions-s 300 --commits 2400, 10 minutes per setting) the streams sink, whose upkeep also
asks for the stream_events table (missing until a live stream has an event), held each dropped
connection in a LanceDB exception's traceback cycle until Python's full gc ran (every few minutes
at that pace): a sawtooth of ~15-20 MiB of heap. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamvl.storage.sink import SINK_PROCESS_ENV  # noqa: E402

CHILD = r"""
import ctypes, gc, json, sys, time
import numpy as np, pyarrow as pa
sys.path.insert(0, sys.argv[1])
import streamvl.storage.sink
from streamvl.config import StoreConfig
from streamvl.storage.sink import TableSink
from streamvl.storage.connection import Connection
from streamvl.storage.schema import CLIPS, FRAMES, STREAMS, clips_schema, frames_schema
from streamvl.types import Status, StreamState

db, table, n, keep, release, fixed, rate, rows = (sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
                                                    sys.argv[6] == "1", sys.argv[7] == "1", float(sys.argv[8]), int(sys.argv[9]))
compact_rows, dim, index_min_rows, thumb = int(sys.argv[10]), int(sys.argv[11]), int(sys.argv[12]), int(sys.argv[13])
from streamvl.storage.schema import THUMBNAIL
if not fixed:  # the sink as shipped before: no cycle collection, missing tables found by open_table raising
    streamvl.storage.sink.free_dropped_handles = lambda: 0
    shipped_open = Connection.open
    def raising_open(self, table):
        if not self.cached(table):
            try:
                self.db.open_table(table)
            except Exception:
                pass
        return shipped_open(self, table)
    Connection.open = raising_open
class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def anon_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:")) / 1024
sink = TableSink(db, table, StoreConfig(keep_versions_s=keep, release_after_upkeep=release, compact_rows=compact_rows,
                                        index_min_rows=index_min_rows))
rng = np.random.default_rng(0)
anon, heap, t0, peak, frags = [], [], time.perf_counter(), [], []
import threading
top = [0.0]
def sample_peak():  # RssAnon every 20 ms: the peak of each upkeep (compaction) window
    while True:
        top[0] = max(top[0], anon_mib())
        time.sleep(0.02)
threading.Thread(target=sample_peak, daemon=True).start()
for i in range(n):
    sids = [f"cam{(i * rows + j) % max(4, rows)}" for j in range(rows)]
    emb = rng.normal(size=(rows, dim)).astype(np.float32)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim)
    pts = [float(i // max(1, 4 // rows))] * rows
    if table == FRAMES and thumb:  # the live encoder's frames rows carry a JPEG thumbnail
        sink.write(pa.Table.from_pydict({"stream_id": sids, "pts": pts, "wallclock": [time.time()] * rows,
                                         "embedding": vec, "model": ["m"] * rows,
                                         "thumbnail": [rng.bytes(thumb) for _ in range(rows)]},
                                        schema=frames_schema(dim).append(THUMBNAIL)))
    elif table == FRAMES:
        sink.write(pa.Table.from_pydict({"stream_id": sids, "pts": pts, "wallclock": [time.time()] * rows,
                                         "embedding": vec, "model": ["m"] * rows}, schema=frames_schema(dim)))
    elif table == CLIPS:
        sink.write(pa.Table.from_pydict({"stream_id": sids, "start": pts, "end": [p + 8.0 for p in pts],
                                         "adapter": ["meanpool"] * rows, "embedding": vec, "model": ["m"] * rows},
                                        schema=clips_schema(dim)))
    else:  # what the driver's Recorder sends: one stream's row per commit, or the rows of a step together
        states = [StreamState(sid, f"rtsp://{sid}", Status.RUNNING, frames_indexed=i, last_committed_pts=pts[0],
                              model="m", next_window=i // 4, resume_after=pts[0], grid="g", live=True,
                              last_wallclock=time.time(), lag_s=0.2, reconnects=0, gaps=0, gap_total_s=0.0,
                              last_gap_s=0.0, restarts=0, frames_skipped=0) for sid in sids]
        if rows == 1:
            sink.record_state(states[0])
        else:
            sink.record_states(states)
    if (i + 1) * 100 % n < 100 or i == 0:
        anon.append(anon_mib())
        heap.append(libc.mallinfo2().uordblks / 2**20)
    if sink.upkeeps > len(peak):  # peak RssAnon since the last upkeep (it includes this one), fragments after it
        peak.append(top[0])
        top[0] = 0.0
        frags.append(sink.last_upkeep.get("fragments", 0))
    if rate > 0:
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
seconds = time.perf_counter() - t0
print(json.dumps({"anon": anon, "heap": heap, "after_upkeep": peak, "fragments": frags, "cache": sink.store.cache_stats(), "garbage": gc.collect(),
                  "upkeeps": sink.upkeeps, "pool": pa.default_memory_pool().backend_name, "seconds": seconds}))
"""

# label -> (release_after_upkeep, reference-cycle fixes, process env, tiered compaction)
SETTINGS = {"before": (False, False, {"MALLOC_ARENA_MAX": "2"}, False),
            "reopen + trim": (True, False, {"MALLOC_ARENA_MAX": "2"}, False),
            "system pool": (True, False, SINK_PROCESS_ENV, False),
            "after": (True, True, SINK_PROCESS_ENV, False),
            "tiered": (True, True, SINK_PROCESS_ENV, True)}


def run(table: str, commits: int, keep_s: float, rate: float, setting: str, rows: int = 1, compact_rows: int = 16384,
        dim: int = 128, index_min_rows: int = 20000, thumbnail_bytes: int = 0) -> dict:
    """One setting in a fresh process; its samples and end state."""
    release, fixed, sink_env, tiered = SETTINGS[setting]
    with tempfile.TemporaryDirectory() as work:
        env = {k: v for k, v in os.environ.items() if k not in SINK_PROCESS_ENV} | sink_env
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(Path(work) / "db"), table, str(commits),
                              str(keep_s), "1" if release else "0", "1" if fixed else "0", str(rate), str(rows),
                              str(compact_rows if tiered else 0), str(dim), str(index_min_rows), str(thumbnail_bytes)],
                             env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=3000, help="one-row writes per setting")
    parser.add_argument("--table", choices=["frames", "clips", "streams"], default="frames")
    parser.add_argument("--keep-versions-s", type=float, default=30.0, help="StoreConfig.keep_versions_s")
    parser.add_argument("--rows", type=int, default=1, help="rows per commit (streams: states of that many "
                        "streams in one commit, as the runtime's Recorder sends them)")
    parser.add_argument("--rate", type=float, default=0.0, help="commits/s (0: as fast as possible)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {list(SETTINGS)}")
    parser.add_argument("--compact-rows", type=int, default=16384, help="StoreConfig.compact_rows of `tiered` "
                        "(the other settings: 0, LanceDB's optimize)")
    parser.add_argument("--dim", type=int, default=128, help="embedding width (ViT-B/32: 512)")
    parser.add_argument("--index-min-rows", type=int, default=20000, help="clips: rows before the ANN index")
    parser.add_argument("--thumbnail-bytes", type=int, default=0, help="frames: a thumbnail of this many bytes per row "
                        "(the live encoder's frames carry a JPEG thumbnail; 0: none)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.settings.split(",")]
    if unknown := set(chosen) - set(SETTINGS):
        parser.error(f"unknown settings {sorted(unknown)}")
    pace = f"{args.rate:g} commits/s" if args.rate > 0 else "as fast as possible"
    print(f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{args.table} sink, {args.commits} commits of {args.rows} row(s) ({pace}), upkeep every 50, "
          f"versions kept {args.keep_versions_s:g} s; RssAnon MiB at 0/25/50/75/100% of the commits")
    print(f"{'setting':<14} {'arrow pool':>10} {'0%':>5} {'25%':>5} {'50%':>5} {'75%':>5} {'100%':>5} {'100%/25%':>9}"
          f" {'peak heap >25%':>15} {'cache items':>12} {'garbage':>8} {'commits/s':>10}")
    results = {}
    for label in chosen:
        got = results[label] = run(args.table, args.commits, args.keep_versions_s, args.rate, label, args.rows,
                                   args.compact_rows, args.dim, args.index_min_rows, args.thumbnail_bytes)
        anon, heap = got["anon"], got["heap"]
        at = [anon[min(len(anon) - 1, round(q * (len(anon) - 1)))] for q in (0, 0.25, 0.5, 0.75, 1.0)]
        print(f"{label:<14} {got['pool']:>10} {' '.join(f'{x:5.0f}' for x in at)} {at[-1] / at[1]:9.3f}"
              f" {max(heap[len(heap) // 4:]):11.1f} MiB {got['cache']['items']:12d} {got['garbage']:8d}"
              f" {args.commits / got['seconds']:10.1f}")
    print("peak RssAnon of the upkeep windows (MiB) at 0/25/50/75/100% of the upkeeps, and fragments at the end:")
    for label, got in results.items():
        up = got["after_upkeep"]
        at = [up[min(len(up) - 1, round(q * (len(up) - 1)))] for q in (0, 0.25, 0.5, 0.75, 1.0)] if up else []
        print(f"  {label:<14} {' '.join(f'{x:5.0f}' for x in at)}  fragments {got['fragments'][-1:] or ['-']}")
    if len(results) > 1:
        base, last = results[chosen[0]], results[chosen[-1]]
        peak = [max(r["heap"][len(r["heap"]) // 4:]) for r in (base, last)]
        print(f"{chosen[-1]}/{chosen[0]}: RssAnon at 100% {last['anon'][-1] / base['anon'][-1]:.3f}, "
              f"peak heap after warm-up {peak[1] / peak[0]:.3f}; growth after warm-up: "
              + ", ".join(f"{k} {r['anon'][-1] - r['anon'][len(r['anon']) // 4]:+.1f} MiB" for k, r in results.items()))


if __name__ == "__main__":
    main()
