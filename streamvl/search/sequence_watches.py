"""Sequence watches: fire when B follows A within S seconds (then C ...) on a stream, as clips are committed.

Plain Python (numpy; no Ray, no model at import). The rule is the sequence query's
(streamvl.search.sequences): a chain takes one clip per step, each clip matching its step's text
(score >= the watch's threshold), with  start[i] < start[i+1] <= end[i] + within.
Evaluated incrementally, clip by clip in start order per (stream, adapter):
  ChainTracker        per watch, the latest partial chain ending at each step; a clip matching the
                      last step after a live partial chain completes a chain (a ChainMatch)
  SequenceEventBuilder  chains -> events with the plain watches' rules (EventBuilder: a chain opens
                      an event, later chains within the quiet gap extend it); each event keeps the
                      steps (text, time, score) of its best chain; keyed by (watch, stream, start of
                      the first chain's first step) like every watch event
  SequenceWatcher     ties them to a Store: the clips sink calls on_commit(rows) after each commit
State is derivable from the tables, so a restart or a replay neither duplicates nor drops an event:
whenever a (stream, adapter) is new to this process or a batch starts at or before what it last
saw (a replay), its trackers are rebuilt from the stored clip rows of the `horizon` seconds before
the batch (after the last stored row: a restarted live stream resumes after a gap, and the rows a
killed sink committed without their events are rescored), and stored events are looked up before
one is opened. Any partial chain that can still grow lies inside that horizon, so the rebuilt
trackers complete the same chains as trackers that had seen the whole stream.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from streamvl.search.watches import DEFAULT_QUIET_S, RELOAD_S, EventBuilder, Match, _unit

log = logging.getLogger(__name__)
SEQ_KEEP = 64  # sequence events kept in memory per (watch, stream); older ones are looked up in the table


@dataclass(frozen=True)
class SequenceWatch:
    """One active sequence watch (vectors: {adapter: one unit vector per step})."""

    watch_id: str
    texts: tuple[str, ...]
    threshold: float
    within_s: float
    streams: frozenset[str]
    quiet_s: float
    vectors: Mapping[str, tuple[np.ndarray, ...]]
    webhook: str | None = None
    name: str = ""

    def horizon(self, clip_s: float) -> float:
        """Seconds of stored clips before a batch that hold every partial chain still able to grow."""
        return (len(self.texts) + 1) * (self.within_s + clip_s) + self.quiet_s

    @staticmethod
    def from_rows(rows: Iterable[Mapping[str, Any]], quiet_s: float = DEFAULT_QUIET_S) -> list["SequenceWatch"]:
        """Sequence watches from `watches` rows (the rows with then_texts; plain watches are skipped)."""
        by_id: dict[str, dict[str, Any]] = {}
        for r in rows:
            if not r.get("then_texts"):
                continue
            w = by_id.setdefault(r["watch_id"], {"row": r, "vectors": {}})
            steps = [np.asarray(r["embedding"], np.float32), *(np.asarray(v, np.float32) for v in r["then_embeddings"])]
            w["vectors"][r["adapter"]] = tuple(_unit(v) for v in steps)
        out = []
        for wid, w in by_id.items():
            r = w["row"]
            out.append(SequenceWatch(wid, (r["text"], *r["then_texts"]), float(r["threshold"]), float(r["within_s"]),
                                     frozenset(r["streams"] or ()),
                                     float(r["quiet_s"] if r.get("quiet_s") is not None else quiet_s), w["vectors"],
                                     r.get("webhook"), r.get("name") or ""))
        return out


def is_sequence(row: Mapping[str, Any]) -> bool:
    """Whether a `watches` row is a sequence watch's."""
    return bool(row.get("then_texts"))


@dataclass(frozen=True)
class StepHit:
    """The clip one step of a chain matched."""

    text: str
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class ChainMatch(Match):
    """A completed chain as a watch match: start..end from the first step's start to the last step's
    end, score the lowest step score, and each step's clip."""

    steps: tuple[StepHit, ...] = ()


