"""Sequence queries: "A, then B within N seconds (, then C ...)" on one stream.

A chain picks one clip per step. Clip i+1 must start after clip i starts and at most `within`
seconds after clip i ends (overlapping windows give a negative gap, which is allowed):

    start[i] < start[i+1] <= end[i] + within

A hit spans start[0]..end[last] of one stream. Its score is the lowest step score (every step must
match); ties go to the higher mean step score, then the shorter span. A stream shows one hit per
occurrence: chains that overlap a better chain of the same stream are dropped.

How: each step's text is embedded (all steps in one adapter call); each step gets a candidate list,
its `width` best clips from the ANN with the query's prefilters (Store.search_clips); the lists are
joined per stream in time order by dynamic programming over the steps (the best chain ending at
each candidate of step i, from the valid candidates of step i-1). No table scan.

Width: a chain that uses a clip outside step i's list scores at most that list's lowest score
(`floor`), because the chain score is a minimum. So once k hits score above every floor, no chain
outside the lists can enter the top k: the answer equals a join over every clip of the table (on a
table without an ANN index exactly; with one, as far as the ANN ranks the lists right; see
bench/bench_sequences.py). Until then the lists whose floor blocks that proof widen 4x per round,
up to `max_width` (then the result says certified=False). See docs/sequences.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from streamvl.errors import ConfigError

FIRST_WIDTH = 64  # candidates per step in the first round, at least (and 8 k)
MAX_WIDTH = 16384  # widening stops here: the result is then not certified
WIDE_REFINE = 2  # widened lists re-rank 2 x width ANN rows exactly (the first list: the store's default, 10 x)
_PAIR_BUDGET = 1 << 20  # candidate x predecessor cells per numpy block in the join


@dataclass(frozen=True)
class Clip:
    """One candidate clip of one step: where it is and how well it matches the step's text."""

    stream_id: str
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class Chain:
    """One clip per step, in time order, on one stream."""

    clips: tuple[Clip, ...]

    @property
    def stream_id(self) -> str:
        return self.clips[0].stream_id

    @property
    def start(self) -> float:
        return self.clips[0].start

    @property
    def end(self) -> float:
        return self.clips[-1].end

    @property
    def score(self) -> float:
        """The weakest step's score: the chain matches only as well as its worst step."""
        return min(c.score for c in self.clips)

    @property
    def mean(self) -> float:
        return float(np.mean([c.score for c in self.clips]))

    def rank_key(self) -> tuple[float, float, float, str, float]:
        return (-self.score, -self.mean, self.end - self.start, self.stream_id, self.start)


@dataclass(frozen=True)
class StepMatch:
    """The clip that matched one step of a sequence query."""

    text: str
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class SequenceHit:
    """A sequence found on one stream: span start..end, score = the lowest step score, each step's clip."""

    stream_id: str
    uri: str
    start: float
    end: float
    score: float
    steps: tuple[StepMatch, ...]
    adapter: str = ""

    @property
    def mean_score(self) -> float:
        return float(np.mean([s.score for s in self.steps]))

    def as_dict(self) -> dict[str, object]:
        return {"stream_id": self.stream_id, "uri": self.uri, "start": self.start, "end": self.end,
                "score": self.score, "mean_score": self.mean_score,
                "steps": [{"text": s.text, "start": s.start, "end": s.end, "score": s.score} for s in self.steps]}


@dataclass(frozen=True)
class SequenceResult:
    """Hits plus how they were found: final list width per step, rounds, and whether the top k is proven."""

    hits: list[SequenceHit]
    widths: list[int] = field(default_factory=list)
    rounds: int = 0
    certified: bool = True


# ---------------------------------------------------------------- the join (pure: no store, no model)


def check_query(n_steps: int, within: float | None, k: int) -> None:
    """One-line typed errors for a malformed sequence query."""
    if n_steps < 2:
        raise ConfigError(f"a sequence query needs at least two steps (TEXT --then TEXT), got {n_steps}")
    if within is None:
        raise ConfigError("a sequence query needs --within SECONDS (the longest gap between one step and the next)")
    if not np.isfinite(within) or within <= 0:
        raise ConfigError(f"--within must be a positive number of seconds, got {within}")
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}")


