"""The watches API's contract (pydantic): a watch to create, a watch, an event."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamvl.service.schemas import StreamId
from streamvl.service.settings import MAX_FILTER_VALUES, MAX_QUERY_CHARS


class WatchCreate(BaseModel):
    """A standing query: TEXT scored against every clip committed from now on."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what to watch for")
    name: str | None = Field(None, max_length=200)
    stream: list[StreamId] = Field([], max_length=MAX_FILTER_VALUES, description="only these streams (default: all)")
    threshold: float = Field(0.25, ge=-1.0, le=1.0, description="cosine score a window must reach")
    webhook: str | None = Field(None, max_length=2000, description="POST each event here (http/https)")
    quiet_s: float | None = Field(None, ge=0, le=3600, description="seconds without a match that close an event")

    @field_validator("webhook")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook must be an http(s) URL")
        return value


class WatchOut(BaseModel):
    watch_id: str
    name: str
    text: str
    streams: list[str]
    threshold: float
    webhook: str | None
    quiet_s: float | None
    created_at: dt.datetime
    active: bool
    adapters: list[str]


class EventOut(BaseModel):
    """An event a watch fired: its span on a stream, the best window, and a picture of it."""

    id: str = Field(description="its place in the feed (the SSE id; give it as Last-Event-ID to resume after it)")
    event_id: str = Field(description="stable id of (watch, stream, start): the webhook's Idempotency-Key")
    watch_id: str
    stream_id: str
    start: float
    end: float
    peak_score: float
    peak_time: float
    status: str = Field(description="open (still matching or within the quiet gap) or closed")
    opened_at: dt.datetime
    updated_at: dt.datetime
    thumbnail_url: str
