"""The API's contract: request and response models (pydantic). FastAPI validates against them,
answers 422 naming the field, and publishes them in the OpenAPI schema at /openapi.json."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from streamvl.service.settings import MAX_FILTER_VALUES, MAX_K, MAX_QUERY_CHARS

StreamId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# A time bound: seconds of stream time, or an ISO 8601 instant (UTC if no offset) for live streams.
TimeBound = float | dt.datetime


def _finite_time(value: TimeBound | None, field: str) -> TimeBound | None:
    if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{field} must be a finite number of seconds >= 0")
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


class SearchRequest(BaseModel):
    """One search: text, filters (applied inside the vector search), order and page."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="the text to search for")
    k: int = Field(24, ge=1, le=MAX_K, description="hits per page")
    stream: list[StreamId] | None = Field(None, max_length=MAX_FILTER_VALUES, description="only these streams (repeatable)")
    start: TimeBound | None = Field(None, description="only hits ending after this: stream seconds, or ISO UTC (live streams)")
    end: TimeBound | None = Field(None, description="only hits starting before this: stream seconds, or ISO UTC (live streams)")
    tag: list[Tag] | None = Field(None, max_length=MAX_FILTER_VALUES, description="only clips carrying every one of these tags")
    sort: Literal["score", "time"] = Field("score", description="score: best first; time: earliest first")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="sort=time: hits scoring at least this "
                                    "(default: as good as the clips the first score page looks at)")
    adapter: str = Field("meanpool", min_length=1, max_length=64, description="the adapter whose clips are searched")
    cursor: str | None = Field(None, max_length=4096, description="next_cursor of the previous page")

    @field_validator("start", "end")
    @classmethod
    def _times(cls, value: TimeBound | None, info) -> TimeBound | None:
        return _finite_time(value, info.field_name)

    @model_validator(mode="after")
    def _range(self) -> "SearchRequest":
        if self.start is not None and self.end is not None:
            if isinstance(self.start, float) != isinstance(self.end, float):
                raise ValueError("start and end must both be seconds or both be ISO instants")
            if self.start > self.end:
                raise ValueError("start must not be after end")
        if self.q.strip() == "":
            raise ValueError("q must not be blank")
        return self


class HitOut(BaseModel):
    """A matching moment: a time range of a stream, its score, and where to see it."""

    stream_id: str
    uri: str
    start: float = Field(description="stream seconds")
    end: float
    score: float = Field(description="cosine similarity of the best clip (-1..1)")
    rank: int = Field(description="1-based position in the whole result list")
    peak: tuple[float, float] = Field(description="the best clip's window inside [start, end]")
    thumbnail_url: str = Field(description="the frame at the peak (JPEG)")
    strip_url: str = Field(description="a few frames across the hit side by side (JPEG)")
    video_url: str | None = Field(description="plays the hit: the file with a #t=start,end fragment when a browser "
                                  "can play it, else a cut (clip.mp4); null when no video is available")
    wallclock: float | None = Field(None, description="live streams: UTC epoch seconds at start")
    tags: list[str] | None = None


class SearchResponse(BaseModel):
    hits: list[HitOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class StreamOut(BaseModel):
    """A row of the streams table (or a stream requested but not picked up yet)."""

    model_config = ConfigDict(extra="ignore")

    stream_id: str
    uri: str
    status: str
    frames_indexed: int = 0
    last_committed_pts: float | None = None
    error: str | None = None
    live: bool | None = None
    lag_s: float | None = Field(None, description="live: commit delay of the last committed frame")
    lag_now_s: float | None = Field(None, description="live: how far committed data is behind now")
    reconnects: int | None = None
    gaps: int | None = None
    updated_at: dt.datetime | None = None
    video: bool = Field(False, description="GET .../video serves a file a browser can play")


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=2048, description="rtsp/rtmp/http(s)/tcp/udp/srt URL, or a file "
                     "under a --media-root folder")
    id: StreamId | None = Field(None, description="stream id (default: derived from the URI)")
    fps: float | None = Field(None, gt=0, le=60, description="frames sampled per second for this stream")


class StreamCreated(BaseModel):
    stream_id: str
    status: Literal["requested"] = "requested"
    indexing: bool = Field(description="whether this server runs the indexing job (--index) that will pick it up")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    db: str
    model: str | None
    streams: int
    indexing: str | None = Field(description="the --index job: running, exited N, or null without --index")
    auth: bool = Field(description="whether an API key is required")
    uptime_s: float
    recording: dict[str, Any] | None = Field(None, description="with --record: per live stream, segments written, "
                                             "errors, the last error (one line), connected; and bytes kept")


class ErrorOut(BaseModel):
    error: str
