"""GET /api/v1/health: is the service up, what does it serve."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from streamvl.service.deps import ServiceState, get_state
from streamvl.service.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


def _version() -> str:
    try:
        return version("streamvl")
    except PackageNotFoundError:
        return "unknown"


@router.get("", response_model=Health, summary="Liveness and what this server serves")
async def health(state: ServiceState = Depends(get_state)) -> Health:
    streams = await run_in_threadpool(lambda: len(state.engine.store.stream_states()))
    indexing = None if state.indexer is None else state.indexer.status()
    recording = None
    if state.recorder is not None:
        kept = await run_in_threadpool(state.recordings.total_bytes)
        recording = {"dir": state.settings.record_dir, "bytes": kept, "streams": state.recorder.status(),
                     "error": state.recorder.last_error}
    return Health(version=_version(), db=state.settings.db, model=state.engine.model(), streams=streams,
                  indexing=indexing, auth=state.settings.api_key is not None,
                  uptime_s=time.monotonic() - state.started, recording=recording)
