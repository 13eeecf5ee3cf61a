"""/api/v1/watches (list, create, remove) and /api/v1/events (list, and the live feed as Server-Sent Events)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Header, HTTPException, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from streamvl import api
from streamvl.errors import ConfigError, StoreError
from streamvl.service.deps import ServiceState, get_state
from streamvl.service.errors import field_error
from streamvl.service.events import event_out, sse_feed
from streamvl.service.watch_schemas import EventOut, WatchCreate, WatchOut
from streamvl.storage.watches import parse_cursor

router = APIRouter(tags=["watches"])


def _tables(state: ServiceState):
    from streamvl.storage.watches import WatchTables

    store = state.engine.store
    return WatchTables.of(store)


@router.get("/watches", response_model=list[WatchOut], summary="Active watches (standing queries)")
async def list_watches(state: ServiceState = Depends(get_state)) -> list[dict]:
    return await run_in_threadpool(api.watches, state.settings.db)


@router.post("/watches", response_model=WatchOut, status_code=201, summary="Watch for TEXT on every stream (or some)")
async def add_watch(body: WatchCreate, state: ServiceState = Depends(get_state)) -> dict:
    if state.engine.model() is None:
        raise HTTPException(409, "nothing is indexed yet: a watch is embedded with the indexing model")
    try:
        wid = await run_in_threadpool(lambda: api.watch_add(state.settings.db, body.text, streams=body.stream,
                                                            threshold=body.threshold, webhook=body.webhook,
                                                            name=body.name, quiet_s=body.quiet_s, then=body.then,
                                                            within=body.within))
    except ConfigError as exc:
        raise field_error("text", exc.message, "body") from exc
    rows = await run_in_threadpool(api.watches, state.settings.db)
    return next(r for r in rows if r["watch_id"] == wid)


@router.delete("/watches/{watch_id}", summary="Remove a watch (its events stay)")
async def remove_watch(watch_id: str = PathParam(max_length=64), state: ServiceState = Depends(get_state)) -> dict:
    try:
        await run_in_threadpool(api.watch_remove, state.settings.db, watch_id)
    except ConfigError as exc:
        raise HTTPException(404, f"no active watch {watch_id!r}") from exc
    return {"watch_id": watch_id, "active": False}


@router.get("/events", response_model=list[EventOut], summary="Events of every watch (or one), oldest first")
async def list_events(watch: str | None = Query(None, max_length=64), since: dt.datetime | None = Query(
        None, description="only events opened at or after this ISO instant (UTC if no offset)"),
        state: ServiceState = Depends(get_state)) -> list[dict]:
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    rows = await run_in_threadpool(_tables(state).watch_events, watch, since)
    return [event_out(r) for r in rows]


@router.get("/events/stream", summary="Live feed of events (Server-Sent Events; resume with Last-Event-ID)",
            response_class=StreamingResponse)
async def event_stream(request: Request, last_event_id: str | None = Header(None, max_length=80),
                       after: str | None = Query(None, max_length=80, description="resume after this event id "
                                                 "(for clients that cannot send Last-Event-ID)"),
                       state: ServiceState = Depends(get_state)) -> StreamingResponse:
    cursor = last_event_id or after
    if cursor is not None:
        try:
            parse_cursor(cursor)
        except StoreError as exc:
            raise field_error("Last-Event-ID", exc.message, "header") from exc
    return StreamingResponse(sse_feed(_tables(state), cursor, request.is_disconnected), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
