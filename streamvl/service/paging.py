"""Paged search: hits in one deterministic order, an opaque cursor, and no cap on how deep it pages.

Hits. Matching clips are ranked by (score desc, stream_id, start), a total order, and grouped in
that order (`Grouping`): a clip that touches no hit yet (same stream, time ranges overlapping or
touching) opens a new one; a clip that touches hits joins the best of them, and widens its range
only when it touches no other, scores within a margin of the hit's best clip (adjacent windows
overlap, so otherwise one hit would grow over everything nearby), and the hit's page has not
ended (its ranges stay what the page showed). The hits, in the order they open, are the result list:
every matching clip belongs to exactly one hit, no two hits overlap, scores never rise down the
list. A hit's score is its best clip's; `peak` is that clip's window.

Score order: pages of k hits, page p is hits [pk, pk + k) of that list. The grouping is replayed
from the top on every page (it needs the earlier hits to keep later ones apart), over the best
clips fetched in sizes that grow 4x until hit pk + k + 1 would open: the cost of a page grows with
its depth, the depth has no cap. Since a page ends where the next one's first hit opens, hit
ranges depend on k, and a cursor belongs to one k. Time order: the hits the clips scoring at least a
threshold form (min_score, else the lowest score of the first page's clip pool), earliest first.

The cursor (base64url JSON) holds the hits (and clips) before the next page, the margin and
threshold fixed by the first page, and a digest of the query, so it is refused for another
query. With an ANN index the ranking is the index's (see Store.search_clips).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

FetchRows = Callable[[int], list[dict[str, Any]]]  # n -> the n best clips (rows with score), best first
POOL_MIN = 50  # clips a first page looks at (as streamvl.search.query.search_vectors does)
WIDEN = 4  # the fetch grows this much while a page needs more clips
MARGIN = 0.25  # share of the first pool's score spread within which a clip widens its hit


class FieldProblem(ValueError):
    """A request value the index cannot serve (answered 422 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class CursorError(FieldProblem):
    """A cursor that is not one of ours, or belongs to another query."""

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


class Cursor(BaseModel):
    """Where the next page starts. h: hits before it; n: clips grouped before it (a fetch-size
    hint); d: the widening margin; th: the time-order threshold; t, id: the last hit's (start,
    stream) in time order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = 1
    o: str
    q: str
    h: int
    n: int = 0
    d: float = 0.0
    th: float | None = None
    t: float | None = None
    id: str | None = None

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
            raise CursorError("belongs to another query (text, filters, sort or k differ)")
        numbers = [x for x in (cursor.d, cursor.th, cursor.t) if x is not None]
        if not all(math.isfinite(x) for x in numbers) or min(cursor.h, cursor.n, cursor.d) < 0:
            raise CursorError("holds values out of range")
        return cursor


def query_digest(parts: dict[str, Any]) -> str:
    """A short digest of everything that defines the result list and its pages."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Segment:
    """A hit: one stream's time range, its best clip (the one that opened it) and its clips."""

    stream_id: str
    start: float
    end: float
    score: float
    best: dict[str, Any]
    members: list[tuple[str, float]] = field(default_factory=list)  # (stream_id, start) of its clips
    order: int = 0  # position in the result list

    @property
    def peak(self) -> tuple[float, float]:
        return float(self.best["start"]), float(self.best["end"])

    def touches(self, row: dict[str, Any]) -> bool:
        return row["start"] <= self.end and row["end"] >= self.start


class Grouping:
    """Clips, best first, grouped into hits (module doc); hits listed in the order they opened."""

    def __init__(self, margin: float = math.inf, page: int | None = None) -> None:
        self.margin = margin
        self.page = page  # hits of a page stop widening when the next page's first hit opens
        self.settled = 0  # hits before this one no longer widen
        self.hits: list[Segment] = []
        self._by_stream: dict[str, list[Segment]] = {}

    def opens(self, row: dict[str, Any]) -> bool:
        """Whether this clip would open a new hit."""
        return not any(s.touches(row) for s in self._by_stream.get(row["stream_id"], ()))

    def add(self, row: dict[str, Any]) -> None:
        sid, start, end = str(row["stream_id"]), float(row["start"]), float(row["end"])
        mine = self._by_stream.setdefault(sid, [])
        touching = [s for s in mine if s.touches(row)]
        if not touching:
            if self.page and self.hits and len(self.hits) % self.page == 0:
                self.settled = len(self.hits)  # a page ends here: its ranges are what it showed
            hit = Segment(sid, start, end, float(row["score"]), row, [(sid, start)], order=len(self.hits))
            mine.append(hit)
            self.hits.append(hit)
            return
        head = min(touching, key=lambda s: s.order)  # opened first: the best of them
        head.members.append((sid, start))
        if len(touching) == 1 and head.order >= self.settled and float(row["score"]) >= head.score - self.margin:
            head.start, head.end = min(head.start, start), max(head.end, end)
        # else: taken by the hit without widening it: too weak, or it would join two hits (hits
        # never merge, so a page never loses one that an earlier page counted)


def group_until(rows: Sequence[dict[str, Any]], hits: int, margin: float,
                page: int | None = None) -> tuple[Grouping, int]:
    """Group rows in order (pages of `page` hits, see Grouping), stopping before the clip that
    would open hit number hits + 1. Returns the grouping and how many rows it took."""
    grouping = Grouping(margin, page)
    for i, row in enumerate(rows):
        if len(grouping.hits) >= hits and grouping.opens(row):
            return grouping, i
        grouping.add(row)
    return grouping, len(rows)


def first_pool(k: int) -> int:
    return max(WIDEN * k, POOL_MIN)


def merge_margin(fetch: FetchRows, k: int) -> float:
    """MARGIN of the score spread (best minus lowest) of the first page's clip pool: scales with the model."""
    rows = fetch(first_pool(k))
    return MARGIN * (float(rows[0]["score"]) - float(rows[-1]["score"])) if rows else 0.0


def score_page(fetch: FetchRows, k: int, after: Cursor | None, margin: float) -> tuple[list[Segment], Cursor | None, int]:
    """Hits [h, h + k) of the score-ordered list in pages of k; the cursor after them (None on the
    last page; the caller fills o and q); h, the number of hits before the page."""
    before = after.h if after else 0
    n = (after.n if after else 0) + first_pool(k)
    while True:
        rows = fetch(n)
        grouping, used = group_until(rows, before + k, margin, page=k)
        if used < len(rows) or len(rows) < n:  # stopped at hit h + k + 1, or every clip is grouped
            break
        n *= WIDEN
    page = grouping.hits[before:before + k]
    if used == len(rows) or not page:
        return page, None, before
    return page, Cursor(o="", q="", h=before + len(page), n=used, d=margin), before


def threshold_of(fetch: FetchRows, k: int) -> float | None:
    """The default time-order threshold: the lowest score in the first page's clip pool."""
    rows = fetch(first_pool(k))
    return float(rows[-1]["score"]) if rows else None


def time_page(fetch: FetchRows, k: int, threshold: float, after: Cursor | None,
              margin: float) -> tuple[list[Segment], Cursor | None, int]:
    """The next k hits, earliest first, of those the clips scoring >= threshold form."""
    n = first_pool(k)
    while True:
        rows = fetch(n)
        if len(rows) < n or float(rows[-1]["score"]) < threshold:
            break
        n *= WIDEN
    grouping, _ = group_until([r for r in rows if float(r["score"]) >= threshold], math.inf, margin)
    hits = sorted(grouping.hits, key=lambda s: (s.start, s.stream_id))
    if after is not None:
        hits = [s for s in hits if (s.start, s.stream_id) > (after.t, after.id)]
    page = hits[:k]
    before = after.h if after else 0
    if len(hits) <= k:
        return page, None, before
    last = page[-1]
    return page, Cursor(o="", q="", h=before + len(page), d=margin, th=threshold, t=last.start, id=last.stream_id), before
