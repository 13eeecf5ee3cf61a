"""Paged search: hits in one deterministic order, an opaque cursor, and no cap on how deep it pages.

Score order. Matching clips are ranked by (score desc, stream_id, start), a total order. A page
takes clips in that order, merges each into the page's hit it touches (same stream, time
ranges overlapping or touching; a clip touching two hits joins them) and stops before the clip
that would open hit k+1. The next page starts right after the last clip taken. Pages are thus
consecutive bands of one ranking: every matching clip lies in exactly one hit of one page, and
scores never rise from a page to the next. A hit's score is its best clip's, `peak` that clip.

Time order. The hits are the runs of clips scoring at least a threshold (min_score, else the
lowest score of the clip pool a first score page looks at), merged the same way, earliest first.

The cursor (base64url JSON) holds where the last page ended, how many clips and hits came before
(a fetch-size hint and the rank of the next hit) and a digest of the query, so it is refused
for another query. Clips committed meanwhile above the cursor are not shown by later pages;
those below it are. With an ANN index the ranking is the index's (see Store.search_clips).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

FetchRows = Callable[[int], list[dict[str, Any]]]  # n -> the n best clips (rows with score), best first
POOL_MIN = 50  # clips a page looks at first (as streamvl.search.query.search_vectors does)
WIDEN = 4  # the fetch grows this much while a page needs more clips


class CursorError(ValueError):
    """A cursor that is not one of ours, or belongs to another query."""


class Cursor(BaseModel):
    """Where a page ended. score order: the last clip (s, id, t); time order: the last hit (t, id)
    and the threshold th. n: clips (score) consumed before; h: hits returned before."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = 1
    o: str
    q: str
    id: str
    t: float
    s: float | None = None
    th: float | None = None
    n: int = 0
    h: int = 0

    def encode(self) -> str:
        raw = json.dumps(self.model_dump(exclude_none=True), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, order: str, digest: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            cursor = cls.model_validate(json.loads(raw))
        except (binascii.Error, ValueError, ValidationError, UnicodeDecodeError) as exc:
            raise CursorError("not a cursor of this server") from exc
        if cursor.v != 1 or cursor.o != order or cursor.q != digest:
            raise CursorError("belongs to another query (text, filters or sort differ)")
        numbers = [cursor.t, cursor.s, cursor.th]
        if any(x is not None and not math.isfinite(x) for x in numbers) or cursor.n < 0 or cursor.h < 0:
            raise CursorError("holds values out of range")
        return cursor


def query_digest(parts: dict[str, Any]) -> str:
    """A short digest of everything that defines the result list (not k: pages may change size)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Segment:
    """A hit under construction: one stream's time range and its best clip (the one that opened it)."""

    stream_id: str
    start: float
    end: float
    score: float
    best: dict[str, Any]
    clips: int = 1

    @property
    def peak(self) -> tuple[float, float]:
        return float(self.best["start"]), float(self.best["end"])

    def touches(self, row: dict[str, Any]) -> bool:
        return row["stream_id"] == self.stream_id and row["start"] <= self.end and row["end"] >= self.start

    def extend(self, start: float, end: float, clips: int) -> None:
        self.start, self.end, self.clips = min(self.start, start), max(self.end, end), self.clips + clips


def clip_key(row: dict[str, Any]) -> tuple[float, str, float]:
    return (-float(row["score"]), str(row["stream_id"]), float(row["start"]))


def _open(row: dict[str, Any]) -> Segment:
    return Segment(str(row["stream_id"]), float(row["start"]), float(row["end"]), float(row["score"]), row)


def take_band(rows: Sequence[dict[str, Any]], k: int) -> tuple[list[Segment], int]:
    """Merge clips (best first) into at most k hits; stop before the clip that would open hit k+1.
    Returns the hits (best first) and how many clips were taken."""
    segments: list[Segment] = []  # in opening order: best score first
    for i, row in enumerate(rows):
        touching = [s for s in segments if s.touches(row)]
        if not touching:
            if len(segments) == k:
                return segments, i
            segments.append(_open(row))
            continue
        head = touching[0]  # opened first: the best of them
        head.extend(float(row["start"]), float(row["end"]), 1)
        for other in touching[1:]:  # the clip bridges two hits: one hit now
            head.extend(other.start, other.end, other.clips)
            segments.remove(other)
    return segments, len(rows)


def score_page(fetch: FetchRows, k: int, after: Cursor | None) -> tuple[list[Segment], Cursor | None, int]:
    """One page in score order: its hits, the cursor state after it (None: last page; the caller
    fills o and q), and the rank offset of its first hit."""
    after_key = None if after is None else (-float(after.s), after.id, after.t)
    consumed_before = after.n if after else 0
    n = consumed_before + max(WIDEN * k, POOL_MIN)
    while True:
        rows = fetch(n)
        exhausted = len(rows) < n
        rest = [r for r in rows if after_key is None or clip_key(r) > after_key]
        segments, used = take_band(rest, k)
        if used < len(rest) or exhausted:
            break
        n *= WIDEN
    hits_before = after.h if after else 0
    if used == len(rest) and exhausted or not segments:
        return segments, None, hits_before
    last = rest[used - 1]
    state = Cursor(o="", q="", s=float(last["score"]), id=str(last["stream_id"]), t=float(last["start"]),
                   n=consumed_before + used, h=hits_before + len(segments))
    return segments, state, hits_before


def threshold_of(fetch: FetchRows, k: int) -> float | None:
    """The default time-order threshold: the lowest score in the first score page's clip pool."""
    rows = fetch(max(WIDEN * k, POOL_MIN))
    return float(min(r["score"] for r in rows)) if rows else None


def time_page(fetch: FetchRows, k: int, threshold: float, after: Cursor | None) -> tuple[list[Segment], Cursor | None, int]:
    """One page in time order of the runs of clips scoring >= threshold."""
    n = max(WIDEN * k, POOL_MIN)
    while True:
        rows = fetch(n)
        if len(rows) < n or float(rows[-1]["score"]) < threshold:
            break
        n *= WIDEN
    above = [r for r in rows if float(r["score"]) >= threshold]
    runs, _ = take_band(above, len(above) + 1)
    runs.sort(key=lambda s: (s.start, s.stream_id))
    if after is not None:
        runs = [s for s in runs if (s.start, s.stream_id) > (after.t, after.id)]
    page, more = runs[:k], len(runs) > k
    hits_before = after.h if after else 0
    if not more or not page:
        return page, None, hits_before
    last = page[-1]
    return page, Cursor(o="", q="", th=threshold, id=last.stream_id, t=last.start, h=hits_before + len(page)), hits_before
