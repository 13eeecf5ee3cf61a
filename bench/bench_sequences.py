"""Sequence queries at scale: "A then B within W s" next to a plain query on the same table, and
recall against an exact scan.

The table is bench/bench_queries.py's (same builder and cache: --rows clips of --streams streams,
512-d random walks around topic centres, one clip every --stride s of --window s, IVF_PQ index
built by Store.maintain). Two query sets, timed in one child process (so its figures are a query
server's), a plain query and a sequence query interleaved:

  rows  in distribution (the honest figures): A = a stored clip of a random stream perturbed to
        cosine ~0.9, B = the clip --gap-clips later in the same stream, perturbed the same way.
        Plain: streamvl.search.query.search_vectors(A). Sequence: sequence_vectors([A, B]).
  text  the API path end to end (api.search vs api.search_sequence) with the ViT-B-32 text tower
        with RANDOM weights: right for timing, but its vectors are far from every row (out of
        distribution), the worst case for the candidate lists (nothing stands out, so they widen).

Recall@k: the sequence hits (stream and each step's clip) against the exact answer, the same join
rules over every clip of the table with brute-force cosine scores (numpy, a grid dynamic program
written independently of streamvl.search.sequences; its first queries are also checked against
the product's join given every clip).

    python bench/bench_sequences.py [--rows 1000000] [--queries 200] [--recall-queries 100]

Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_queries import ADAPTER, MODEL, ensure_table, in_process, pct, peak_rss_mib, texts, unit  # noqa: E402
from streamvl.storage.store import CLIPS, Store  # noqa: E402
from streamvl.storage.schema import EMBEDDING, sql_str


# ---------------------------------------------------------------- queries


def sequence_queries(db: Path, n: int, args: argparse.Namespace, seed: int) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """n (A, B) vector pairs [n, 2, dim]: clips i and i + gap of a random stream, each perturbed."""
    handle = Store(db).table(CLIPS)
    rng = np.random.default_rng(seed)
    per_stream = -(-args.rows // args.streams)
    out, where = [], []
    for _ in range(n):
        s = int(rng.integers(0, args.streams - 1))  # the last stream may be short
        i = int(rng.integers(0, per_stream - args.gap_clips))
        sid, starts = f"cam{s:05d}", (i * args.stride, (i + args.gap_clips) * args.stride)
        got = (handle.search().where(f"stream_id = {sql_str(sid)} AND start IN ({starts[0]!r}, {starts[1]!r})")
               .select(["start", EMBEDDING]).limit(None).to_arrow())
        order = np.argsort(got["start"].to_numpy())
        vecs = got[EMBEDDING].combine_chunks().flatten().to_numpy().reshape(2, -1)[order]
        out.append(unit(vecs + args.noise * unit(rng.normal(size=vecs.shape))))
        where.append((sid, starts[0]))
    return np.stack(out), where


def timed(db: str, args: argparse.Namespace, pairs: np.ndarray, text_list: list[str]) -> dict[str, Any]:
    """In a fresh process: plain and sequence queries interleaved, vector path then text path."""
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from streamvl import api
    from streamvl.models import loading as models
    from streamvl.search import query
    from streamvl.search.sequences import sequence_vectors

    store = query.open_store(db)
    models.load_model(MODEL)
    calls = [0]
    ann = store.search_clips

    def counted(*a, **kw):  # ANN calls per query (the plain path widens when merging leaves < k segments)
        calls[0] += 1
        return ann(*a, **kw)

    store.search_clips = counted
    kw = {"k": args.k, "adapter": ADAPTER}
    for a, b in pairs[: args.warmup]:
        query.search_vectors(store, a, **kw)
        sequence_vectors(store, [a, b], within=args.within, **kw)
    out: dict[str, Any] = {"plain_ms": [], "seq_ms": [], "hits": [], "widths": [], "rounds": [], "certified": [],
                           "plain_calls": [], "seq_calls": []}
    for a, b in pairs[args.warmup :]:
        calls[0] = 0
        t0 = time.perf_counter()
        query.search_vectors(store, a, **kw)
        t1 = time.perf_counter()
        out["plain_calls"].append(calls[0])
        res = sequence_vectors(store, [a, b], within=args.within, **kw)
        t2 = time.perf_counter()
        out["seq_calls"].append(calls[0] - out["plain_calls"][-1])
        out["plain_ms"].append((t1 - t0) * 1000)
        out["seq_ms"].append((t2 - t1) * 1000)
        out["hits"].append([(h.stream_id, tuple(s.start for s in h.steps), h.score) for h in res.hits])
        out["widths"].append(max(res.widths))
        out["rounds"].append(res.rounds)
        out["certified"].append(res.certified)
    text_out: dict[str, Any] = {"plain_ms": [], "seq_ms": [], "widths": [], "rounds": [], "certified": [], "hits": [],
                                "plain_calls": [], "seq_calls": []}
    half = len(text_list) // 2
    for i, (ta, tb) in enumerate(zip(text_list[:half], text_list[half:])):
        calls[0] = 0
        t0 = time.perf_counter()
        api.search(ta, db, **kw)
        t1 = time.perf_counter()
        plain_calls = calls[0]
        res = api.search_sequence([f"{ta}.", tb], db, within=args.within, **kw)  # "." : a text not cached yet
        t2 = time.perf_counter()
        if i < args.warmup:
            continue
        text_out["plain_calls"].append(plain_calls)
        text_out["seq_calls"].append(calls[0] - plain_calls)
        text_out["plain_ms"].append((t1 - t0) * 1000)
        text_out["seq_ms"].append((t2 - t1) * 1000)
        text_out["widths"].append(max(res.widths))
        text_out["rounds"].append(res.rounds)
        text_out["certified"].append(res.certified)
        text_out["hits"].append([(h.stream_id, tuple(s.start for s in h.steps), h.score) for h in res.hits])
    encoder = query._encoder(query._default_plugins(), ADAPTER, query.indexed_model(store), {})
    measured = list(zip(text_list[args.warmup:half], text_list[half + args.warmup:]))
    text_out["vectors"] = np.stack([np.stack(encoder.encode_many([f"{a}.", b])) for a, b in measured])
    for res, vecs in ((out, pairs[args.warmup :]), (text_out, text_out["vectors"])):  # plain top 10 of step A, for recall
        res["plain_top"] = [[(r["stream_id"], float(r["start"])) for r in store.search_clips(v[0], args.k, adapter=ADAPTER)]
                            for v in vecs[: args.recall_queries]]
    return {"rows": out, "text": text_out, "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}


# ---------------------------------------------------------------- the exact answer


def all_scores(db: Path, queries: np.ndarray, args: argparse.Namespace, batch_rows: int = 131072) -> np.ndarray:
    """Cosine of every query vector [Q, dim] with every clip, on the (stream, clip) grid: [Q, streams, per_stream]
    (-inf where the grid has no clip)."""
    per_stream = -(-args.rows // args.streams)
    q = unit(queries)
    out = np.full((len(q), args.streams, per_stream), -np.inf, np.float32)
    handle = Store(db).table(CLIPS)
    for batch in handle.search().select(["stream_id", "start", EMBEDDING]).limit(None).to_batches(batch_rows):
        emb = unit(batch.column(EMBEDDING).flatten().to_numpy().reshape(batch.num_rows, -1))
        s_idx = np.array([int(s[3:]) for s in batch.column("stream_id").to_pylist()])
        c_idx = np.rint(batch.column("start").to_numpy() / args.stride).astype(np.int64)
        out[:, s_idx, c_idx] = q @ emb.T
    return out


def exact_chains(scores: list[np.ndarray], args: argparse.Namespace) -> list[tuple[str, tuple[float, ...], float]]:
    """The top k chains over every clip, by the rules of streamvl.search.sequences, on the clip grid.

    Step j follows step i on one stream when j > i and start_j <= end_i + within, i.e. 1 <= j - i <= reach.
    Best chain ending at each clip: max of (min score, sum), ties to the later predecessor; then
    greedy, best first, dropping chains that overlap a kept chain of the same stream."""
    reach = int(np.floor((args.window + args.within) / args.stride + 1e-9))
    pmin = scores[0].astype(np.float64)
    psum = pmin.copy()
    n, m = pmin.shape
    first = np.broadcast_to(np.arange(m), (n, m)).copy()
    backs = []
    for cur in scores[1:]:
        cur = cur.astype(np.float64)
        bm, bs = np.full((n, m), -np.inf), np.full((n, m), -np.inf)
        bd, bf = np.zeros((n, m), np.int64), np.zeros((n, m), np.int64)
        for d in range(1, reach + 1):
            mm = np.full((n, m), -np.inf)
            ss = np.full((n, m), -np.inf)
            mm[:, d:] = np.minimum(pmin[:, :-d], cur[:, d:])
            ss[:, d:] = psum[:, :-d]
            better = (mm > bm) | ((mm == bm) & (ss > bs))
            better &= np.isfinite(mm)
            bm, bs = np.where(better, mm, bm), np.where(better, ss, bs)
            bd = np.where(better, d, bd)
            bf[:, d:] = np.where(better[:, d:], first[:, :-d], bf[:, d:])
        pmin, psum, first = bm, np.where(np.isfinite(bm), bs + cur, -np.inf), bf
        backs.append(bd)
    steps = len(scores)
    ok = np.isfinite(pmin)
    s_idx, c_idx = np.nonzero(ok)
    mins, means = pmin[ok], psum[ok] / steps
    spans = (c_idx - first[ok]) * args.stride + args.window
    order = np.lexsort((first[ok], s_idx, spans, -means, -mins))
    kept: list[tuple[str, tuple[float, ...], float]] = []
    taken: dict[int, list[tuple[float, float]]] = {}
    for o in order:
        s, c = int(s_idx[o]), int(c_idx[o])
        lo, hi = first[s, c] * args.stride, c * args.stride + args.window
        if any(lo < e and b < hi for b, e in taken.get(s, [])):
            continue
        taken.setdefault(s, []).append((lo, hi))
        idx = [c]
        for back in reversed(backs):
            idx.append(idx[-1] - int(back[s, idx[-1]]))
        kept.append((f"cam{s:05d}", tuple(float(i * args.stride) for i in reversed(idx)), float(mins[o])))
        if len(kept) == args.k:
            break
    return kept


def product_join_on_everything(scores: list[np.ndarray], args: argparse.Namespace) -> list[tuple[str, tuple[float, ...], float]]:
    """streamvl.search.sequences.join given every clip as a candidate: checks the grid DP above."""
    from streamvl.search.sequences import Clip, join

    steps = []
    for sc in scores:
        s_idx, c_idx = np.nonzero(np.isfinite(sc))
        steps.append([Clip(f"cam{s:05d}", c * args.stride, c * args.stride + args.window, float(sc[s, c]))
                      for s, c in zip(s_idx.tolist(), c_idx.tolist())])
    return [(ch.stream_id, tuple(c.start for c in ch.clips), ch.score) for ch in join(steps, args.within, args.k)]


def exact_top(scores: np.ndarray, args: argparse.Namespace) -> list[tuple[str, float]]:
    """The k clips nearest to one query vector (its row of all_scores)."""
    flat = scores.ravel()
    top = np.argpartition(-flat, args.k)[: args.k]
    return [(f"cam{i // scores.shape[1]:05d}", float(i % scores.shape[1] * args.stride)) for i in top]


def recall(found: list[list[tuple]], exact: list[list[tuple]]) -> tuple[float, float]:
    """Mean share of the exact top k found (by stream and step clips), and the worst query's."""
    per = [len({h[:2] for h in f} & {h[:2] for h in e}) / max(1, len(e)) for f, e in zip(found, exact)]
    return float(np.mean(per)), float(np.min(per))


