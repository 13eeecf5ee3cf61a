"""Queries at scale: end-to-end text search over a large clips table (latency, recall@10, memory).

Builds (or reuses, from --cache) a clips table of --rows 512-d embeddings with the structure of a
real index: --streams streams, each a slowly drifting random walk on the sphere around one of
--clusters topic centres plus a shared mean direction (CLIP embeddings share one), one clip every
--stride seconds (window --window s), written through streamvl's own store writer and schema; then
builds the ANN index the way the store's upkeep does (Store.maintain: IVF_PQ, cosine).

A query process of its own (so its peak RSS is a query server's) then times
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


def timed_queries(db: str, queries: list[str], warmup: int, row_queries: np.ndarray, threads: int | None) -> dict[str, Any]:
    """Runs in a fresh process: warm-up, then each query through streamvl.api.search, timed per stage."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    import streamvl.search.query as query
    from streamvl import api
    from streamvl.models import textonly as models  # what the query path loads for meanpool: no image tower
    from streamvl.storage import reader
    from streamvl.storage.store import Store as StoreCls
    from streamvl.plugins.meanpool import MeanPoolAdapter

    watch = Stopwatch()
    watch.wrap(MeanPoolAdapter, "encode_text", "encode")
    watch.wrap(StoreCls, "search_clips", "search")
    watch.wrap(query, "merge_segments", "merge")
    t0 = time.perf_counter()
    models.load_text_model(MODEL)
    load_s = time.perf_counter() - t0
    for text in queries[:warmup]:
        api.search(text, db, k=10, adapter=ADAPTER)
    watch.take()
    rss_before = peak_rss_mib()
    total, cpu, stages, rounds = [], [], [], []
    for text in queries[warmup:]:
        t0, c0 = time.perf_counter(), time.process_time()
        api.search(text, db, k=10, adapter=ADAPTER)
        total.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        ms, calls = watch.take()
        stages.append(ms)
        rounds.append(calls.get("search", 0))
    measured = queries[warmup:]
    repeat = []  # the same texts again: text embeddings come from the query path's cache
    for text in measured:
        t0 = time.perf_counter()
        api.search(text, db, k=10, adapter=ADAPTER)
        repeat.append((time.perf_counter() - t0) * 1000)
    watch.take()
    versus = baseline_vs_defaults(api, db, queries[:warmup] + measured, reader)
    bare = bare_text_tower(models.load_text_model(MODEL), measured[:50])
    # recall inputs: the text vectors (as the API computed them) and each query set's ANN top 10 of clips
    model = models.load_text_model(MODEL)
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
    return {"total_ms": total, "repeat_ms": repeat, "cpu_ms": cpu, "stages": stages, "rounds": rounds, "load_s": load_s, "threads": torch.get_num_threads(),
            "rss_after_warmup_mib": rss_before, "peak_rss_mib": peak_rss_mib(), "text_vecs": text_vecs, "ann": ann,
            "row_ms": row_ms, "row_rounds": row_rounds, "bare": bare, "versus": versus}


def baseline_vs_defaults(api: Any, db: str, texts: list[str], reader: Any) -> dict[str, Any]:
    """api.search with LanceDB's default probe count (20, the baseline) and with streamvl's
    (reader.ANN_NPROBES), interleaved per query with the order alternating so load hits both alike;
    each call a new text (the text tower included). Same process, so the same model and caches."""
    new = reader.ANN_NPROBES
    out: dict[str, list[float]] = {"baseline": [], "defaults": []}
    for i in range(0, len(texts) - 1, 2):
        order = (("baseline", 20), ("defaults", new)) if i % 4 else (("defaults", new), ("baseline", 20))
        for j, (name, nprobes) in enumerate(order):
            reader.ANN_NPROBES = nprobes
            t0 = time.perf_counter()
            api.search(texts[i + j] + " again", db, k=10, adapter=ADAPTER)
            out[name].append((time.perf_counter() - t0) * 1000)
    reader.ANN_NPROBES = new
    return {**out, "load": os.getloadavg()[0], "nprobes": new}


