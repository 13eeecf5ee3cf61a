"""The recall/latency curve behind reader.ANN_NPROBES: IVF probes x refine factor on the 1M-row table.

On bench/bench_queries.py's cached clips table (IVF_PQ, 256 partitions), each in-distribution row
query (a stored row perturbed to cosine ~0.9) runs through LanceDB with every (nprobes, refine)
pair, the pairs in a new random order per query so machine load hits them alike; recall@10 of the
top 10 of a 50-row fetch (what search_vectors asks for) against an exact numpy scan of every row.

    python bench/bench_ann_probes.py [--queries 40] [--cache DIR]

Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_queries as bq  # noqa: E402  (the table and the exact scan)

from streamvl.storage.schema import CLIPS, EMBEDDING  # noqa: E402
from streamvl.storage.store import Store  # noqa: E402

PROBES, REFINES = (5, 10, 20, 40), (None, 2, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default in (("--rows", int, 1_000_000), ("--streams", int, 2000), ("--dim", int, 512),
                                ("--clusters", int, 200), ("--stride", float, 4.0), ("--window", float, 8.0),
                                ("--seed", int, 0), ("--queries", int, 40), ("--noise", float, 0.5)):
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--cache", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "streamvl-bench-queries"))
    parser.add_argument("--reindex", action="store_true")
    args = parser.parse_args()
    db, _ = bq.ensure_table(args)
    rq = bq.row_queries(db, args.queries, args.noise, args.seed + 1)
    exact = [set(e) for e in bq.exact_top10(db, {"rows": rq})[0]["rows"]]
    handle = Store(db).table(CLIPS)
    grid = [(p, r) for p in PROBES for r in REFINES]

    def run(q: np.ndarray, nprobes: int, refine: int | None) -> list[tuple]:
        b = handle.search(q, vector_column_name=EMBEDDING).distance_type("cosine").nprobes(nprobes)
        b = b.select(["stream_id", "start", "_distance"]).limit(50)
        got = (b.refine_factor(refine) if refine else b).to_arrow()
        return list(zip(got["stream_id"].to_pylist(), got["start"].to_pylist()))[:10]

    for q in rq[:5]:  # warm the index cache
        for cell in grid:
            run(q, *cell)
    ms = {c: [] for c in grid}
    hits = {c: [] for c in grid}
    for q, want in zip(rq, exact):
        for cell in random.sample(grid, len(grid)):
            t0 = time.perf_counter()
            top = run(q, *cell)
            ms[cell].append((time.perf_counter() - t0) * 1000)
            hits[cell].append(len(set(top) & want) / 10)
    print(f"nprobes refine   p50 ms  p99 ms  recall@10  ({args.queries} in-distribution queries, limit 50, load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for cell in grid:
        print(f"{cell[0]:7d} {str(cell[1]):>6}  {bq.pct(ms[cell], 50):7.1f} {bq.pct(ms[cell], 99):7.1f}  {np.mean(hits[cell]):.3f}")


if __name__ == "__main__":
    main()
