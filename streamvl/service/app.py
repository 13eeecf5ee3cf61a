"""The app factory: settings -> a FastAPI app with the API under /api/v1, docs at /docs (from
local assets, no CDN) and the page at / (static files shipped in the package, no build step)."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from streamvl.service import errors
from streamvl.service.deps import API_SECURITY, BodyLimit, KeyGuard, ServiceState
from streamvl.service.media import MediaLibrary
from streamvl.service.routers import health, media, search, session, streams, watches
from streamvl.service.searching import SearchEngine
from streamvl.service.settings import MAX_BODY_BYTES, ServiceSettings, check_settings

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("streamvl.service")
# The page loads only its own files; media come from the same origin (blob: for nothing).
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class SecurityHeaders:
    """nosniff and no-referrer everywhere; the page (not /docs, whose HTML has inline script) gets a strict CSP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = not scope["path"].startswith(("/docs", "/api"))

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def _warm(engine: SearchEngine) -> None:
    """Load the model and embed one query, so the first user's search does not wait for it."""
    if engine.model() is None:
        return
    try:
        engine.embed("a video")
    except Exception as exc:  # the server still serves streams and media; search will report it
        log.warning("could not load the search model: %s", exc)


def _lifespan(state: ServiceState):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings = state.settings
        state.started = time.monotonic()
        if settings.index:
            from streamvl.service.indexer import IndexJob

            state.indexer = IndexJob(settings.db, settings.index_args).start()
        if settings.warm:
            await run_in_threadpool(_warm, state.engine)
        webhooks = _webhooks(state)
        recorder = _recorder(state)
        try:
            yield
        finally:
            await webhooks.stop()
            if recorder is not None:
                await run_in_threadpool(recorder.stop)
            if state.indexer is not None:
                await run_in_threadpool(state.indexer.stop)
            state.media.close()
    return lifespan


def _webhooks(state: ServiceState):
    """Start delivering watch events to their webhooks (an asyncio task of this process)."""
    from streamvl.service.events import WebhookSender
    from streamvl.storage.watches import WatchTables

    store = state.engine.store
    state.extra["webhooks"] = WebhookSender(WatchTables.of(store)).start()
    return state.extra["webhooks"]


def _recorder(state: ServiceState):
    """With --record: start recording every live stream of the streams table (threads of this process)."""
    settings = state.settings
    if state.recordings is None:
        return None
    from streamvl.service.recorder import Recorder

    store = state.engine.store
    state.recorder = Recorder(state.recordings, lambda: live_streams(store), settings.record_segment_s).start()
    return state.recorder


def live_streams(store) -> dict[str, str]:
    """{stream_id: uri} of the live streams being indexed (queued, running or reconnecting)."""
    from streamvl.sources.decode import is_url
    from streamvl.types import Status

    active = (Status.QUEUED, Status.RUNNING, Status.RECONNECTING)
    return {s.stream_id: s.uri for s in store.stream_states()
            if s.status in active and (s.live or (s.live is None and is_url(s.uri)))}


def _docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the assets the fastapi-offline package ships."""
    assets = files("fastapi_offline") / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="streamvl API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/favicon.svg")


def create_app(settings: ServiceSettings) -> FastAPI:
    """The service for settings.db (check_settings first: refuses unsafe host/key combinations)."""
    check_settings(settings)
    media_lib = MediaLibrary()
    recordings = None
    if settings.record_dir is not None:
        from streamvl.service.recordings import Recordings

        recordings = Recordings(settings.record_dir, settings.record_keep_s, settings.record_max_bytes)
    state = ServiceState(settings=settings, engine=SearchEngine(settings.db, media_lib, recordings), media=media_lib,
                         recordings=recordings)
    app = FastAPI(title="streamvl", summary="Search indexed video by text; see and play every hit.",
                  version="1", docs_url=None, redoc_url=None, lifespan=_lifespan(state))
    app.state.service = state
    errors.install(app)
    api = APIRouter(prefix="/api/v1", dependencies=API_SECURITY)
    for module in (search, streams, media, health, session, watches):
        api.include_router(module.router)
    app.include_router(api)
    _docs(app)
    app.mount("/", StaticFiles(directory=str(STATIC), html=True), name="page")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(KeyGuard, key=settings.key_value())
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "Range"],
                           expose_headers=["Content-Range", "Accept-Ranges", "Content-Length"])
    app.add_middleware(SecurityHeaders)
    return app