# ---------------------------------------------------------------- main


def report_latency(name: str, res: dict[str, Any]) -> None:
    p, s = res["plain_ms"], res["seq_ms"]
    print(f"  plain query         p50 {pct(p, 50):7.1f} ms  p95 {pct(p, 95):7.1f} ms  p99 {pct(p, 99):7.1f} ms")
    print(f"  sequence (2 steps)  p50 {pct(s, 50):7.1f} ms  p95 {pct(s, 95):7.1f} ms  p99 {pct(s, 99):7.1f} ms  "
          f"(x{pct(s, 50) / pct(p, 50):.1f} the plain p50)")
    w = np.asarray(res["widths"])
    print(f"  candidate lists     widest list per query p50 {pct(w, 50):.0f}  max {w.max()}; rounds mean "
          f"{np.mean(res['rounds']):.2f} max {max(res['rounds'])}; top {len(res['hits'][0]) if res['hits'] else 0} "
          f"proven exact in {np.mean(res['certified']):.0%} of {len(w)} {name} queries")
    print(f"  ANN calls/query     plain mean {np.mean(res['plain_calls']):.2f} (widens when merging leaves < k segments), "
          f"sequence mean {np.mean(res['seq_calls']):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--stride", type=float, default=4.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=200, help="timed row queries (and as many text queries)")
    parser.add_argument("--recall-queries", type=int, default=100, help="row queries checked against the exact scan")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--within", type=float, default=10.0, help="seconds from A's clip end to B's clip start")
    parser.add_argument("--gap-clips", type=int, default=3, help="B is this many clips after A (3 x 4 s: a 4 s gap)")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "streamvl-bench-queries"))
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--reindex", action="store_true")
    args = parser.parse_args()

    t_start = time.perf_counter()
    db, info = ensure_table(args)
    print(f"table                 {args.rows} clips ({args.streams} streams, {args.dim}-d, clip {args.window:g} s "
          f"every {args.stride:g} s), {info['bytes'] / 2**30:.2f} GiB, index {list(info['indices'])}  [{db}]")
    print(f"query                 A then B within {args.within:g} s, k={args.k}; B drawn {args.gap_clips} clips after A "
          f"(gap {args.gap_clips * args.stride - args.window:g} s)")
    pairs, _ = sequence_queries(db, args.queries + args.warmup, args, args.seed + 7)
    text_list = texts(2 * (args.queries + args.warmup), args.seed + 3)
    res = in_process(timed, str(db), args, pairs, text_list)
    print(f"query process         torch threads {res['threads']}, {os.cpu_count()} cores, peak RSS {res['peak_rss_mib']:.0f} MiB")
    print(f"rows: in-distribution vectors, search_vectors vs sequence_vectors ({len(res['rows']['plain_ms'])} queries "
          f"after {args.warmup} warm-up)")
    report_latency("row", res["rows"])
    print(f"text: api.search vs api.search_sequence, random-weight {MODEL} text tower (out of distribution)")
    report_latency("text", res["text"])

    t0 = time.perf_counter()
    nq = min(args.recall_queries, args.queries)
    row_pairs = pairs[args.warmup : args.warmup + nq]
    text_pairs = res["text"]["vectors"][:nq]
    exact_rows, exact_text, checked, agree = [], [], 0, 0
    plain_rows, plain_text = [], []
    for chunk in range(0, nq, 25):
        qs = np.concatenate([row_pairs[chunk : chunk + 25].reshape(-1, args.dim), text_pairs[chunk : chunk + 25].reshape(-1, args.dim)])
        sc = all_scores(db, qs, args)
        half = len(row_pairs[chunk : chunk + 25]) * 2
        for q in range(0, half, 2):
            exact_rows.append(exact_chains([sc[q], sc[q + 1]], args))
            plain_rows.append(exact_top(sc[q], args))
            if checked < 2:  # the grid DP against the product's join over every clip
                checked += 1
                agree += [h[:2] for h in product_join_on_everything([sc[q], sc[q + 1]], args)] == [h[:2] for h in exact_rows[-1]]
        for q in range(half, len(qs), 2):
            exact_text.append(exact_chains([sc[q], sc[q + 1]], args))
            plain_text.append(exact_top(sc[q], args))
    mean_r, worst_r = recall(res["rows"]["hits"][:nq], exact_rows)
    mean_t, worst_t = recall(res["text"]["hits"][:nq], exact_text)
    plain_r, plain_t = recall(res["rows"]["plain_top"], plain_rows)[0], recall(res["text"]["plain_top"], plain_text)[0]
    print(f"recall@{args.k} vs exact scan ({time.perf_counter() - t0:.0f} s of numpy over every clip; the grid DP "
          f"agrees with the product join on every clip in {agree}/{checked} queries)")
    print(f"  rows (in distribution, the honest figure)  sequence mean {mean_r:.3f}  worst query {worst_r:.2f};  "
          f"plain top {args.k} clips of step A {plain_r:.3f}  ({len(exact_rows)} queries)")
    print(f"  text (random-weight text vectors)          sequence mean {mean_t:.3f}  worst query {worst_t:.2f};  "
          f"plain top {args.k} clips of step A {plain_t:.3f}  ({len(exact_text)} queries)")
    print(f"load average          {' '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min, {os.cpu_count()} cores; shared machine)")
    print(f"bench wall time       {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
