"""Standing queries: score committed clip rows against every active watch, and turn matches into events.

Plain Python (numpy; no Ray, no model at import). Three parts, one job each:
  embed_watch_texts  texts -> {adapter: vector}, one batched text-tower call per adapter
  WatchMatcher       new clip rows x active watch vectors as ONE matrix product per adapter, then the
                     stream filters and thresholds -> matches (watch, stream, window, score)
  EventBuilder       matches -> events: a match opens an event, a match within the watch's quiet gap
                     of its end extends it, a window past the gap closes it
`Watcher` ties them to a Store: it reloads the watches every few seconds, restores the builder from
the `watch_events` table (so a restart or a replay continues the same events instead of firing
again), rescores the stored tail of each stream once at start (rows a killed sink committed but
had no time to turn into events: a live stream never replays them), and writes the events a
batch changed: appends the new ones (their keys checked against the ids it read at start and
wrote since) and upserts the closed ones and those grown GROWTH_WRITE_S past what is stored. Events are keyed by (watch, stream, start of
the first matching window): rewriting one is a no-op, so each is stored exactly once.
`streamvl.search.watch_thread.WatchThread` runs a Watcher off the sink's commit path.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from streamvl.storage.watches import event_id, now

log = logging.getLogger(__name__)
DEFAULT_QUIET_S = 4.0  # an event closes once no window has matched for this long past its end
RELOAD_S = 3.0  # the watcher rereads the watches table at most this often
CATCHUP_S = 30.0  # at start, stored clip rows from this long before each stream's checkpoint are rescored
_KEEP = 4  # events kept in memory per (watch, stream): the ones a replay can still touch
GROWTH_WRITE_S = 5.0  # an open event's growth is stored once its end moved this far (stream s) or it closes
UPSERT_EVERY_S = 10.0  # background watching: closes and growth wait this long (stream s) to share one upsert


def embed_watch_texts(texts: Sequence[str], db: str, adapters: Sequence[str] = ("meanpool",), *,
                      model: str | None = None, adapter_options: Mapping[str, Any] | None = None,
                      plugins: Any = None) -> list[dict[str, np.ndarray]]:
    """Each text's embedding per adapter ({adapter: float32 [D]}), one text-tower call per adapter."""
    from streamvl.search import query

    plugins = plugins if plugins is not None else query._default_plugins()
    spec = query.indexed_model(query.open_store(str(db)), model)
    out: list[dict[str, np.ndarray]] = [{} for _ in texts]
    for adapter in adapters:
        plugins.adapter(adapter)
        encoder = query._encoder(plugins, adapter, spec, dict(adapter_options or {}))
        vectors = query._as_vector(encoder.adapter.encode_text(list(texts)))
        for i, vec in enumerate(vectors):
            out[i][adapter] = vec
    return out


@dataclass(frozen=True)
class Watch:
    """One active watch as the matcher uses it (vectors: {adapter: unit vector})."""

    watch_id: str
    text: str
    threshold: float
    streams: frozenset[str]
    quiet_s: float
    vectors: Mapping[str, np.ndarray]
    webhook: str | None = None
    name: str = ""

    @staticmethod
    def from_rows(rows: Iterable[Mapping[str, Any]], quiet_s: float = DEFAULT_QUIET_S) -> list["Watch"]:
        """Plain watches from `watches` rows (one per watch and adapter), in the rows' order."""
        by_id: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r.get("then_texts"):  # a sequence watch: streamvl.search.sequence_watches
                continue
            w = by_id.setdefault(r["watch_id"], {"row": r, "vectors": {}})
            w["vectors"][r["adapter"]] = _unit(np.asarray(r["embedding"], np.float32))
        return [Watch(wid, w["row"]["text"], float(w["row"]["threshold"]), frozenset(w["row"]["streams"] or ()),
                      float(w["row"]["quiet_s"] if w["row"].get("quiet_s") is not None else quiet_s), w["vectors"],
                      w["row"].get("webhook"), w["row"].get("name") or "")
                for wid, w in by_id.items()]


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


