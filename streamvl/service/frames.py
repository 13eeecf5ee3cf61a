"""Reads the service needs and Store does not offer: thumbnails near a time, the mapping between
a live stream's times (pts) and wall-clock UTC, and a page's streams (uri and kind) in one read."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamvl.storage.store import FRAMES, STREAMS, Store

from streamvl.storage.schema import THUMBNAIL, sql_float, sql_str

NEAR_S = 5.0  # a stored thumbnail within this many seconds of the asked time stands for it


class FrameReader:
    """Frames-table queries by stream and time (never by anything a request names as a path)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._handle: Any = None
        self._streams: Any = None

    def _table(self) -> Any | None:
        if self._handle is None:
            if FRAMES not in self.store.table_names():
                return None
            self._handle = self.store.db.open_table(FRAMES)
        return self._handle

    def _rows(self, where: str, columns: list[str]) -> dict[str, list]:
        handle = self._table()
        if handle is None or any(handle.schema.get_field_index(c) < 0 for c in columns):
            return {c: [] for c in columns}
        got = handle.search().where(where).select(columns).limit(None).to_arrow()
        return {c: got[c].to_pylist() for c in columns}

    def thumbnails(self, stream_id: str, start: float, end: float) -> list[tuple[float, bytes]]:
        """(pts, JPEG) of the stored thumbnails with start <= pts <= end, in time order."""
        where = f"stream_id = {sql_str(stream_id)} AND pts >= {sql_float(start)} AND pts <= {sql_float(end)}"
        rows = self._rows(where, ["pts", THUMBNAIL.name])
        pairs = [(float(p), j) for p, j in zip(rows["pts"], rows[THUMBNAIL.name]) if j]
        return sorted(pairs, key=lambda pj: pj[0])

    def thumbnail_near(self, stream_id: str, t: float) -> bytes | None:
        """The stored thumbnail of the frame nearest to t (within NEAR_S), or None."""
        near = self.thumbnails(stream_id, max(0.0, t - NEAR_S), t + NEAR_S)
        if not near:
            return None
        return min(near, key=lambda pj: (abs(pj[0] - t), pj[0]))[1]

    def spread(self, stream_id: str, start: float, end: float, n: int) -> list[tuple[float, bytes]]:
        """n stored thumbnails evenly spread over [start, end] (fewer if fewer exist)."""
        have = self.thumbnails(stream_id, start, end)
        if len(have) <= n:
            return have
        picks = np.linspace(0, len(have) - 1, n).round().astype(int)
        return [have[i] for i in picks]

    def clock(self, stream_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A live stream's committed (pts, wallclock) pairs, pts sorted; empty for files."""
        rows = self._rows(f"stream_id = {sql_str(stream_id)} AND wallclock IS NOT NULL", ["pts", "wallclock"])
        pts = np.asarray(rows["pts"], np.float64)
        wall = np.asarray(rows["wallclock"], np.float64)
        keep = np.isfinite(wall)
        order = np.argsort(pts[keep], kind="stable")
        return pts[keep][order], wall[keep][order]

    def wallclock_at(self, stream_id: str, t: float) -> float | None:
        """UTC epoch seconds at stream time t, None for files (no committed frame within NEAR_S).

        Frames carry their arrival time, which runs late by whatever delayed them (network, a busy
        decoder), never early; the live timeline advances with the stream's own clock. So the
        least-delayed frame near t places it best: t + min(wallclock - pts) over those frames (the
        estimate the recorder uses for its segments, so both sides agree)."""
        where = (f"stream_id = {sql_str(stream_id)} AND wallclock IS NOT NULL AND pts >= {sql_float(max(0.0, t - NEAR_S))} "
                 f"AND pts <= {sql_float(t + NEAR_S)}")
        rows = self._rows(where, ["pts", "wallclock"])
        offsets = [float(w) - float(p) for p, w in zip(rows["pts"], rows["wallclock"]) if w is not None and w == w]
        return t + min(offsets) if offsets else None

    def stream_info(self, stream_ids: set[str]) -> dict[str, tuple[str, bool]]:
        """{stream_id: (uri, live)} of these streams, in one read of their streams rows."""
        if not stream_ids:
            return {}
        if self._streams is None:
            if STREAMS not in self.store.table_names():
                return {}
            self._streams = self.store.db.open_table(STREAMS)
        handle = self._streams
        columns = ["stream_id", "uri", *(["live"] if handle.schema.get_field_index("live") >= 0 else [])]
        where = f"stream_id IN ({', '.join(sql_str(s) for s in sorted(stream_ids))})"
        got = handle.search().where(where).select(columns).limit(None).to_arrow().to_pylist()
        return {r["stream_id"]: (r["uri"], bool(r.get("live"))) for r in got}

    def pts_range(self, stream_id: str, start_utc: float | None, end_utc: float | None) -> tuple[float, float] | None:
        """The stream-time range of a wall-clock range (None: the stream has no frames in it)."""
        pts, wall = self.clock(stream_id)
        keep = np.ones(len(pts), bool)
        if start_utc is not None:
            keep &= wall >= start_utc
        if end_utc is not None:
            keep &= wall <= end_utc
        if not keep.any():
            return None
        return float(pts[keep].min()), float(pts[keep].max())