def _columns(clips: Sequence[Clip]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ordered = sorted(clips, key=lambda c: c.start)
    return (np.array([c.start for c in ordered], np.float64), np.array([c.end for c in ordered], np.float64),
            np.array([c.score for c in ordered], np.float64))


def _best_predecessors(ps: np.ndarray, pe: np.ndarray, pmin: np.ndarray, psum: np.ndarray,
                       cs: np.ndarray, cscore: np.ndarray, within: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate c (start cs, score cscore): the predecessor p with ps < cs <= pe + within
    that maximises (min(pmin, cscore), psum, ps). ps is sorted. Returns (index or -1, min, sum)."""
    n = len(cs)
    back, cmin, csum = np.full(n, -1, np.int64), np.full(n, -np.inf), np.full(n, -np.inf)
    if not len(ps) or not n:
        return back, cmin, csum
    longest = float(np.max(pe - ps))  # pe >= cs - within  =>  ps >= cs - within - longest
    lo = np.searchsorted(ps, cs - within - longest, "left")
    hi = np.searchsorted(ps, cs, "left")  # ps < cs
    width = int(np.max(hi - lo, initial=0))
    if width == 0:
        return back, cmin, csum
    rows = max(1, _PAIR_BUDGET // width)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        idx = lo[a:b, None] + np.arange(width)[None]
        ok = idx < hi[a:b, None]
        idx = np.minimum(idx, len(ps) - 1)
        ok &= pe[idx] >= cs[a:b, None] - within
        ok &= np.isfinite(pmin[idx])
        m = np.where(ok, np.minimum(pmin[idx], cscore[a:b, None]), -np.inf)
        best_m = m.max(axis=1)
        tie = ok & (m == best_m[:, None])
        s = np.where(tie, psum[idx], -np.inf)
        best_s = s.max(axis=1)
        last = tie & (s == best_s[:, None])  # among equals the latest predecessor: the shorter span
        j = width - 1 - np.argmax(last[:, ::-1], axis=1)
        found = ok.any(axis=1)
        pick = idx[np.arange(b - a), j]
        back[a:b] = np.where(found, pick, -1)
        cmin[a:b] = np.where(found, best_m, -np.inf)
        csum[a:b] = np.where(found, best_s + cscore[a:b], -np.inf)
    return back, cmin, csum


def _stream_chains(steps: Sequence[Sequence[Clip]], within: float) -> list[Chain]:
    """Best chain ending at each last-step candidate of one stream (candidates of any order)."""
    ordered = [sorted(s, key=lambda c: c.start) for s in steps]
    if any(not s for s in ordered):
        return []
    ps, pe, score = _columns(ordered[0])
    pmin, psum = score.copy(), score.copy()
    backs = []
    for cur in ordered[1:]:
        cs, ce, cscore = _columns(cur)
        back, pmin, psum = _best_predecessors(ps, pe, pmin, psum, cs, cscore, within)
        backs.append(back)
        ps, pe = cs, ce
    chains = []
    for j in np.flatnonzero(np.isfinite(pmin)):
        picks = [int(j)]
        for back in reversed(backs):
            picks.append(int(back[picks[-1]]))
        picks.reverse()
        chains.append(Chain(tuple(ordered[i][p] for i, p in enumerate(picks))))
    return chains


def join(steps: Sequence[Sequence[Clip]], within: float, k: int, min_score: float | None = None) -> list[Chain]:
    """The k best non-overlapping chains over per-step candidate clips (see the module doc for the rules).

    Chains of one stream that overlap a better chain of that stream are dropped (one hit per
    occurrence); min_score drops chains whose weakest step scores below it."""
    by_stream: dict[str, list[list[Clip]]] = {}
    for i, clips in enumerate(steps):
        for c in clips:
            by_stream.setdefault(c.stream_id, [[] for _ in steps])[i].append(c)
    chains = [ch for per_step in by_stream.values() for ch in _stream_chains(per_step, within)]
    if min_score is not None:
        chains = [ch for ch in chains if ch.score >= min_score]
    chains.sort(key=Chain.rank_key)
    kept: list[Chain] = []
    spans: dict[str, list[tuple[float, float]]] = {}
    for ch in chains:
        taken = spans.setdefault(ch.stream_id, [])
        if any(ch.start < e and s < ch.end for s, e in taken):
            continue
        kept.append(ch)
        taken.append((ch.start, ch.end))
        if len(kept) == k:
            break
    return kept


def proven(chains: Sequence[Chain], floors: Sequence[float], k: int, min_score: float | None = None) -> bool:
    """Whether no clip outside the candidate lists can change the top k.

    floors[i]: the lowest score in step i's list, or -inf when the list holds every matching clip.
    A chain using a clip beyond list i scores at most floors[i], so it can neither beat a hit above
    max(floors) nor pass min_score when max(floors) is below it."""
    bound = max(floors)
    if bound == -np.inf or (min_score is not None and bound < min_score):
        return True
    return len(chains) >= k and chains[k - 1].score > bound


# ---------------------------------------------------------------- the search path


def _candidates(store: Any, vector: np.ndarray, width: int, filters: dict[str, Any],
                refine: int | None) -> tuple[list[Clip], float]:
    """Step candidates from the ANN and their floor (-inf when fewer than `width` clips matched).

    refine: rows the ANN re-ranks exactly (None: the store's default). Scores are exact either way;
    a widened list keeps a small budget: 10 x 16k rows re-ranked cost ~2.5 s at 1M rows, 2 x 0.5 s."""
    rows = store.search_clips(vector, width, candidates=refine, **filters)
    clips = [Clip(r["stream_id"], float(r["start"]), float(r["end"]), float(r["score"])) for r in rows]
    floor = min(c.score for c in clips) if len(clips) >= width else -np.inf
    return clips, floor


def sequence_vectors(store: Any, vectors: Sequence[np.ndarray], *, within: float, k: int = 10,
                     adapter: str = "meanpool", stream_ids: Sequence[str] | None = None, start: float | None = None,
                     end: float | None = None, tags: Sequence[str] | None = None, min_score: float | None = None,
                     texts: Sequence[str] | None = None, width: int | None = None,
                     max_width: int = MAX_WIDTH) -> SequenceResult:
    """Sequence search from one query vector per step (no model): candidate lists, join, widen until proven.

    width: the first round's list width (default max(8 k, FIRST_WIDTH)); lists that block the proof
    (module doc) widen 4x per round up to max_width."""
    check_query(len(vectors), within, k)
    texts = list(texts) if texts is not None else [f"step {i + 1}" for i in range(len(vectors))]
    filters = {"adapter": adapter, "stream_ids": stream_ids, "start": start, "end": end, "tags": tags}
    first = max(8 * k, FIRST_WIDTH) if width is None else int(width)
    widths = [first] * len(vectors)
    lists: list[list[Clip]] = [[] for _ in vectors]
    floors = [np.inf] * len(vectors)
    grow = list(range(len(vectors)))
    rounds = 0
    while True:
        rounds += 1
        for i in grow:
            refine = None if widths[i] == first else WIDE_REFINE * widths[i]
            lists[i], floors[i] = _candidates(store, vectors[i], widths[i], filters, refine)
        chains = join(lists, within, k, min_score)
        certified = proven(chains, floors, k, min_score)
        kth = chains[k - 1].score if len(chains) >= k else -np.inf
        bound = min_score if min_score is not None and kth == -np.inf else kth
        grow = [i for i in range(len(vectors)) if floors[i] != -np.inf and floors[i] >= bound and widths[i] < max_width]
        if certified or not grow:
            break
        for i in grow:
            widths[i] = min(max_width, widths[i] * 4)
    uris = store.stream_uris({ch.stream_id for ch in chains})
    hits = [SequenceHit(ch.stream_id, uris.get(ch.stream_id, ""), ch.start, ch.end, ch.score,
                        tuple(StepMatch(t, c.start, c.end, c.score) for t, c in zip(texts, ch.clips)), adapter)
            for ch in chains]
    return SequenceResult(hits, widths, rounds, certified)


def search_sequence(steps: Sequence[str], db: str, *, within: float | None, k: int = 10, adapter: str = "meanpool",
                    stream_ids: Sequence[str] | None = None, start: float | None = None, end: float | None = None,
                    tags: Sequence[str] | None = None, min_score: float | None = None, model: str | None = None,
                    plugins: Any = None, adapter_options: dict[str, Any] | None = None,
                    rerank: str | None = None) -> SequenceResult:
    """Texts in order (A, then B, ...) against the index at `db`; see the module doc for the rules.

    The step texts are embedded in one adapter call (with the query path's cache of text embeddings);
    filters apply to every step. rerank is not supported for sequences (ConfigError)."""
    from streamvl.search import query

    check_query(len(steps), within, k)
    if rerank:
        raise ConfigError(f"rerank {rerank!r}: reranking is not supported for sequence queries")
    store = query.open_store(str(db))
    plugins = plugins if plugins is not None else query._default_plugins()
    spec = query.indexed_model(store, model)
    plugins.adapter(adapter)  # fails fast (PluginError) before loading the model
    encoder = query._encoder(plugins, adapter, spec, dict(adapter_options or {}))
    vectors = encoder.encode_many(list(steps))
    return sequence_vectors(store, vectors, within=float(within), k=k, adapter=adapter, stream_ids=stream_ids,
                            start=start, end=end, tags=tags, min_score=min_score, texts=steps)
