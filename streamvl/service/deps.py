"""Shared state and the API key check, as FastAPI dependencies and one ASGI guard.

The key is checked in constant time (both sides hashed first, so not even the length leaks). It
comes as `Authorization: Bearer KEY` or `X-API-Key: KEY`. Media elements (<img>, <video>)
cannot send headers, so POST /api/v1/session (with the key) sets an HttpOnly, SameSite=Strict
session cookie holding a token derived from the key; it is accepted for GETs of media only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from streamvl.service.settings import ServiceSettings

MEDIA_COOKIE = "streamvl_media"
_MEDIA_PATH = re.compile(r"^/api/v1/streams/[^/]+/(thumbnail\.jpg|strip\.jpg|video|clip\.mp4)$")

# Declared for the OpenAPI schema (the Authorize button of /docs); the check is KeyGuard's.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")
API_SECURITY = [Security(bearer_scheme), Security(header_scheme)]


@dataclass
class ServiceState:
    """What the routers share: settings, the search engine, media, and the indexing job."""

    settings: ServiceSettings
    engine: Any
    media: Any
    indexer: Any = None
    recordings: Any = None  # the --record folder (streamvl.service.recordings.Recordings), else None
    recorder: Any = None  # the threads that record live streams into it
    started: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented key with the configured one."""
    return given is not None and hmac.compare_digest(_digest(given), _digest(expected))


def media_token(key: str) -> str:
    """The session cookie's value: derived from the key, so the key itself never sits in a cookie."""
    return hmac.new(key.encode(), b"streamvl media session v1", hashlib.sha256).hexdigest()


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = headers.get(b"x-api-key")
    return header.decode("latin-1").strip() if header else None


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


class KeyGuard:
    """ASGI middleware: with a key configured, every /api request without it gets 401 (whatever
    the path, existing or not); the page and /docs stay reachable so they can ask for the key."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app, self.key = app, key
        self.token = media_token(key) if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or not scope["path"].startswith("/api"):
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS":  # CORS preflight carries no credentials
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if same_secret(presented_key(headers), self.key):
            return await self.app(scope, receive, send)
        if scope["method"] in ("GET", "HEAD") and _MEDIA_PATH.match(scope["path"]) \
                and same_secret(_cookie(headers, MEDIA_COOKIE), self.token):
            return await self.app(scope, receive, send)
        await _send_json(send, 401, b'{"error":"missing or wrong API key (Authorization: Bearer KEY or X-API-Key)"}',
                         [(b"www-authenticate", b'Bearer realm="streamvl"')])


class BodyLimit:
    """ASGI middleware: request bodies over max_bytes get 413, whether declared (Content-Length)
    or streamed: then the app sees the client gone, and whatever it answers is dropped."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_json(send, 413, b'{"error":"request body too large"}')
        seen, refused = 0, False

        async def limited() -> dict:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                refused = True
                await _send_json(send, 413, b'{"error":"request body too large"}')
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited, guarded_send)


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
