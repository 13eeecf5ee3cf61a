"""The watches API's contract (pydantic): a watch to create, a watch, an event."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamvl.service.schemas import StreamId
from streamvl.service.settings import MAX_FILTER_VALUES, MAX_QUERY_CHARS

MAX_STEPS = 8  # steps of a sequence watch


class WatchCreate(BaseModel):
    """A standing query: TEXT scored against every clip committed from now on."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what to watch for")
    name: str | None = Field(None, max_length=200)
    stream: list[StreamId] = Field([], max_length=MAX_FILTER_VALUES, description="only these streams (default: all)")
    threshold: float = Field(0.25, ge=-1.0, le=1.0, description="cosine score a window must reach")
    webhook: str | None = Field(None, max_length=2000, description="POST each event here (http/https)")
    quiet_s: float | None = Field(None, ge=0, le=3600, description="seconds without a match that close an event")
    then: list[str] = Field([], max_length=MAX_STEPS - 1, description="a sequence watch: texts that must follow `text` "
                            "in this order, each within `within` seconds of the step before (on one stream)")
    within: float | None = Field(None, gt=0, le=86400, description="with `then`: the longest gap in seconds between steps")

    @field_validator("then")
    @classmethod
    def _steps(cls, value: list[str]) -> list[str]:
        if any(not t.strip() or len(t) > MAX_QUERY_CHARS for t in value):
            raise ValueError(f"each `then` text must be 1..{MAX_QUERY_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _sequence(self) -> "WatchCreate":
        if bool(self.then) != (self.within is not None):
            raise ValueError("a sequence watch needs both `then` and `within`")
        return self

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
    then: list[str] = Field([], description="a sequence watch's later steps, in order ([] for a plain watch)")
    within: float | None = Field(None, description="a sequence watch's longest gap between steps, seconds")


class StepOut(BaseModel):
    """The clip one step of a sequence watch's event matched."""

    text: str
    start: float
    end: float
    score: float


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
    steps: list[StepOut] | None = Field(None, description="a sequence watch's event: each step's clip and score "
                                                          "(of its best chain); null for a plain watch")
