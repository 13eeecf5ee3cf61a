"""ANN index variants of bench_queries' cached clips table, each built once and cached on disk.

A variant is a copy of the cached table (data files hard-linked: Lance never rewrites them; the
manifests copied) under <cache>/<table key>/ann/<name>/db with its own vector index on
clips.embedding. Builds are heavy at 1M rows on 2 cores (minutes), so each is done once, one at a
time, and marked by built.json; `python bench/ann_variants.py NAME...` builds the named ones.

    python bench/ann_variants.py [hnsw_sq ivf_pq_1024 hnsw_pq ivf_pq_256_sv64] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_queries as bq  # noqa: E402

from streamvl.storage.schema import CLIPS, EMBEDDING  # noqa: E402
from streamvl.storage.store import Store  # noqa: E402

# name -> (lancedb.index config class, its options). "ivf_pq_256" is the table as Store.maintain built it.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ivf_pq_256": ("IvfPq", {"num_partitions": 256, "num_sub_vectors": 128}),
    "hnsw_sq": ("HnswSq", {"num_partitions": 16, "m": 16, "ef_construction": 150}),
    "ivf_pq_1024": ("IvfPq", {"num_partitions": 1024, "num_sub_vectors": 128}),
    "ivf_pq_256_sv64": ("IvfPq", {"num_partitions": 256, "num_sub_vectors": 64}),  # half the PQ code to scan
    "hnsw_pq": ("HnswPq", {"num_partitions": 16, "num_sub_vectors": 128, "m": 16, "ef_construction": 150}),
}
BASE = "ivf_pq_256"


def variant_db(table_db: Path, name: str) -> Path | None:
    """The db directory of a built variant (the cached table itself for the base), else None."""
    if name == BASE:
        return table_db
    root = table_db.parent / "ann" / name
    return root / "db" if (root / "built.json").exists() else None


def _link_copy(src: Path, dst: Path) -> None:
    """Copy a Lance dataset: data and index files hard-linked (immutable), the rest copied."""
    for path in src.rglob("*"):
        out = dst / path.relative_to(src)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.parts[len(src.parts)] in ("data", "_indices"):
            out.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, out)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


def build_variant(table_db: Path, name: str) -> dict[str, Any]:
    """Build (once) the variant's index on a linked copy of the table; returns its built.json."""
    import lancedb.index

    root = table_db.parent / "ann" / name
    marker = root / "built.json"
    if name == BASE or marker.exists():
        return json.loads(marker.read_text()) if marker.exists() else {"name": name}
    shutil.rmtree(root, ignore_errors=True)
    for table in ("clips.lance", "streams.lance"):
        _link_copy(table_db / table, root / "db" / table)
    kind, options = VARIANTS[name]
    config = getattr(lancedb.index, kind)(distance_type="cosine", **options)
    handle = Store(root / "db").table(CLIPS)
    print(f"building {name}: {kind} {options} on {handle.count_rows()} rows", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    handle.create_index(EMBEDDING, config=config, replace=True)
    info = {"name": name, "kind": kind, "options": options, "build_s": time.perf_counter() - t0,
            "build_cpu_s": time.process_time() - c0, "load": os.getloadavg()[0]}
    marker.write_text(json.dumps(info, indent=1))
    print(f"built {name} in {info['build_s']:.0f} s (CPU {info['build_cpu_s']:.0f} s, load {info['load']:.1f})", flush=True)
    return info


def choose(curve: list[dict[str, Any]], min_recall: float) -> dict[str, Any] | None:
    """The fastest point of a recall/latency curve (dicts with recall, p50_ms, p99_ms) whose recall@10
    is at least min_recall; ties on p50 go to the lower p99, then the higher recall. None if none qualifies."""
    ok = [c for c in curve if c["recall"] >= min_recall]
    return min(ok, key=lambda c: (c["p50_ms"], c["p99_ms"], -c["recall"])) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=[n for n in VARIANTS if n != BASE])
    for flag, kind, default in (("--rows", int, 1_000_000), ("--streams", int, 2000), ("--dim", int, 512),
                                ("--clusters", int, 200), ("--stride", float, 4.0), ("--window", float, 8.0),
                                ("--seed", int, 0)):
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--cache", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "streamvl-bench-queries"))
    args = parser.parse_args()
    args.reindex = False
    db, _ = bq.ensure_table(args)
    for name in args.names:  # one heavy build at a time
        build_variant(db, name)


if __name__ == "__main__":
    main()
