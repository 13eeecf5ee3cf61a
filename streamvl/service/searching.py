"""Search requests -> pages of hits: the query vector (streamvl.search.query's cached encoder), the
filters as the vector search's prefilter (Store.search_clips), the pages (paging) and the hits'
links (thumbnails, video)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any
from urllib.parse import quote

from streamvl.search.query import clip_fetcher, memo, open_store, query_vector
from streamvl.service.frames import FrameReader
from streamvl.service.media import MediaLibrary
from streamvl.service.paging import (Cursor, FetchRows, FieldProblem, Segment, merge_margin, query_digest,
                                     score_page, threshold_of, time_page)
from streamvl.service.schemas import HitOut, SearchRequest, SearchResponse
from streamvl.storage.store import CLIPS, Store
from streamvl.storage.schema import MODEL_KEY, TAGS

API = "/api/v1"


def stream_path(stream_id: str) -> str:
    return f"{API}/streams/{quote(stream_id, safe='')}"


class SearchEngine:
    """Answers SearchRequests against one database; safe to call from many threads."""

    def __init__(self, db: str, media: MediaLibrary, recordings=None) -> None:
        self.db = db
        self.recordings = recordings  # streamvl.service.recordings.Recordings with --record, else None
        self.store: Store = open_store(db)
        self.frames = FrameReader(self.store)
        self.media = media
        self._embed_lock = threading.Lock()  # the query encoder's model and text cache are shared
        self._model: str | None = None

    def model(self) -> str | None:
        """The indexing model (None before anything is indexed); fixed once the tables exist."""
        if self._model is None:
            self._model = self.store.meta().get(MODEL_KEY)
        return self._model

    def _clip_columns(self) -> set[str]:
        schema = self.store.schema(CLIPS)
        return set() if schema is None else set(schema.names)

    def embed(self, text: str, adapter: str = "meanpool"):
        with self._embed_lock:
            return query_vector(text, self.db, adapter=adapter)

    def search(self, req: SearchRequest) -> SearchResponse:
        if self.model() is None:  # nothing indexed yet
            return SearchResponse(hits=[], next_cursor=None)
        if req.tag and TAGS not in self._clip_columns():
            raise FieldProblem("tag", "this index has no tags (index with a tagging adapter plugin, e.g. streamvl-alpro)")
        digest = query_digest(req.model_dump(exclude={"cursor"}))
        after = Cursor.decode(req.cursor, req.sort, digest) if req.cursor else None
        fetch = memo(self._fetcher(req, self.embed(req.q, req.adapter)))
        delta = after.d if after else merge_margin(fetch, req.k)
        if req.sort == "score":
            segments, state, ranked = score_page(fetch, req.k, after, delta)
        else:
            threshold = after.th if after else (req.min_score if req.min_score is not None else threshold_of(fetch, req.k))
            if threshold is None:
                return SearchResponse(hits=[], next_cursor=None)
            segments, state, ranked = time_page(fetch, req.k, threshold, after, delta)
        token = None if state is None else state.model_copy(update={"o": req.sort, "q": digest}).encode()
        return SearchResponse(hits=self._hits(segments, ranked), next_cursor=token)

    # -- filters -> the prefiltered vector search

    def _fetcher(self, req: SearchRequest, vector) -> FetchRows:
        """n -> the n best clips under the request's filters (streamvl.search.query.clip_fetcher, as
        api.search). ISO instants become each live stream's own time range; then every stream is
        searched apart and the rows merged."""
        base = dict(adapter=req.adapter, tags=req.tag or None)
        if not isinstance(req.start, dt.datetime) and not isinstance(req.end, dt.datetime):
            return clip_fetcher(self.store, vector, stream_ids=req.stream, start=req.start, end=req.end, **base)
        ranges = self._live_ranges(req.stream, req.start, req.end)
        fetchers = [clip_fetcher(self.store, vector, stream_ids=[sid], start=t0, end=t1, **base)
                    for sid, (t0, t1) in ranges.items()]

        def fetch_live(n: int) -> list[dict[str, Any]]:
            rows = [r for fetch in fetchers for r in fetch(n)]
            rows.sort(key=lambda r: (-r["score"], r["stream_id"], r["start"]))
            return rows[:n]
        return fetch_live

    def _live_ranges(self, stream_ids: list[str] | None, start: dt.datetime | None,
                     end: dt.datetime | None) -> dict[str, tuple[float, float]]:
        ids = stream_ids if stream_ids is not None else [s.stream_id for s in self.store.stream_states() if s.live]
        ranges = {}
        for sid in ids:
            span = self.frames.pts_range(sid, start.timestamp() if start else None, end.timestamp() if end else None)
            if span is not None:
                ranges[sid] = span
        return ranges

    # -- segments -> hits with links

    def _hits(self, segments: list[Segment], ranked: int) -> list[HitOut]:
        info = self.frames.stream_info({s.stream_id for s in segments})  # {id: (uri, live)}
        hits = []
        for i, s in enumerate(segments):
            uri, live = info.get(s.stream_id, ("", False))
            base = stream_path(s.stream_id)
            tags = s.best.get("tags")
            wallclock = self.frames.wallclock_at(s.stream_id, s.start) if live else None
            hits.append(HitOut(stream_id=s.stream_id, uri=uri, start=s.start, end=s.end, score=s.score,
                               rank=ranked + i + 1, peak=s.peak,
                               thumbnail_url=f"{base}/thumbnail.jpg?t={(s.peak[0] + s.peak[1]) / 2:.2f}",
                               strip_url=f"{base}/strip.jpg?start={s.start:.2f}&end={s.end:.2f}",
                               video_url=self._recorded_url(base, s, wallclock) if live else self._video_url(base, uri, s),
                               wallclock=wallclock,
                               tags=list(tags) if tags else None))
        return hits

    def _video_url(self, base: str, uri: str, s: Segment) -> str | None:
        """The file with a media fragment when a browser plays it as it is, else a cut; None without a file."""
        video = self.media.file_of({"uri": uri} if uri else None)
        if video is None:
            return None
        if video.mime:
            return f"{base}/video#t={s.start:.2f},{s.end:.2f}"
        return f"{base}/clip.mp4?start={s.start:.2f}&end={s.end:.2f}"

    def _recorded_url(self, base: str, s: Segment, wallclock: float | None) -> str | None:
        """A live hit's cut of the recording (--record), or None when the recording does not cover it."""
        from streamvl.service.recordings import NotRecorded

        if self.recordings is None or wallclock is None:
            return None
        try:
            self.recordings.covering(s.stream_id, wallclock, wallclock + (s.end - s.start))
        except NotRecorded:
            return None
        return f"{base}/clip.mp4?start={s.start:.2f}&end={s.end:.2f}"
