"""Queries at scale: end-to-end text search over a large clips table (latency, recall@10, memory).

Builds (or reuses, from --cache) a clips table of --rows 512-d embeddings with the structure of a
real index: --streams streams, each a slowly drifting random walk on the sphere around one of
--clusters topic centres plus a shared mean direction (CLIP embeddings share one), one clip every
--stride seconds (window --window s), written through streamvl's own store writer and schema; then
builds the ANN index the way the store's upkeep does (Store.maintain: IVF_PQ, cosine).

Two query processes of their own, one per column (so each RSS is a query server's): `baseline`
(main's query defaults before issue 43's work: fp32 text tower, refine 10 x the first fetch, a streams
read per search) and
`defaults` (today's code). Each times
`streamvl.api.search(text, db)`, the path `streamvl search` takes: model and adapter text encoding
(ViT-B-32 text tower with RANDOM weights: right for timing, meaningless for relevance), vector
search with the prefilter, IVF_PQ + exact refine, streams lookup, segment merge. Stage times come
from timers wrapped around the real functions. recall@10 compares the clip-level ANN top 10
(Store.search_clips, the search the API runs) with brute force over the same table (numpy, every
row), for two query sets:
  rows   stored row vectors perturbed to cosine ~0.9: in distribution, the honest recall figure
  text   the random-weight text embeddings: far from every row (out of distribution)

    python bench/bench_queries.py [--rows 1000000] [--streams 2000] [--queries 300] [--cache DIR]

Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl.storage.schema import CLIPS, EMBEDDING, STREAMS, clips_schema, streams_table  # noqa: E402
from streamvl.storage.store import Store  # noqa: E402
from streamvl.types import Status, StreamState  # noqa: E402

MODEL = "ViT-B-32@random:0"
ADAPTER = "meanpool"
GEN_VERSION = 1  # bump when the generator changes, so cached tables are rebuilt
WORDS = ("red", "blue", "green", "car", "person", "dog", "street", "turning", "left", "right", "running", "door",
         "opening", "kitchen", "night", "rain", "bicycle", "crowd", "train", "arriving", "empty", "parking", "lot")


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the synthetic table


def generator_key(args: argparse.Namespace) -> str:
    params = (GEN_VERSION, args.rows, args.streams, args.dim, args.clusters, args.stride, args.window, args.seed)
    return "clips-" + hashlib.sha1(repr(params).encode()).hexdigest()[:12]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def stream_walks(rng: np.random.Generator, centres: np.ndarray, mean_dir: np.ndarray, n_streams: int,
                 n_clips: int, rho: float = 0.97) -> np.ndarray:
    """[n_streams, n_clips, dim] unit vectors: mean direction + the stream's topic centre + a
    per-stream offset + an AR(1) drift (adjacent clips have cosine ~0.95) + a little clip noise."""
    dim = centres.shape[1]
    s = 1.0 / np.sqrt(dim)  # per-dimension std of a unit-norm Gaussian direction
    topic = centres[rng.integers(0, len(centres), n_streams)]
    base = 0.8 * mean_dir + topic + 0.6 * rng.normal(scale=s, size=(n_streams, dim))
    drift = rng.normal(scale=s, size=(n_streams, dim))
    out = np.empty((n_streams, n_clips, dim), np.float32)
    for t in range(n_clips):
        drift = rho * drift + np.sqrt(1 - rho**2) * rng.normal(scale=s, size=(n_streams, dim))
        out[:, t] = base + 0.7 * drift
    out += rng.normal(scale=0.15 * s, size=out.shape).astype(np.float32)
    return unit(out)


def build_table(db: Path, args: argparse.Namespace) -> dict[str, float]:
    """Write the clips and streams tables through Store.upsert; returns the write time."""
    import pyarrow as pa

    rng = np.random.default_rng(args.seed)
    dim = args.dim
    clips_per_stream = -(-args.rows // args.streams)
    centres = unit(rng.normal(size=(args.clusters, dim)))
    mean_dir = unit(rng.normal(size=dim))
    store = Store(db)
    meta = {"streamvl.model": MODEL, "streamvl.embed_dim": str(dim), "streamvl.weights": "RANDOM",
            "streamvl.lab.synthetic": "bench_queries"}
    schema = clips_schema(dim, meta=meta)
    start, cpu = time.perf_counter(), time.process_time()
    written, batch_streams = 0, max(1, 100_000 // clips_per_stream)
    for s0 in range(0, args.streams, batch_streams):
        n = min(batch_streams, args.streams - s0)
        vecs = stream_walks(rng, centres, mean_dir, n, clips_per_stream).reshape(-1, dim)
        sids = np.repeat([f"cam{s:05d}" for s in range(s0, s0 + n)], clips_per_stream)
        starts = np.tile(np.arange(clips_per_stream, dtype=np.float64) * args.stride, n)
        take = min(len(vecs), args.rows - written)
        store.upsert(CLIPS, pa.table({
            "stream_id": sids[:take], "start": starts[:take], "end": starts[:take] + args.window,
            "adapter": np.full(take, ADAPTER), "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs[:take].ravel()), dim),
            "model": np.full(take, MODEL)}, schema=schema))
        written += take
        print(f"  wrote {written}/{args.rows} rows  {time.perf_counter() - start:.0f} s", flush=True)
    n, now = args.streams, dt.datetime.now(dt.timezone.utc)
    store.upsert(STREAMS, streams_table(
        StreamState(f"cam{s:05d}", f"rtsp://cams.example/{s}", Status.DONE, frames_indexed=clips_per_stream * int(args.stride),
                    model=MODEL, updated_at=now) for s in range(n)))
    return {"write_s": time.perf_counter() - start, "write_cpu_s": time.process_time() - cpu}


def index_table(db: Path) -> dict[str, Any]:
    """Compact and build the ANN index exactly as the sinks' upkeep does (Store.maintain)."""
    store = Store(db)
    start, cpu = time.perf_counter(), time.process_time()
    upkeep = store.maintain(CLIPS, keep_versions_s=0, index_min_rows=1)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = store.upkeep.index_stats(CLIPS)
    return {"index_s": seconds, "index_cpu_s": cpu, "upkeep": upkeep, "indices": {k: str(v) for k, v in stats.items()}}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ensure_table(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The cached table for these generator parameters, built if missing (or --reindex'ed)."""
    root = Path(args.cache) / generator_key(args)
    marker = root / "built.json"
    info: dict[str, Any] = json.loads(marker.read_text()) if marker.exists() else {}
    if not info:
        shutil.rmtree(root, ignore_errors=True)
        print(f"building {args.rows} rows into {root}", flush=True)
        info = {"params": {k: getattr(args, k) for k in ("rows", "streams", "dim", "clusters", "stride", "window", "seed")}}
        info |= build_table(root / "db", args)
        info["build_peak_rss_mib"] = peak_rss_mib()
        info["cached"] = False
    else:
        info["cached"] = True
    if args.reindex or "index_s" not in info:
        if args.reindex:  # Store.maintain keeps an existing vector index: drop it first
            handle = Store(root / "db").table(CLIPS)
            for index in handle.list_indices():
                if list(index.columns) == [EMBEDDING]:
                    handle.drop_index(index.name)
        print("building the ANN index (Store.maintain)", flush=True)
        info |= index_table(root / "db")
    else:  # upkeep as a sink would run it: a no-op unless the store's upkeep gained an index since
        t0 = time.perf_counter()
        Store(root / "db").maintain(CLIPS, index_min_rows=1)
        info["upkeep_cached_s"] = time.perf_counter() - t0
    marker.write_text(json.dumps({k: v for k, v in info.items() if k not in ("cached", "upkeep_cached_s")}, indent=1))
    info["bytes"] = dir_bytes(root / "db")
    return root / "db", info


# ---------------------------------------------------------------- the query process


class Stopwatch:
    """Wall time spent inside wrapped functions, per stage, reset per query."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, attr: str, stage: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - t0) * 1000
                self.calls[stage] = self.calls.get(stage, 0) + 1

        setattr(owner, attr, timed)

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        out = (self.ms, self.calls)
        self.ms, self.calls = {}, {}
        return out


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) + f" {i}" for i in range(n)]


CONFIGS = ("baseline", "defaults")


def apply_config(name: str) -> dict[str, Any]:
    """In the query process: 'baseline' puts back main's query defaults before issue 43's work (fp32 text
    tower on the process's torch threads, refine budget 10 x the first fetch, open-ended IVF probing, the
    one-adapter check and the streams read per search); 'defaults' leaves today's code as it is. Returns them."""
    import streamvl.search.query as query
    from streamvl.models import textonly
    from streamvl.storage import reader

    from streamvl.storage import streams
    from streamvl.storage.schema import STREAMS, sql_in

    def uris_per_call(self, stream_ids):  # main's stream_uris: a filtered read per search
        ids = sorted(set(stream_ids))
        got = self.reader.read(STREAMS, sql_in("stream_id", ids), ["stream_id", "uri"]) if ids else None
        return dict(zip(got["stream_id"].to_pylist(), got["uri"].to_pylist())) if got is not None and got.num_rows else {}

    def open_ended_probes(handle, q, k, columns, where, candidates):  # main's probing: a minimum only
        return reader._ann_once(handle, q, k, columns, where, candidates, exact_probes=False)

    if name == "baseline":
        textonly.load_text_model = functools.partial(textonly.load_text_model, precision="fp32")
        textonly.TEXT_THREADS = None  # the process's torch threads
        reader.REFINE_CANDIDATES = query.REFINE_CANDIDATES = 10
        reader._ann = open_ended_probes
        reader.Reader._only = lambda self, handle, adapter: reader._one_adapter(handle, adapter)  # asked per search
        streams.StreamTables.stream_uris = uris_per_call
    elif name != "defaults":
        raise ValueError(name)
    probes = f">= {reader.ANN_NPROBES}" if name == "baseline" else f"{reader.ANN_NPROBES} (>= with a filter)"
    return {"refine": reader.REFINE_CANDIDATES, "nprobes": probes}


def vm_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def timed_queries(config: str, db: str, queries: list[str], warmup: int, row_queries: np.ndarray,
                  threads: int | None) -> dict[str, Any]:
    """Runs in a fresh process under one config: warm-up, then each query through streamvl.api.search,
    timed per stage; then its RSS, the repeated texts, the vector path and the inputs of recall@10."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    params = apply_config(config)

    import streamvl.search.query as query
    from streamvl import api
    from streamvl.models import textonly
    from streamvl.storage.store import Store as StoreCls
    from streamvl.plugins.meanpool import MeanPoolAdapter

    watch = Stopwatch()
    watch.wrap(MeanPoolAdapter, "encode_text", "encode")
    watch.wrap(StoreCls, "search_clips", "search")
    watch.wrap(query, "merge_segments", "merge")
    t0 = time.perf_counter()
    model = textonly.load_text_model(MODEL)
    load_s = time.perf_counter() - t0
    for text in queries[:warmup]:
        api.search(text, db, k=10, adapter=ADAPTER)
    watch.take()
    total, cpu, stages, rounds = [], [], [], []
    for text in queries[warmup:]:
        t0, c0 = time.perf_counter(), time.process_time()
        api.search(text, db, k=10, adapter=ADAPTER)
        total.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        ms, calls = watch.take()
        stages.append(ms)
        rounds.append(calls.get("search", 0))
    load = os.getloadavg()
    rss, peak = vm_rss_mib(), peak_rss_mib()
    measured = queries[warmup:]
    repeat = []  # the same texts again: text embeddings come from the query path's cache
    for text in measured:
        t0 = time.perf_counter()
        api.search(text, db, k=10, adapter=ADAPTER)
        repeat.append((time.perf_counter() - t0) * 1000)
    # recall inputs: the text vectors as this config's encoder computes them, and each query set's ANN top 10
    text_vecs = np.asarray(model.encode_text(measured).float().numpy(), np.float32)
    store = StoreCls(db)
    ann = {name: [[(r["stream_id"], r["start"]) for r in store.search_clips(q, 10, adapter=ADAPTER)] for q in vecs]
           for name, vecs in (("text", text_vecs), ("rows", row_queries))}
    watch.take()
    row_ms = []
    for q in row_queries:  # the same path from a vector: search + merge (no text encoding)
        t0 = time.perf_counter()
        query.search_vectors(store, q, k=10, adapter=ADAPTER)
        row_ms.append((time.perf_counter() - t0) * 1000)
    row_rounds = watch.take()[1].get("search", 0) / max(1, len(row_queries))
    return {"config": config, "params": params, "precision": model.text_precision.reason if hasattr(model, "text_precision")
            else "fp32", "total_ms": total, "repeat_ms": repeat, "cpu_ms": cpu, "stages": stages, "rounds": rounds,
            "load_s": load_s, "threads": torch.get_num_threads(), "rss_mib": rss, "peak_rss_mib": peak, "load": load,
            "text_vecs": text_vecs, "ann": ann, "row_ms": row_ms, "row_rounds": row_rounds}


def _child(fn: Callable, args: tuple, out) -> None:
    out.put(fn(*args))


def in_process(fn: Callable, *args) -> Any:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


# ---------------------------------------------------------------- brute force


def exact_top10(db: Path, queries: dict[str, np.ndarray], batch_rows: int = 131072) -> dict[str, list[list[tuple]]]:
    """Exact cosine top 10 per query over every row of the table, streaming batches (numpy)."""
    handle = Store(db).table(CLIPS)
    names = list(queries)
    q = np.concatenate([unit(queries[n]) for n in names])
    best_s = np.full((len(q), 10), -np.inf, np.float32)
    best_k: list[list[tuple]] = [[None] * 10 for _ in range(len(q))]
    reader = handle.search().select(["stream_id", "start", EMBEDDING]).limit(None).to_batches(batch_rows)
    for batch in reader:
        emb = batch.column(EMBEDDING).flatten().to_numpy().reshape(batch.num_rows, -1)
        scores = q @ unit(emb).T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        sids, starts = batch.column("stream_id"), batch.column("start").to_numpy()
        for i in range(len(q)):
            cand = [(float(scores[i, j]), (sids[j].as_py(), float(starts[j]))) for j in top[i]]
            cand += [(float(s), k) for s, k in zip(best_s[i], best_k[i]) if k is not None]
            cand.sort(key=lambda c: -c[0])
            best_s[i] = [c[0] for c in cand[:10]]
            best_k[i] = [c[1] for c in cand[:10]]
    out, at = {}, 0
    for n in names:
        out[n] = best_k[at : at + len(queries[n])]
        at += len(queries[n])
    return out, best_s


def recall(ann: list[list[tuple]], exact: list[list[tuple]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ann, exact)]))


def row_queries(db: Path, n: int, noise: float, seed: int) -> np.ndarray:
    """n stored rows, each perturbed to cosine ~1/sqrt(1+noise^2) with itself: in-distribution queries."""
    handle = Store(db).table(CLIPS)
    rows = handle.count_rows()
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(rows, size=n, replace=False))
    got = handle.take_offsets(picks.tolist()).select([EMBEDDING]).to_arrow()
    vecs = got.column(EMBEDDING).combine_chunks().flatten().to_numpy().reshape(n, -1)
    return unit(vecs + noise * unit(rng.normal(size=vecs.shape)))


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=200, help="topic centres the streams wander around")
    parser.add_argument("--stride", type=float, default=4.0, help="seconds between clip starts")
    parser.add_argument("--window", type=float, default=8.0, help="clip length, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=300, help="timed queries (after --warmup)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.5, help="perturbation of the in-distribution row queries")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "streamvl-bench-queries"))
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads in the query process (0: torch's default)")
    parser.add_argument("--build-only", action="store_true", help="build or refresh the cached table, then stop")
    parser.add_argument("--reindex", action="store_true", help="rebuild the ANN index of a cached table")
    args = parser.parse_args()

    t_start = time.perf_counter()
    db, info = ensure_table(args)
    print(f"table                 {args.rows} clips ({args.streams} streams, {args.dim}-d, {args.clusters} topics), "
          f"{info['bytes'] / 2**30:.2f} GiB on disk  [{db}]")
    print(f"build                 {'cached' if info['cached'] else 'cold'}: rows written in {info['write_s']:.0f} s, "
          f"ANN index in {info['index_s']:.0f} s; CPU time {info.get('write_cpu_s', float('nan')):.0f} s + "
          f"{info.get('index_cpu_s', float('nan')):.0f} s (peak RSS of the build {info.get('build_peak_rss_mib', float('nan')):.0f} MiB)")
    print(f"index                 {info['indices']}")
    if "upkeep_cached_s" in info:
        print(f"upkeep on the cache   {info['upkeep_cached_s']:.1f} s (Store.maintain)")
    if args.build_only:
        return
    rq = row_queries(db, args.queries, args.noise, args.seed + 1)
    qtexts = texts(args.queries + args.warmup, args.seed)
    runs = {c: in_process(timed_queries, c, str(db), qtexts, args.warmup, rq, args.torch_threads) for c in CONFIGS}
    t0 = time.perf_counter()
    fp32_text = runs["baseline"]["text_vecs"]
    # the defaults' text-tower error (its vector minus fp32's, per text) added to the in-distribution row
    # queries: what that error does to the exact top 10 where scores are spread as in real searches
    err = runs["defaults"]["text_vecs"] - fp32_text
    m = min(len(rq), len(err))
    exact, scores = exact_top10(db, {"rows": rq, "text": fp32_text, **{f"text_{c}": runs[c]["text_vecs"] for c in CONFIGS},
                                     "rows_err": unit(rq[:m] + err[:m])})
    exact_s = time.perf_counter() - t0
    print_side_by_side(runs, exact, args)
    n = len(rq)
    print(f"recall@10 vs an exact numpy scan of every row ({exact_s:.0f} s); exact 10th-best cosine median: rows "
          f"{np.median(scores[:n, 9]):.2f}, text {np.median(scores[n:2 * n, 9]):.2f} (random-weight text: out of distribution)")
    print(f"load average          {' '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min, {os.cpu_count()} cores; shared machine)")
    print(f"bench wall time       {time.perf_counter() - t_start:.0f} s")


def print_side_by_side(runs: dict[str, dict[str, Any]], exact: dict[str, list], args: argparse.Namespace) -> None:
    """One table: each figure under baseline and defaults, and defaults' ratio to baseline."""
    base, new = runs["baseline"], runs["defaults"]

    def stage(res: dict[str, Any], name: str) -> list[float]:
        if name == "total":
            return res["total_ms"]
        if name == "other":
            return [t - sum(m.values()) for t, m in zip(res["total_ms"], res["stages"])]
        return [m.get(name, 0.0) for m in res["stages"]]

    print(f"query process         model {MODEL} (RANDOM weights: timing only), torch threads {new['threads']}, "
          f"{os.cpu_count()} cores; {len(new['total_ms'])} text queries after {args.warmup} warm-up, one process per column")
    for res in (base, new):
        print(f"  {res['config']:<10} text tower {res['precision']}; nprobes {res['params']['nprobes']}, refine "
              f"{res['params']['refine']} x first fetch; model loaded in {res['load_s']:.1f} s; "
              f"load {' '.join(f'{x:.1f}' for x in res['load'])}")
    print(f"{'':22}{'baseline':>27}   {'defaults':>27}   {'x p50':>6}")
    print(f"{'':22}{'p50    p95    p99':>27}   {'p50    p95    p99':>27}")
    for name in ("total", "encode", "search", "merge", "other"):
        b, d = stage(base, name), stage(new, name)
        ratio = pct(b, 50) / pct(d, 50) if pct(d, 50) > 0.05 else float("nan")
        print(f"  {name:<20}" + "   ".join(f"{pct(v, 50):7.1f} {pct(v, 95):6.1f} {pct(v, 99):6.1f} ms" for v in (b, d))
              + f"   x{ratio:.2f}")
    for label, key in (("repeated texts", "repeat_ms"), ("vector path", "row_ms")):
        print(f"  {label:<20}" + "   ".join(f"{pct(r[key], 50):7.1f} {pct(r[key], 95):6.1f} {pct(r[key], 99):6.1f} ms"
                                            for r in (base, new)))
    print(f"  {'search calls/query':<20}{np.mean(base['rounds']):>20.2f}   {np.mean(new['rounds']):>27.2f}")
    print(f"  {'RSS after queries':<20}{base['rss_mib']:>17.0f} MiB   {new['rss_mib']:>23.0f} MiB   "
          f"(peak {base['peak_rss_mib']:.0f} / {new['peak_rss_mib']:.0f} MiB)")
    for name, label in (("rows", "recall@10 rows (in distribution: the goal's figure)"),):
        print(f"  {label}: baseline {recall(base['ann'][name], exact[name]):.3f}  defaults {recall(new['ann'][name], exact[name]):.3f}")
    # the text encoder's share of the whole query: the exact top 10 with each config's text vectors
    # against the exact top 10 with fp32 vectors (the ANN's share is the rows figure above)
    print(f"  recall@10 text, exact scan with the config's text vectors vs with fp32's: baseline "
          f"{recall(exact['text_baseline'], exact['text']):.3f}  defaults {recall(exact['text_defaults'], exact['text']):.3f}")
    m = len(exact["rows_err"])
    print(f"  recall@10 rows + the defaults' text-tower error (int8 - fp32 per text, added to the row query), exact "
          f"scan vs the rows' exact top 10: {recall(exact['rows_err'], exact['rows'][:m]):.3f}  (in distribution: the "
          f"encoder's share of the whole query's recall)")
    print(f"  recall@10 text, ANN with the config's text vectors vs exact fp32: baseline "
          f"{recall(base['ann']['text'], exact['text']):.3f}  defaults {recall(new['ann']['text'], exact['text']):.3f} "
          f"(out of distribution: low for both)")


if __name__ == "__main__":
    main()
