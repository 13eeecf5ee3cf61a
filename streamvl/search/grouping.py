"""Clips -> hits: the one grouping both `streamvl.api.search` and the service's pages use.

Matching clips are ranked by (score desc, stream_id, start), a total order, and grouped in that
order (`Grouping`): a clip that touches no hit yet (same stream, time ranges overlapping or
touching) opens a new one; a clip that touches hits joins the best of them, and widens its range
only when it touches no other, scores within a margin of the hit's best clip (adjacent windows
overlap, so otherwise one hit would grow over everything nearby), and the hit's page has not
ended. Every matching clip belongs to exactly one hit, no two hits overlap, scores never rise
down the list. A hit's score is its best clip's; `peak` is that clip's window. The margin is a
share of the score spread of the first page's clip pool (`merge_margin`), so it scales with the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

FetchRows = Callable[[int], list[dict[str, Any]]]  # n -> the n best clips (rows with score), best first
POOL_MIN = 50  # clips a first page looks at
WIDEN = 4  # the fetch grows this much while a page needs more clips
MARGIN = 0.25  # share of the first pool's score spread within which a clip widens its hit


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


def top_hits(fetch: FetchRows, k: int, margin: float, before: int = 0,
             seen: int = 0) -> tuple[list[Segment], int, bool]:
    """Hits [before, before + k) of the score-ordered list, grouped in pages of k. seen: clips an
    earlier page grouped (where the fetch starts). Returns the hits, how many clips were grouped,
    and whether every matching clip was (no later page)."""
    n = seen + first_pool(k)
    while True:
        rows = fetch(n)
        grouping, used = group_until(rows, before + k, margin, page=k)
        if used < len(rows) or len(rows) < n:  # stopped at hit before + k + 1, or every clip is grouped
            break
        n *= WIDEN
    return grouping.hits[before:before + k], used, used == len(rows)