class ChainTracker:
    """One watch on one (stream, adapter): feed clips in start order (add); returns a completed chain or None."""

    def __init__(self, watch: SequenceWatch) -> None:
        self.watch = watch
        self.partial: list[tuple[StepHit, ...] | None] = [None] * len(watch.texts)

    def add(self, start: float, end: float, scores: Sequence[float]) -> tuple[StepHit, ...] | None:
        """scores: this clip's score per step. A step it matches extends the latest partial chain of
        the step before (if this clip may follow it); the new partial replaces the older one (the
        latest clip is the one later clips can follow longest)."""
        w, found, done = self.watch, {}, None
        for i, score in enumerate(scores):
            if score < w.threshold:
                continue
            hit = StepHit(w.texts[i], start, end, float(score))
            if i == 0:
                found[i] = (hit,)
                continue
            prev = self.partial[i - 1]
            if prev is not None and prev[-1].start < start <= prev[-1].end + w.within_s:
                found[i] = (*prev, hit)
        for i, chain in found.items():
            if i == len(scores) - 1:
                done = chain
            else:
                self.partial[i] = chain
        return done


class SequenceEventBuilder(EventBuilder):
    """EventBuilder for chains: events carry the steps of their best chain, and a chain that no event
    in memory covers is first checked against the stored events (lookup), so a replay extends the
    stored event instead of writing it again."""

    def __init__(self, quiet_s: Callable[[str], float] | float = DEFAULT_QUIET_S, *,
                 lookup: Callable[[str, str, float, float], list[dict[str, Any]]] | None = None,
                 clock: Callable[[], dt.datetime] | None = None, keep: int = SEQ_KEEP) -> None:
        super().__init__(quiet_s, **({"clock": clock} if clock is not None else {}), keep=keep)
        self.lookup = lookup

    def _apply(self, m: Match, stamp: dt.datetime) -> list[dict[str, Any]]:
        key = (m.watch_id, m.stream_id)
        quiet = self._quiet(m.watch_id)
        evs = self.events.setdefault(key, [])
        if self.lookup is not None and not any(e["start"] <= m.start <= e["end"] + quiet for e in evs):
            known = {e["start"] for e in evs}
            evs.extend(dict(r) for r in self.lookup(m.watch_id, m.stream_id, m.start, quiet) if r["start"] not in known)
            evs.sort(key=lambda e: e["start"])
        peaks = {id(e): e["peak_score"] for e in evs}
        out = super()._apply(m, stamp)
        steps = [{"text": s.text, "start": s.start, "end": s.end, "score": s.score} for s in getattr(m, "steps", ())]
        for ev in out:
            fresh = id(ev) not in peaks
            if fresh or (ev["peak_score"] > peaks[id(ev)] and ev["peak_score"] == m.score):
                ev["steps"] = steps
        return out


@dataclass
class _Stream:
    """What this process knows of one (stream, adapter): the last clip start seen, a tracker per watch."""

    cursor: float = -math.inf
    trackers: dict[str, ChainTracker] = field(default_factory=dict)


