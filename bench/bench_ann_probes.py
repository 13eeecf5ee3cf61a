"""The recall/latency curve behind the ANN defaults: index variants x search parameters on the 1M-row table.

On bench/bench_queries.py's cached clips table, every index variant built so far (bench/ann_variants.py:
the IVF_PQ the store builds, and IVF_PQ with more partitions, IVF_HNSW_SQ, IVF_HNSW_PQ once built),
each in-distribution row query (a stored row perturbed to cosine ~0.9) runs through LanceDB with every
(nprobes, refine factor, ef) point, the points in a new random order per query so machine load hits
them alike; recall@10 of the top 10 of a 50-row fetch (what the query path's first fetch asks for)
against an exact numpy scan of every row. Ends with the fastest point at recall@10 >= --min-recall.

    python bench/bench_ann_probes.py [--queries 40] [--cache DIR] [--build]   (--build: build missing variants first)

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

import ann_variants as av  # noqa: E402  (the index variants)
import bench_queries as bq  # noqa: E402  (the table and the exact scan)

from streamvl.storage.schema import CLIPS, EMBEDDING  # noqa: E402
from streamvl.storage.store import Store  # noqa: E402

FETCH = 50  # rows the query path's first fetch asks for (grouping.first_pool(10))
# (nprobes, refine factor, ef) per index family: IVF_PQ probes x refine; HNSW: probes x ef (x refine for PQ)
GRIDS = {
    "IvfPq": [(p, r, None) for p in (3, 5, 10, 20) for r in (None, 2, 4, 10)],
    "HnswSq": [(p, r, ef) for p in (1, 2, 4) for ef in (60, 120, 240) for r in (None, 2) if ef >= FETCH * (r or 1)],
    "HnswPq": [(p, r, ef) for p in (1, 2, 4) for ef in (60, 120, 240) for r in (None, 2) if ef >= FETCH * (r or 1)],
}  # Lance's HNSW needs ef >= the rows it returns before the re-rank (limit x refine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default in (("--rows", int, 1_000_000), ("--streams", int, 2000), ("--dim", int, 512),
                                ("--clusters", int, 200), ("--stride", float, 4.0), ("--window", float, 8.0),
                                ("--seed", int, 0), ("--queries", int, 40), ("--noise", float, 0.5),
                                ("--min-recall", float, 0.98)):
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--cache", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "streamvl-bench-queries"))
    parser.add_argument("--variants", nargs="*", default=list(av.VARIANTS))
    parser.add_argument("--build", action="store_true", help="build missing variants first (minutes each at 1M rows)")
    parser.add_argument("--reindex", action="store_true")
    args = parser.parse_args()
    db, _ = bq.ensure_table(args)
    rq = bq.row_queries(db, args.queries, args.noise, args.seed + 1)
    exact = [set(e) for e in bq.exact_top10(db, {"rows": rq})[0]["rows"]]
    curve: list[dict] = []
    print(f"variant       nprobes refine   ef   p50 ms  p99 ms  recall@10  index MiB  ({args.queries} in-distribution "
          f"queries, fetch {FETCH}, {os.cpu_count()} cores)", flush=True)
    for name in args.variants:
        if args.build:
            av.build_variant(db, name)
        vdb = av.variant_db(db, name)
        if vdb is None:
            print(f"{name:<13} not built (python bench/ann_variants.py {name})")
            continue
        curve += variant_curve(name, vdb, rq, exact)
    best = av.choose(curve, args.min_recall)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"chosen (fastest p50 at recall@10 >= {args.min_recall}): " + ("none" if best is None else
          f"{best['variant']} nprobes {best['nprobes']} refine {best['refine']} ef {best['ef']}: p50 {best['p50_ms']:.1f} ms "
          f"p99 {best['p99_ms']:.1f} ms recall {best['recall']:.3f}"))


def variant_curve(name: str, vdb: Path, rq: np.ndarray, exact: list[set]) -> list[dict]:
    rss0 = bq.vm_rss_mib()
    handle = Store(vdb).table(CLIPS)
    grid = GRIDS[av.VARIANTS[name][0]]
    index_mib = sum(f.stat().st_size for f in (vdb / "clips.lance" / "_indices").rglob("*") if f.is_file()) / 2**20

    def run(q: np.ndarray, nprobes: int, refine: int | None, ef: int | None) -> list[tuple]:
        b = handle.search(q, vector_column_name=EMBEDDING).distance_type("cosine").nprobes(nprobes)
        b = b.select(["stream_id", "start", "_distance"]).limit(FETCH)
        b = b.refine_factor(refine) if refine else b
        got = (b.ef(ef) if ef else b).to_arrow()
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
    print(f"{name:<13} RSS of this process grew {bq.vm_rss_mib() - rss0:.0f} MiB over its searches (the index in "
          f"LanceDB's cache)")
    out = []
    for cell in grid:
        row = {"variant": name, "nprobes": cell[0], "refine": cell[1], "ef": cell[2], "p50_ms": bq.pct(ms[cell], 50),
               "p99_ms": bq.pct(ms[cell], 99), "recall": float(np.mean(hits[cell]))}
        print(f"{name:<13} {cell[0]:7d} {str(cell[1]):>6} {str(cell[2]):>4}  {row['p50_ms']:7.1f} {row['p99_ms']:7.1f}  "
              f"{row['recall']:.3f}      {index_mib:6.0f}   load {os.getloadavg()[0]:.1f}", flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main()