@dataclass(frozen=True)
class Match:
    watch_id: str
    stream_id: str
    start: float
    end: float
    score: float
    adapter: str


class WatchMatcher:
    """Scores clip rows against watches: per adapter, rows [N, D] @ watch vectors [D, W], once."""

    def __init__(self, watches: Sequence[Watch]):
        self.watches = list(watches)
        self._by_adapter: dict[str, tuple[list[Watch], np.ndarray, np.ndarray]] = {}
        self._filtered: dict[str, list[tuple[int, list[str]]]] = {}  # adapter -> (column, streams) of filtered watches
        for adapter in sorted({a for w in self.watches for a in w.vectors}):
            ws = [w for w in self.watches if adapter in w.vectors]
            self._by_adapter[adapter] = (ws, np.stack([w.vectors[adapter] for w in ws], axis=1),
                                         np.array([w.threshold for w in ws], np.float32))
            self._filtered[adapter] = [(j, sorted(w.streams)) for j, w in enumerate(ws) if w.streams]

    def scores(self, embeddings: np.ndarray, adapter: str) -> np.ndarray:
        """Cosine scores [N, W] of rows against this adapter's watches (W = 0 columns if none)."""
        entry = self._by_adapter.get(adapter)
        if entry is None:
            return np.zeros((len(embeddings), 0), np.float32)
        return _unit(np.asarray(embeddings, np.float32)) @ entry[1]

    def match(self, stream_ids: Sequence[str], starts: Sequence[float], ends: Sequence[float],
              adapters: Sequence[str], embeddings: np.ndarray) -> list[Match]:
        """The (row, watch) pairs scoring at least the watch's threshold on a stream it watches,
        sorted by (stream, start, watch)."""
        adapters_arr, sids = np.asarray(adapters, object), np.asarray(stream_ids, object)
        out: list[Match] = []
        for adapter, (ws, _, thresholds) in self._by_adapter.items():
            rows = np.nonzero(adapters_arr == adapter)[0]
            if not len(rows):
                continue
            scores = self.scores(embeddings[rows], adapter)
            hit = scores >= thresholds[None, :]
            for j, streams in self._filtered[adapter]:
                hit[:, j] &= np.isin(sids[rows], streams)
            for i, j in zip(*np.nonzero(hit)):
                r = rows[i]
                out.append(Match(ws[j].watch_id, str(sids[r]), float(starts[r]), float(ends[r]), float(scores[i, j]),
                                 adapter))
        return sorted(out, key=lambda m: (m.stream_id, m.start, m.watch_id))


