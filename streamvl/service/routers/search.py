"""GET and POST /api/v1/search: a page of hits and the cursor of the next one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from streamvl.service.deps import ServiceState, get_state
from streamvl.service.paging import FieldProblem
from streamvl.service.schemas import SearchRequest, SearchResponse
from streamvl.service.errors import field_error

router = APIRouter(prefix="/search", tags=["search"])


async def _run(state: ServiceState, req: SearchRequest) -> SearchResponse:
    try:
        return await run_in_threadpool(state.engine.search, req)
    except FieldProblem as exc:
        raise field_error(exc.field, str(exc)) from exc


@router.get("", response_model=SearchResponse, summary="Search by text (query parameters; stream and tag repeat)")
async def search_get(req: Annotated[SearchRequest, Query()], state: ServiceState = Depends(get_state)) -> SearchResponse:
    return await _run(state, req)


@router.post("", response_model=SearchResponse, summary="Search by text (JSON body)")
async def search_post(req: SearchRequest, state: ServiceState = Depends(get_state)) -> SearchResponse:
    return await _run(state, req)
