"""Pictures and video of a stream, found by its id in the streams table: a frame, a strip of
frames across a range, the file itself (HTTP Range), a cut of a segment."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from fastapi import APIRouter, Depends, HTTPException, Path as PathParam, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from streamvl.errors import SourceError
from streamvl.pipeline.thumbnails import thumbnail_from_file
from streamvl.service.deps import ServiceState, get_state
from streamvl.service.errors import field_error
from streamvl.service.settings import MAX_CLIP_S

router = APIRouter(prefix="/streams/{stream_id}", tags=["media"])
StreamIdParam = PathParam(max_length=256, description="a stream id from GET /api/v1/streams")
MAX_T = 1e9
JPEG_CACHE = "private, max-age=3600"


class _Decoded:
    """Thumbnails decoded from files (rows without one): a small LRU, so a grid does not decode twice."""

    def __init__(self, size: int = 512) -> None:
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key: tuple, make) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


_decoded = _Decoded()


def _row(state: ServiceState, stream_id: str) -> dict:
    row = state.engine.store.stream(stream_id)
    if row is None:
        raise HTTPException(404, f"no stream {stream_id!r}")
    return row


def _frame(state: ServiceState, stream_id: str, t: float) -> bytes:
    row = _row(state, stream_id)
    stored = state.engine.frames.thumbnail_near(stream_id, t)
    if stored is not None:
        return stored
    video = state.media.file_of(row)
    if video is None:
        raise HTTPException(404, f"no thumbnail stored near t={t:.2f}s and no file to decode for {stream_id!r}")
    return _decoded.get((str(video.path), round(t, 2)), lambda: thumbnail_from_file(video.path, t))


def _strip(state: ServiceState, stream_id: str, start: float, end: float, n: int) -> bytes:
    from PIL import Image

    row = _row(state, stream_id)
    pictures = [jpeg for _, jpeg in state.engine.frames.spread(stream_id, start, end, n)]
    if len(pictures) < n:
        video = state.media.file_of(row)
        if video is not None:
            times = [start + (end - start) * (i + 0.5) / n for i in range(n)]
            pictures = [_decoded.get((str(video.path), round(t, 2)), lambda t=t: thumbnail_from_file(video.path, t))
                        for t in times]
    if not pictures:
        raise HTTPException(404, f"no frames of {stream_id!r} in {start:.2f}-{end:.2f}s")
    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pictures]
    h = min(im.height for im in images)
    images = [im if im.height == h else im.resize((max(1, round(im.width * h / im.height)), h)) for im in images]
    strip = Image.new("RGB", (sum(im.width for im in images), h))
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width
    buf = io.BytesIO()
    strip.save(buf, "JPEG", quality=75)
    return buf.getvalue()


def _check_range(start: float, end: float) -> None:
    if end <= start:
        raise field_error("end", "must be after start")
    if end - start > MAX_CLIP_S:
        raise field_error("end", f"a cut is at most {MAX_CLIP_S:.0f} s long")


def _recorded(state: ServiceState, stream_id: str, start: float, end: float):
    """[start, end] (index times) of a live stream, cut from its recording: the index's frames give the
    UTC time of start (frames.wallclock), the clip lasts end - start (the live timeline runs with the wall clock)."""
    from streamvl.service.recordings import NotRecorded

    t0 = state.engine.frames.wallclock_at(stream_id, start)
    if t0 is None:
        raise HTTPException(404, f"no indexed frames of {stream_id!r} near t={start:.2f}s to place it in time")
    t1 = t0 + (end - start)
    try:
        segments = state.recordings.covering(stream_id, t0, t1)
        what = "|".join([stream_id, f"{t0:.3f}", f"{t1:.3f}", *(s.path.name for s in segments)])
        return state.media.cached(what, lambda out: state.recordings.cut(stream_id, t0, t1, out))
    except NotRecorded as exc:
        raise HTTPException(404, f"no recording of {stream_id!r} for {start:.2f}-{end:.2f}s: {exc}") from exc


@router.get("/thumbnail.jpg", response_class=Response, summary="The frame at t seconds (JPEG)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def thumbnail(stream_id: str = StreamIdParam, t: float = Query(0.0, ge=0, le=MAX_T),
                    state: ServiceState = Depends(get_state)) -> Response:
    try:
        jpeg = await run_in_threadpool(_frame, state, stream_id, t)
    except SourceError as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": JPEG_CACHE})


@router.get("/strip.jpg", response_class=Response, summary="n frames evenly across [start, end], side by side (JPEG)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def strip(stream_id: str = StreamIdParam, start: float = Query(ge=0, le=MAX_T), end: float = Query(ge=0, le=MAX_T),
                n: int = Query(4, ge=1, le=8), state: ServiceState = Depends(get_state)) -> Response:
    if end < start:
        raise field_error("end", "must not be before start")
    try:
        jpeg = await run_in_threadpool(_strip, state, stream_id, start, end, n)
    except SourceError as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": JPEG_CACHE})


@router.get("/video", response_class=FileResponse, summary="The stream's file, for browsers (HTTP Range: 206)",
            responses={200: {"content": {"video/mp4": {}, "video/webm": {}}}, 206: {"description": "a byte range"}})
async def video(stream_id: str = StreamIdParam, state: ServiceState = Depends(get_state)) -> FileResponse:
    row = await run_in_threadpool(_row, state, stream_id)
    file = await run_in_threadpool(state.media.file_of, row)
    if file is None:
        raise HTTPException(404, f"stream {stream_id!r} has no local video file")
    if not file.mime:
        raise HTTPException(415, f"browsers cannot play {stream_id!r} as it is: use clip.mp4")
    return FileResponse(file.path, media_type=file.mime, headers={"Cache-Control": "private, max-age=60"})


@router.get("/clip.mp4", response_class=FileResponse, summary="[start, end] cut as mp4 (remuxed, or re-encoded to H.264)",
            responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "a byte range"}})
async def clip(stream_id: str = StreamIdParam, start: float = Query(ge=0, le=MAX_T), end: float = Query(ge=0, le=MAX_T),
               state: ServiceState = Depends(get_state)) -> FileResponse:
    _check_range(start, end)
    row = await run_in_threadpool(_row, state, stream_id)
    file = await run_in_threadpool(state.media.file_of, row)
    try:
        if file is not None:
            path, how = await run_in_threadpool(state.media.clip, file, start, end)
        elif row.get("live") and state.recordings is not None:
            path, how = await run_in_threadpool(_recorded, state, stream_id, start, end)
        else:  # a URL without a recording, or a file that moved
            why = "a live stream, and this server does not record (--record DIR)" if row.get("live") else \
                "its file is gone or not a video"
            raise HTTPException(404, f"no video of {stream_id!r} for {start:.2f}-{end:.2f}s: {why}")
    except SourceError as exc:
        raise HTTPException(500, str(exc)) from exc
    return FileResponse(path, media_type="video/mp4", headers={"X-Streamvl-Cut": how, "Cache-Control": "private, max-age=600"})