class EventBuilder:
    """Matches -> events, per (watch, stream). State is the recent events themselves, so it can be
    rebuilt from the `watch_events` rows (restore) and a replayed match merges into the event
    that already covers it."""

    def __init__(self, quiet_s: Callable[[str], float] | float = DEFAULT_QUIET_S, clock: Callable[[], dt.datetime] = now,
                 keep: int = _KEEP):
        self.keep = keep  # events kept per (watch, stream)
        self._quiet = quiet_s if callable(quiet_s) else (lambda _wid, q=float(quiet_s): q)
        self.clock = clock
        self.events: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._open: set[tuple[str, str]] = set()  # the (watch, stream)s whose latest event is open: all a close checks

    def restore(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Continue from stored events (the latest few per watch and stream)."""
        for r in sorted(rows, key=lambda r: r["start"]):
            self.events.setdefault((r["watch_id"], r["stream_id"]), []).append(dict(r))
        for key, evs in self.events.items():
            self.events[key] = evs[-self.keep:]
            self._note(key)

    def open_keys(self) -> set[tuple[str, str]]:
        """The (watch, stream)s whose latest event is open."""
        return set(self._open)

    def _note(self, key: tuple[str, str]) -> None:
        if self.events[key][-1]["status"] == "open":
            self._open.add(key)
        else:
            self._open.discard(key)

    def feed(self, matches: Sequence[Match], latest: Mapping[str, float]) -> list[dict[str, Any]]:
        """Apply matches (sorted by stream, start), then close open events of the streams whose
        newest window (latest: {stream: start}) is past the quiet gap. Returns the changed events."""
        changed: dict[tuple[str, str, float], dict[str, Any]] = {}
        stamp = self.clock()
        for m in matches:
            for ev in self._apply(m, stamp):  # nothing when a replayed match changes nothing
                changed[(ev["watch_id"], ev["stream_id"], ev["start"])] = ev
            self._note((m.watch_id, m.stream_id))
        for wid, sid in list(self._open):  # not every (watch, stream) ever seen: that grows with the run
            t = latest.get(sid)
            ev = self.events[(wid, sid)][-1]
            if ev["status"] != "open":
                self._open.discard((wid, sid))
            elif t is not None and t > ev["end"] + self._quiet(wid):
                ev["status"], ev["updated_at"] = "closed", stamp
                changed[(wid, sid, ev["start"])] = ev
                self._open.discard((wid, sid))
        return [dict(e) for e in changed.values()]

    def _apply(self, m: Match, stamp: dt.datetime) -> list[dict[str, Any]]:
        """The events this match changed: the one it extends, or a new one (and the one it closes)."""
        evs = self.events.setdefault((m.watch_id, m.stream_id), [])
        quiet = self._quiet(m.watch_id)
        for ev in reversed(evs):
            if ev["start"] <= m.start <= ev["end"] + quiet:  # extends (or, replayed, lies inside) this event
                grew = m.end > ev["end"] or m.score > ev["peak_score"]
                if m.end > ev["end"]:
                    ev["end"] = m.end
                if m.score > ev["peak_score"]:
                    ev["peak_score"], ev["peak_time"] = m.score, m.start
                if grew:
                    ev["updated_at"] = stamp
                return [ev] if grew else []
        out = []
        if evs and evs[-1]["status"] == "open" and m.start > evs[-1]["end"] + quiet:
            evs[-1]["status"], evs[-1]["updated_at"] = "closed", stamp
            out.append(evs[-1])
        ev = {"watch_id": m.watch_id, "stream_id": m.stream_id, "start": m.start, "end": m.end,
              "peak_score": m.score, "peak_time": m.start, "status": "open",
              "event_id": event_id(m.watch_id, m.stream_id, m.start), "adapter": m.adapter,
              "opened_at": stamp, "updated_at": stamp, "wallclock": None}
        evs.append(ev)
        evs.sort(key=lambda e: e["start"])
        del evs[:-self.keep]
        return [*out, ev]


class Watcher:
    """Watches on a store's committed clip rows: call on_commit(rows) after each clips commit.

    The watches are reread every reload_s seconds (added or removed watches apply from then on);
    the events are restored from the table once, at the first call."""

    def __init__(self, store: Any, *, reload_s: float = RELOAD_S, quiet_s: float = DEFAULT_QUIET_S,
                 clock: Callable[[], float] = time.monotonic, upsert_every_s: float = 0.0):
        """upsert_every_s: hold closes and growth of stored events until the oldest held one is this
        many stream seconds old, so they share one upsert (a merge, ~4x an append's CPU) instead
        of one each; flush_held() writes them now. New events are appended at once either way."""
        self.store, self.reload_s, self.quiet_s, self._clock = store, reload_s, quiet_s, clock
        self.upsert_every_s = upsert_every_s
        self._held: dict[str, dict[str, Any]] = {}  # event_id -> the newest unwritten state of a stored event
        self._held_at: dict[str, float] = {}  # event_id -> its stream's newest window start when first held
        self._latest: dict[str, float] = {}  # stream -> the newest window start seen
        self.commits = 0  # event-table commits so far (the sink compacts the table after enough of them)
        self.matcher = WatchMatcher([])
        self._quiet: dict[str, float] = {}
        # each stream's checkpoint when this watcher started, before its sink committed anything: a live
        # stream resumes after a gap, so its checkpoint at the first commit is already past the
        # predecessor's last rows, which the catch-up must reach
        self._started_at = {st.stream_id: st.last_committed_pts for st in store.stream_states()}
        self.builder = EventBuilder(lambda wid: self._quiet.get(wid, self.quiet_s))
        self._loaded_at: float | None = None
        self._version: int | None = None  # the watches table version last read
        self._catch_up = False  # rescore the stored tail of each stream at the next call
        self._stored: dict[str, float] = {}  # event_id -> the end the table holds (read at the first call, then kept)
        self.events_written = 0

    def reload(self) -> None:
        """Reread the watches if their table changed since the last read (a version check is cheap;
        reading 1,000 watches' embeddings is not)."""
        from streamvl.storage.schema import WATCHES
        from streamvl.storage.watches import WatchTables

        tables = WatchTables.of(self.store)
        handle = self.store.conn.open(WATCHES)
        version = None if handle is None else handle.version
        if self._loaded_at is not None and version == self._version:
            self._loaded_at = self._clock()
            return
        self._version = version
        watches = Watch.from_rows(tables.watch_rows(), self.quiet_s)
        self.matcher = WatchMatcher(watches)
        self._quiet.update({w.watch_id: w.quiet_s for w in watches})
        if self._loaded_at is None:
            stored = [e for e in tables.watch_events() if e.get("steps") is None]  # sequence events: not ours
            self.builder.restore(stored)
            self._stored = {r["event_id"]: r["end"] for r in stored}
            self._catch_up = True
        self._loaded_at = self._clock()

    def _tail_rows(self) -> Any:
        """Clip rows of each stream from CATCHUP_S before its recorded checkpoint on: they include
        any rows a killed predecessor committed without storing their events (a live stream does
        not replay them)."""
        from streamvl.storage.schema import CLIPS, sql_float, sql_str

        refs = {st.stream_id: st.last_committed_pts for st in self.store.stream_states()}
        refs.update({sid: pts for sid, pts in self._started_at.items() if pts is not None})
        parts = [f"(stream_id = {sql_str(sid)} AND start >= {sql_float(pts - CATCHUP_S)})"
                 for sid, pts in refs.items() if pts is not None]
        return self.store.read(CLIPS, " OR ".join(parts)) if parts else None

    def on_commit(self, clips: Any) -> int:
        """Score committed clip rows (an Arrow table of the clips schema); store the events they
        open, extend or close. Returns the number of event rows written."""
        if self._loaded_at is None or self._clock() - self._loaded_at >= self.reload_s:
            self.reload()
        if not self.matcher.watches:
            self._catch_up = False  # the catch-up is for rows of watches that existed before a restart
            return 0
        written = 0
        if self._catch_up:  # once, at start: rows the events may not describe yet (rows already covered change nothing)
            self._catch_up = False
            tail = self._tail_rows()
            if tail is not None and tail.num_rows:
                written += self._score(tail.sort_by([("stream_id", "ascending"), ("start", "ascending")]))
        return written + self._score(clips)

    def _score(self, clips: Any) -> int:
        if clips.num_rows == 0:
            return 0
        from streamvl.storage.watches import WatchTables

        col = clips.column("embedding").combine_chunks()
        emb = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(clips.num_rows, -1)
        sids, starts = clips.column("stream_id").to_pylist(), clips.column("start").to_numpy()
        matches = self.matcher.match(sids, starts, clips.column("end").to_numpy(),
                                     clips.column("adapter").to_pylist(), emb)
        latest: dict[str, float] = {}
        for s, t in zip(sids, starts.tolist()):
            latest[s] = max(latest.get(s, t), t)
        for s, t in latest.items():
            self._latest[s] = max(self._latest.get(s, t), t)
        changed = self.builder.feed(matches, latest)
        if not changed and not self._upsert_due():
            return 0
        written = self._record(WatchTables.of(self.store), changed)
        self.events_written += written
        return written

    def flush_held(self) -> int:
        """Write the held closes and growth now (see upsert_every_s), and the small growth of open
        events (< GROWTH_WRITE_S) too: called before a sink stops, it leaves the stored events equal
        to the rules over the committed rows. Returns rows written."""
        for key in list(self.builder.open_keys()):
            e = self.builder.events[key][-1]
            eid = e["event_id"]
            if eid in self._stored and eid not in self._held and e["end"] > self._stored[eid]:
                self._held[eid] = dict(e)
        if not self._held:
            return 0
        from streamvl.storage.watches import WatchTables

        written = self._upsert(WatchTables.of(self.store))
        self.events_written += written
        return written

    def _upsert(self, tables: Any) -> int:
        rows = list(self._held.values())
        tables.record_watch_events(rows)
        self.commits += 1
        self._stored.update({e["event_id"]: e["end"] for e in rows})
        self._held, self._held_at = {}, {}
        return len(rows)

    def _upsert_due(self) -> bool:
        """Whether a held event waited upsert_every_s on its stream's clock."""
        return any(self._latest.get(self._held[eid]["stream_id"], t) - t >= self.upsert_every_s
                   for eid, t in self._held_at.items())

    def _record(self, tables: Any, changed: list[dict[str, Any]]) -> int:
        """Append the events the table does not hold yet (no merge join); upsert the stored ones
        that closed or whose end moved GROWTH_WRITE_S past the stored end, once the oldest of them
        waited upsert_every_s (stream s). Smaller growth waits for the next write or the close: a
        kill before it loses nothing, the restart's rescoring of each stream's last CATCHUP_S
        (> GROWTH_WRITE_S + upsert_every_s) redoes it. Returns rows written."""
        new = [e for e in changed if e["event_id"] not in self._stored]
        for e in changed:
            eid = e["event_id"]
            if eid in self._stored and (eid in self._held or e["status"] == "closed"
                                        or e["end"] - self._stored[eid] >= GROWTH_WRITE_S):
                self._held[eid] = e
                self._held_at.setdefault(eid, self._latest.get(e["stream_id"], e["end"]))
        written = 0
        if self._upsert_due():
            written += self._upsert(tables)
        if new:
            tables.append_watch_events(new)
            self.commits += 1
            self._stored.update({e["event_id"]: e["end"] for e in new})
        return written + len(new)


@dataclass(frozen=True)
class DryRun:
    """What a watch would have fired over the indexed clips: events per threshold, the best clips."""

    counts: dict[float, int]
    top: list[Match]
    clips: int


def dry_run(stream_ids: Sequence[str], starts: Sequence[float], ends: Sequence[float], embeddings: np.ndarray,
            vector: np.ndarray, *, adapter: str = "meanpool", thresholds: Sequence[float] | None = None,
            quiet_s: float = DEFAULT_QUIET_S, top: int = 5) -> DryRun:
    """Run one watch vector over stored clip rows (one product), and count the events an
    EventBuilder would open at each threshold (default: score quantiles from the median up)."""
    scores = _unit(np.asarray(embeddings, np.float32)) @ _unit(np.asarray(vector, np.float32))
    if thresholds is None:
        qs = np.quantile(scores, [0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]) if len(scores) else []
        thresholds = sorted({round(float(q), 3) for q in qs})
    order = sorted(range(len(scores)), key=lambda i: (stream_ids[i], starts[i]))
    counts = {}
    for th in thresholds:
        builder = EventBuilder(quiet_s, keep=len(scores) + 1)
        ms = [Match("test", str(stream_ids[i]), float(starts[i]), float(ends[i]), float(scores[i]), adapter)
              for i in order if scores[i] >= th]
        builder.feed(ms, {})
        counts[float(th)] = sum(len(evs) for evs in builder.events.values())
    best = np.argsort(-scores)[:top]
    return DryRun(counts, [Match("test", str(stream_ids[i]), float(starts[i]), float(ends[i]), float(scores[i]), adapter)
                           for i in best], len(scores))
