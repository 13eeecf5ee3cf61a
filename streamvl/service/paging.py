"""Paged search: hits in one deterministic order, an opaque cursor, and no cap on how deep it pages.

Hits: the clips matching the query and filters, grouped as streamvl.search.grouping says (the
same grouping `streamvl.api.search` returns), listed in the order they open.

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
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from streamvl.search.grouping import (POOL_MIN, WIDEN, FetchRows, Grouping, Segment, first_pool,  # noqa: F401
                                      group_until, merge_margin, top_hits)


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


def score_page(fetch: FetchRows, k: int, after: Cursor | None, margin: float) -> tuple[list[Segment], Cursor | None, int]:
    """Hits [h, h + k) of the score-ordered list in pages of k; the cursor after them (None on the
    last page; the caller fills o and q); h, the number of hits before the page."""
    before = after.h if after else 0
    page, used, last = top_hits(fetch, k, margin, before, after.n if after else 0)
    if last or not page:
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
