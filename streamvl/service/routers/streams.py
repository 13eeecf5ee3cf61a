"""/api/v1/streams: list the indexed streams, add one to the indexing job, remove one."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Path as PathParam
from fastapi.concurrency import run_in_threadpool

from streamvl import api
from streamvl.errors import ConfigError
from streamvl.service.deps import ServiceState, get_state
from streamvl.service.errors import field_error
from streamvl.service.schemas import StreamCreate, StreamCreated, StreamOut
from streamvl.sources.decode import local_path, url_scheme
from streamvl.storage.schema import stream_row
from streamvl.types import StreamState

router = APIRouter(prefix="/streams", tags=["streams"])

# Network sources the indexing job may open; anything else FFmpeg understands (file:, concat:,
# subfile:, pipe:, data: ...) could read the server's own files, so it is refused.
URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp", "srt"})


def checked_uri(uri: str, media_roots: tuple[str, ...]) -> str:
    """The URI to index if allowed: a network URL, or an existing file inside a --media-root folder."""
    scheme = url_scheme(uri)
    if scheme is not None and scheme != "file":
        if scheme not in URL_SCHEMES:
            raise field_error("uri", f"scheme {scheme!r} is not allowed (use one of {sorted(URL_SCHEMES)})", "body")
        return uri
    if not media_roots:
        raise field_error("uri", "local files can be added only when the server runs with --media-root DIR", "body")
    path = local_path(uri).resolve()
    roots = [Path(r).resolve() for r in media_roots]
    if not any(path.is_relative_to(r) for r in roots):
        raise field_error("uri", "the file is not inside a --media-root folder", "body")
    if not path.is_file():
        raise field_error("uri", "no such file", "body")
    return str(path)


def _out(state: ServiceState, stream: StreamState, now: float) -> StreamOut:
    row = stream_row(stream)
    wall = stream.last_wallclock
    lag = now - wall if wall is not None and stream.status.active else None
    video = state.media.file_of(row)
    return StreamOut(**row, lag_now_s=lag, video=bool(video and video.mime))


@router.get("", response_model=list[StreamOut], summary="Streams with status, progress, lag and errors")
async def list_streams(state: ServiceState = Depends(get_state)) -> list[StreamOut]:
    rows = await run_in_threadpool(api.streams, state.settings.db)
    now = time.time()
    return [_out(state, r, now) for r in rows]


@router.post("", response_model=StreamCreated, status_code=201, summary="Add a live stream or a file to the indexing job")
async def add_stream(body: StreamCreate, state: ServiceState = Depends(get_state)) -> StreamCreated:
    uri = checked_uri(body.uri, state.settings.media_roots)
    try:
        sid = await run_in_threadpool(api.add_stream, state.settings.db, uri, body.id, body.fps)
    except ConfigError as exc:
        raise field_error("uri", exc.message, "body") from exc
    return StreamCreated(stream_id=sid, indexing=state.indexer is not None)


@router.delete("/{stream_id}", status_code=202, summary="Stop indexing a stream (its rows stay searchable)")
async def remove_stream(stream_id: str = PathParam(max_length=256), state: ServiceState = Depends(get_state)) -> dict:
    try:
        await run_in_threadpool(api.remove_stream, state.settings.db, stream_id)
    except ConfigError as exc:
        raise HTTPException(404, f"no stream {stream_id!r}") from exc
    return {"stream_id": stream_id, "status": "removal requested"}