class SequenceWatcher:
    """Sequence watches on a store's committed clip rows: call on_commit(rows) after each clips commit.

    Rereads the watches when their table changed (checked every reload_s seconds); does nothing
    while no sequence watch is active."""

    def __init__(self, store: Any, *, reload_s: float = RELOAD_S, quiet_s: float = DEFAULT_QUIET_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.reload_s, self.quiet_s, self._clock = store, reload_s, quiet_s, clock
        self.watches: list[SequenceWatch] = []
        self._quiet: dict[str, float] = {}
        self.builder = SequenceEventBuilder(lambda wid: self._quiet.get(wid, self.quiet_s), lookup=self._stored_events)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._loaded_at: float | None = None
        self._version: int | None = None
        self.events_written = 0
        self.commits = 0  # event-table commits so far

    def _tables(self):
        from streamvl.storage.watches import WatchTables

        return WatchTables.of(self.store)

    def reload(self) -> None:
        """Reread the sequence watches if the watches table changed (a new watch starts from fresh trackers)."""
        from streamvl.storage.schema import WATCHES

        handle = self.store.conn.open(WATCHES)
        version = None if handle is None else handle.version
        self._loaded_at = self._clock()
        if version == self._version:
            return
        self._version = version
        watches = SequenceWatch.from_rows(self._tables().watch_rows(), self.quiet_s) if handle is not None else []
        if [(w.watch_id, w.threshold, w.within_s) for w in watches] != [(w.watch_id, w.threshold, w.within_s)
                                                                         for w in self.watches]:
            self._streams.clear()  # rebuilt from the table at the next batch of each stream
        self.watches = watches
        self._quiet.update({w.watch_id: w.quiet_s for w in watches})

    def _stored_events(self, watch_id: str, stream_id: str, start: float, quiet: float) -> list[dict[str, Any]]:
        """Stored events of (watch, stream) that a chain starting at `start` would extend."""
        from streamvl.storage.schema import EVENTS, sql_float, sql_str

        if EVENTS not in self.store.table_names():
            return []
        where = (f"watch_id = {sql_str(watch_id)} AND stream_id = {sql_str(stream_id)} AND start <= {sql_float(start)} "
                 f"AND `end` >= {sql_float(start - quiet)}")
        return self.store.read(EVENTS, where).to_pylist()

    def on_commit(self, clips: Any) -> int:
        """Score committed clip rows (an Arrow table of the clips schema) against the sequence watches;
        store the events they open, extend or close. Returns the number of event rows written."""
        if self._loaded_at is None or self._clock() - self._loaded_at >= self.reload_s:
            self.reload()
        if not self.watches or clips.num_rows == 0:
            return 0
        rows = clips.select(["stream_id", "adapter", "start", "end", "embedding"])
        parts, latest = [], {}
        for (sid, adapter), idx in _groups(rows).items():
            starts = rows["start"].take(idx).to_numpy()
            latest[sid] = max(latest.get(sid, -math.inf), float(starts.max()))
            state = self._streams.get((sid, adapter))
            lo = float(starts.min())
            if state is None or lo <= state.cursor:  # new to this process, or a replay: rebuild from the table
                state = self._streams[(sid, adapter)] = _Stream()
                history = self._history(sid, adapter, lo, float((rows["end"].take(idx).to_numpy() - starts).max()))
                if history is not None and history.num_rows:
                    parts.append(history)
            parts.append(rows.take(idx))
        matches = []
        for part in parts:
            matches.extend(self._chains(part))
        changed = self.builder.feed(sorted(matches, key=lambda m: (m.stream_id, m.start, m.watch_id)), latest)
        if changed:
            self._tables().record_watch_events(changed)
            self.events_written += len(changed)
            self.commits += 1
        return len(changed)

    def _history(self, stream_id: str, adapter: str, before: float, clip_s: float) -> Any:
        """Stored clip rows of (stream, adapter) in the horizon before the last stored row that starts before `before`."""
        from streamvl.storage.schema import CLIPS, sql_float, sql_str

        where = f"stream_id = {sql_str(stream_id)} AND adapter = {sql_str(adapter)} AND start < {sql_float(before)}"
        starts = self.store.read(CLIPS, where, ["start"])["start"].to_numpy()
        if not len(starts):
            return None
        horizon = max(w.horizon(clip_s) for w in self.watches)
        rows = self.store.read(CLIPS, f"{where} AND start >= {sql_float(float(starts.max()) - horizon)}",
                               ["stream_id", "adapter", "start", "end", "embedding"])
        return rows.sort_by([("start", "ascending")])

    def _chains(self, rows: Any) -> list[ChainMatch]:
        """Feed rows of ONE (stream, adapter), in start order, to its trackers; the chains they complete."""
        sid, adapter = rows["stream_id"][0].as_py(), rows["adapter"][0].as_py()
        rows = rows.sort_by([("start", "ascending")])
        watches = [w for w in self.watches if adapter in w.vectors and (not w.streams or sid in w.streams)]
        if not watches:
            return []
        state = self._streams.setdefault((sid, adapter), _Stream())
        emb = rows["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        emb = _unit(emb.astype(np.float32, copy=False).reshape(rows.num_rows, -1))
        cols = np.stack([v for w in watches for v in w.vectors[adapter]], axis=1)  # [D, sum of steps]: one product
        scores = emb @ cols
        starts, ends = rows["start"].to_numpy(), rows["end"].to_numpy()
        out = []
        for j, w in enumerate(watches):
            first = sum(len(x.texts) for x in watches[:j])
            tracker = state.trackers.setdefault(w.watch_id, ChainTracker(w))
            for r in range(rows.num_rows):
                if starts[r] <= state.cursor:
                    continue  # seen already (a batch overlapping the rebuilt history)
                chain = tracker.add(float(starts[r]), float(ends[r]), scores[r, first:first + len(w.texts)])
                if chain is not None:
                    out.append(ChainMatch(w.watch_id, sid, chain[0].start, chain[-1].end,
                                          min(s.score for s in chain), adapter, chain))
        state.cursor = max(state.cursor, float(starts.max()))
        return out


def _groups(rows: Any) -> dict[tuple[str, str], np.ndarray]:
    """Row indices per (stream_id, adapter)."""
    sids, adapters = rows["stream_id"].to_pylist(), rows["adapter"].to_pylist()
    out: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(sids, adapters)):
        out.setdefault(key, []).append(i)
    return {k: np.asarray(v, np.int64) for k, v in out.items()}


def sequence_dry_run(stream_ids: Sequence[str], starts: Sequence[float], ends: Sequence[float], embeddings: np.ndarray,
                     vectors: Sequence[np.ndarray], texts: Sequence[str], *, within_s: float,
                     thresholds: Sequence[float] | None = None, quiet_s: float = DEFAULT_QUIET_S, top: int = 5,
                     adapter: str = "meanpool") -> Any:
    """What a sequence watch would have fired over stored clip rows (`watch test TEXT --then ...`):
    events per threshold (default: quantiles of each clip's best step score) through the same
    trackers and event rules as the live path, and the `top` best chains (the sequence query's join
    over every clip, exact). Returns a streamvl.search.watches.DryRun whose top are ChainMatches."""
    from streamvl.search.sequences import Clip, join
    from streamvl.search.watches import DryRun

    emb = _unit(np.asarray(embeddings, np.float32).reshape(len(starts), -1))
    scores = emb @ np.stack([_unit(np.asarray(v, np.float32)) for v in vectors], axis=1) if len(starts) else \
        np.zeros((0, len(vectors)), np.float32)
    if thresholds is None:
        best = scores.max(axis=1) if len(scores) else np.zeros(0)
        qs = np.quantile(best, [0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]) if len(best) else []
        thresholds = sorted({round(float(q), 3) for q in qs})
    order = sorted(range(len(starts)), key=lambda i: (stream_ids[i], starts[i]))
    counts = {}
    for th in thresholds:
        watch = SequenceWatch("test", tuple(texts), float(th), float(within_s), frozenset(), quiet_s, {adapter: ()})
        trackers: dict[str, ChainTracker] = {}
        chains = []
        for i in order:
            chain = trackers.setdefault(stream_ids[i], ChainTracker(watch)).add(float(starts[i]), float(ends[i]), scores[i])
            if chain is not None:
                chains.append(ChainMatch("test", str(stream_ids[i]), chain[0].start, chain[-1].end,
                                         min(s.score for s in chain), adapter, chain))
        builder = SequenceEventBuilder(quiet_s, keep=len(chains) + 1)
        builder.feed(chains, {})
        counts[float(th)] = sum(len(evs) for evs in builder.events.values())
    steps = [[Clip(str(stream_ids[i]), float(starts[i]), float(ends[i]), float(scores[i, j])) for i in order]
             for j in range(len(vectors))]
    best_chains = join(steps, float(within_s), top) if top and len(order) else []
    return DryRun(counts, [ChainMatch("test", ch.stream_id, ch.start, ch.end, ch.score, adapter,
                                      tuple(StepHit(t, c.start, c.end, c.score) for t, c in zip(texts, ch.clips)))
                           for ch in best_chains], len(starts))