def memory_probe(db: str, texts: list[str], text_only: bool) -> dict[str, float]:
    """A fresh process answering texts with the whole model (the baseline) or the query path's text
    model: its RSS after the searches and its peak."""
    from streamvl import api
    from streamvl.search import query

    if not text_only:
        query.textonly.load_text_model = lambda spec: query.models.load_model(spec)  # the baseline: whole model
    for text in texts:
        api.search(text, db, k=10, adapter=ADAPTER)
    with open("/proc/self/status") as f:
        now = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))
    return {"rss_mib": now, "peak_mib": peak_rss_mib(), "load": os.getloadavg()[0]}


def bare_text_tower(model: Any, queries: list[str]) -> dict[str, Any]:
    """Baseline in the same process: plain open_clip encode_text on one query (the 77-token context)
    against streamvl's LoadedModel.encode_text, which runs only the query's own tokens (exact: the
    text tower's attention is causal and pools at the end-of-text token), and two candidates measured,
    not used: that under bf16 autocast, and with torch's dynamic int8 Linear layers (MLPs, out proj)."""
    import copy

    import torch

    from streamvl.models.loading import _encode_text_prefix

    qmodel = copy.deepcopy(model.model)
    qmodel.transformer = torch.ao.quantization.quantize_dynamic(qmodel.transformer, {torch.nn.Linear}, dtype=torch.qint8)
    qmodel.transformer.get_cast_dtype = lambda: torch.float32

    def trimmed(text: str) -> Any:
        tokens = model.tokenizer([text])
        return tokens[:, : int(tokens.ne(0).sum())]

    def bf16(text: str) -> Any:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model.encode_text([text]).float()

    def int8(text: str) -> Any:
        with torch.inference_mode():
            return _encode_text_prefix(qmodel, trimmed(text))

    def full(text: str) -> Any:
        with torch.inference_mode():
            return model.model.encode_text(model.tokenizer([text]), normalize=True)

    paths = {"full": full, "trim": lambda t: model.encode_text([t]), "bf16": bf16, "int8": int8}
    ms: dict[str, list[float]] = {name: [] for name in paths}
    cos: dict[str, float] = {name: 1.0 for name in paths}
    diff = 0.0
    for i, text in enumerate(queries):
        ref = None
        for name in (list(paths) if i % 2 else list(reversed(paths))):  # alternate the order: load hits all alike
            t0 = time.perf_counter()
            vec = paths[name](text)
            ms[name].append((time.perf_counter() - t0) * 1000)
            ref = full(text) if ref is None else ref
            cos[name] = min(cos[name], float((vec.float() * ref).sum()))
            if name == "trim":
                diff = max(diff, float((vec - ref).abs().max()))
    return {"full_ms": ms["full"], "trim_ms": ms["trim"], "max_diff": diff, "ms": ms, "cos": cos, "load": os.getloadavg()[0]}


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
    res = in_process(timed_queries, str(db), texts(args.queries + args.warmup, args.seed), args.warmup, rq, args.torch_threads)
    stages = {s: [m.get(s, 0.0) for m in res["stages"]] for s in ("encode", "search", "merge")}
    other = [t - sum(m.values()) for t, m in zip(res["total_ms"], res["stages"])]
    print(f"query process         model {MODEL} (RANDOM weights: timing only) loaded in {res['load_s']:.1f} s, "
          f"torch threads {res['threads']}, {os.cpu_count()} cores")
    print(f"end to end (api.search, {len(res['total_ms'])} text queries after {args.warmup} warm-up)")
    print(f"  total               p50 {pct(res['total_ms'], 50):6.1f} ms  p95 {pct(res['total_ms'], 95):6.1f} ms  "
          f"p99 {pct(res['total_ms'], 99):6.1f} ms  max {max(res['total_ms']):6.1f} ms")
    print(f"  cpu (all threads)   p50 {pct(res['cpu_ms'], 50):6.1f} ms  p99 {pct(res['cpu_ms'], 99):6.1f} ms "
          f"(wall >> CPU: waiting for a core on a busy machine)")
    for name, vals in (*stages.items(), ("other", other)):
        print(f"  {name:<20}p50 {pct(vals, 50):6.1f} ms  p95 {pct(vals, 95):6.1f} ms  p99 {pct(vals, 99):6.1f} ms")
    print(f"  search calls/query  mean {np.mean(res['rounds']):.2f}  max {max(res['rounds'])} (>1: merging left < k segments, widened)")
    print(f"  repeated texts      p50 {pct(res['repeat_ms'], 50):6.1f} ms  p95 {pct(res['repeat_ms'], 95):6.1f} ms  "
          f"p99 {pct(res['repeat_ms'], 99):6.1f} ms (same {len(res['repeat_ms'])} texts again: text embedding cached)")
    print(f"vector path (search_vectors, {len(res['row_ms'])} in-distribution row queries): p50 {pct(res['row_ms'], 50):.1f} ms  "
          f"p95 {pct(res['row_ms'], 95):.1f} ms  p99 {pct(res['row_ms'], 99):.1f} ms, "
          f"{res['row_rounds']:.2f} search calls/query")
    bare = res["bare"]
    print(f"text tower, {len(bare['full_ms'])} queries: plain open_clip (77-token context) p50 {pct(bare['full_ms'], 50):.1f} ms; "
          f"streamvl (the query's own tokens) p50 {pct(bare['trim_ms'], 50):.1f} ms "
          f"(x{pct(bare['full_ms'], 50) / pct(bare['trim_ms'], 50):.1f}; max |diff| {bare['max_diff']:.1e})")
    for name in ("bf16", "int8"):
        print(f"  candidate {name:<5} p50 {pct(bare['ms'][name], 50):.1f} ms (x{pct(bare['trim_ms'], 50) / pct(bare['ms'][name], 50):.2f} of "
              f"streamvl's), min cosine to fp32 {bare['cos'][name]:.5f}  (not used; load {bare['load']:.1f})")
    vs = res["versus"]
    print(f"baseline vs defaults, api.search interleaved ({len(vs['defaults'])} new texts each, load {vs['load']:.1f}):")
    print(f"  baseline (nprobes 20) p50 {pct(vs['baseline'], 50):6.1f} ms  p99 {pct(vs['baseline'], 99):6.1f} ms")
    print(f"  defaults (nprobes {vs['nprobes']}) p50 {pct(vs['defaults'], 50):6.1f} ms  p99 {pct(vs['defaults'], 99):6.1f} ms  "
          f"(x{pct(vs['baseline'], 50) / pct(vs['defaults'], 50):.2f} faster at p50)")
    print(f"peak RSS              query process {res['peak_rss_mib']:.0f} MiB (after warm-up {res['rss_after_warmup_mib']:.0f} MiB; "
          f"includes the bench's int8 copy of the text tower)")
    probe_texts = texts(args.warmup, args.seed + 7)
    for label, text_only in (("whole model (baseline)", False), ("text model (default)", True)):
        mem = in_process(memory_probe, str(db), probe_texts, text_only)
        print(f"  memory, {label:<22} RSS {mem['rss_mib']:5.0f} MiB  peak {mem['peak_mib']:5.0f} MiB after "
              f"{len(probe_texts)} searches (load {mem['load']:.1f})")
    t0 = time.perf_counter()
    exact, scores = exact_top10(db, {"rows": rq, "text": res["text_vecs"]})
    n = len(rq)
    print(f"recall@10 vs brute force ({time.perf_counter() - t0:.0f} s of numpy over every row)")
    print(f"  rows (in distribution, the honest figure)  {recall(res['ann']['rows'], exact['rows']):.3f}  "
          f"(exact 10th-best cosine median {np.median(scores[:n, 9]):.2f})")
    print(f"  text (random-weight text vectors)         {recall(res['ann']['text'], exact['text']):.3f}  "
          f"(exact 10th-best cosine median {np.median(scores[n:, 9]):.2f}: out of distribution)")
    print(f"load average          {' '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min, {os.cpu_count()} cores; shared machine)")
    print(f"bench wall time       {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
