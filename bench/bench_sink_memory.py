"""RSS of a long-running sink: many small LanceDB upserts with upkeep every 50 writes, as the sink
actors do under live streams, faster than real time, in a fresh process per setting.

    python bench/bench_sink_memory.py [--commits 3000] [--table frames] [--keep-versions-s 30]

Drives streamvl.sink.TableSink (the code each SinkActor runs) with one-row writes (4 cameras at
1 frame/s give each sink ~4 commits/s), three times:
  before         MALLOC_ARENA_MAX=2 only (the runtime's sink env until now) and
                 release_after_upkeep=false: one set of table handles for the whole run
  reopen + trim  release_after_upkeep=true (the default): handles and LanceDB caches reopened,
                 free heap pages returned to the OS (malloc_trim) after each upkeep
  after          the same in SINK_PROCESS_ENV (what the runtime now sets): also Arrow on the
                 system allocator instead of pyarrow's mimalloc pool
Prints RSS at 0/25/50/75/100% of the commits and last/first after warm-up (25% -> 100%), the
malloc heap in use and the LanceDB cache items at the end (100%/25% is last/first after warm-up).
The live default keeps versions for 300 s, ~1200 versions at 4 commits/s; --keep-versions-s 30
keeps about as many at this pace. Memory that scales with the version count rises until that
many seconds have passed (about half of a default run), then levels off.
Figures only; nothing is asserted.
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

from streamvl.sink import SINK_PROCESS_ENV  # noqa: E402

CHILD = r"""
import ctypes, json, sys, time
import numpy as np, pyarrow as pa, psutil
sys.path.insert(0, sys.argv[1])
from streamvl.config import StoreConfig
from streamvl.sink import TableSink
from streamvl.store import CLIPS, FRAMES, STREAMS, clips_schema, frames_schema

db, table, n, keep, release = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == "1"
class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
sink = TableSink(db, table, StoreConfig(keep_versions_s=keep, release_after_upkeep=release))
rng, proc, dim = np.random.default_rng(0), psutil.Process(), 128
rss, t0 = [], time.perf_counter()
for i in range(n):
    sid, emb = f"cam{i % 4}", rng.normal(size=(1, dim)).astype(np.float32)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim)
    if table == FRAMES:
        sink.write(pa.Table.from_pydict({"stream_id": [sid], "pts": [float(i // 4)], "wallclock": [time.time()],
                                         "embedding": vec, "model": ["m"]}, schema=frames_schema(dim)))
    elif table == CLIPS:
        sink.write(pa.Table.from_pydict({"stream_id": [sid], "start": [float(i // 4)], "end": [i // 4 + 8.0],
                                         "adapter": ["meanpool"], "embedding": vec, "model": ["m"]}, schema=clips_schema(dim)))
    else:
        sink.record_stream(sid, f"rtsp://{sid}", "running", frames_indexed=i, last_committed_pts=float(i // 4),
                           model="m", next_window=i // 4, live=True, lag_s=0.2)
    if (i + 1) * 100 % n < 100 or i == 0:
        rss.append(proc.memory_info().rss / 2**20)
print(json.dumps({"rss": rss, "heap_mib": libc.mallinfo2().uordblks / 2**20, "cache": sink.store.cache_stats(),
                  "upkeeps": sink.upkeeps, "pool": pa.default_memory_pool().backend_name, "seconds": time.perf_counter() - t0}))
"""


def run(table: str, commits: int, keep_s: float, release: bool, sink_env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as work:
        env = {k: v for k, v in os.environ.items() if k not in SINK_PROCESS_ENV} | sink_env
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(Path(work) / "db"), table, str(commits),
                              str(keep_s), "1" if release else "0"], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=3000, help="one-row writes per setting")
    parser.add_argument("--table", choices=["frames", "clips", "streams"], default="frames")
    parser.add_argument("--keep-versions-s", type=float, default=30.0, help="StoreConfig.keep_versions_s")
    args = parser.parse_args()
    print(f"{args.table} sink, {args.commits} one-row commits, upkeep every 50, "
          f"versions kept {args.keep_versions_s:g} s; RSS MiB at 0/25/50/75/100% of the commits")
    print(f"{'setting':<22} {'arrow pool':>10} {'0%':>5} {'25%':>5} {'50%':>5} {'75%':>5} {'100%':>5} {'100%/25%':>9}"
          f" {'heap in use':>12} {'cache items':>12} {'commits/s':>10}")
    results = {}
    settings = (("before", False, {"MALLOC_ARENA_MAX": "2"}), ("reopen + trim", True, {"MALLOC_ARENA_MAX": "2"}),
                ("after", True, SINK_PROCESS_ENV))
    for label, release, sink_env in settings:
        got = results[label] = run(args.table, args.commits, args.keep_versions_s, release, sink_env)
        rss = got["rss"]
        at = [rss[min(len(rss) - 1, round(q * (len(rss) - 1)))] for q in (0, 0.25, 0.5, 0.75, 1.0)]
        print(f"{label:<22} {got['pool']:>10} {' '.join(f'{x:5.0f}' for x in at)} {at[-1] / at[1]:9.3f}"
              f" {got['heap_mib']:8.1f} MiB {got['cache']['items']:12d} {args.commits / got['seconds']:10.0f}")
    before, after = results["before"]["rss"], results["after"]["rss"]
    print(f"after/before RSS at 100%: {after[-1] / before[-1]:.3f}; "
          f"growth after warm-up: before {before[-1] - before[len(before) // 4]:+.0f} MiB, "
          f"after {after[-1] - after[len(after) // 4]:+.0f} MiB")


if __name__ == "__main__":
    main()
