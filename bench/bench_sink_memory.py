"""RSS of a long-running sink: many small LanceDB upserts with periodic compaction, as the sink
actors do under live streams, in a fresh process per setting.

    python bench/bench_sink_memory.py [--commits 8000]

Prints RSS every 1000 commits for glibc's default malloc arenas and for MALLOC_ARENA_MAX=2 (what
the runtime sets for its sink actors), both with the sinks' 16 MiB LanceDB caches.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, numpy as np, pyarrow as pa, psutil
sys.path.insert(0, sys.argv[3])
from streamvl.runtime.actors import SINK_CACHE_BYTES
from streamvl.store import CLIPS, Store, clips_schema
store, n, dim = Store(sys.argv[1], cache_bytes=SINK_CACHE_BYTES), int(sys.argv[2]), 128
rng, proc, out = np.random.default_rng(0), psutil.Process(), []
for i in range(n):
    emb = rng.normal(size=(1, dim)).astype(np.float32)
    store.upsert(CLIPS, pa.Table.from_pydict({"stream_id": ["s"], "start": [float(i)], "end": [i + 1.0], "adapter": ["m"],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim), "model": ["x"]},
        schema=clips_schema(dim)))
    if i % 50 == 49:
        store.maintain(CLIPS, keep_versions_s=60)
    if i % 1000 == 999:
        out.append(round(proc.memory_info().rss / 2**20))
print(" ".join(map(str, out)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=8000)
    args = parser.parse_args()
    print(f"RSS MiB after every 1000 of {args.commits} single-row upserts (compaction every 50)")
    for label, extra in (("default arenas", {}), ("MALLOC_ARENA_MAX=2", {"MALLOC_ARENA_MAX": "2"})):
        with tempfile.TemporaryDirectory() as work:
            env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | extra
            got = subprocess.run([sys.executable, "-c", CHILD, str(Path(work) / "db"), str(args.commits), str(ROOT)],
                                 env=env, capture_output=True, text=True, check=True).stdout.split()
        series = [int(x) for x in got]
        print(f"  {label:<20} {' '.join(f'{x:5d}' for x in series)}   last/second {series[-1] / series[1]:.2f}")


if __name__ == "__main__":
    main()
