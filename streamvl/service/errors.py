"""How failures become HTTP answers: 422 naming the field, one-line typed errors, never a traceback."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from streamvl.errors import ConfigError, PluginError, SourceError, StoreError, StreamvlError


def field_error(field: str, message: str, where: str = "query") -> RequestValidationError:
    """A 422 for one field, shaped like FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": (where, field), "msg": message, "input": None}])


def _one_line(errors: list[dict]) -> str:
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
    return JSONResponse({"error": _one_line(errors), "detail": errors}, status_code=422)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


_STATUS = ((ConfigError, 422), (PluginError, 422), (SourceError, 422), (StoreError, 503))


async def _typed(request: Request, exc: StreamvlError) -> JSONResponse:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    return JSONResponse({"error": str(exc)}, status_code=status)


def install(app: FastAPI) -> None:
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(StreamvlError, _typed)
