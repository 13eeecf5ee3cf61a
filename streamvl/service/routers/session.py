"""POST /api/v1/session: the page trades the key (sent as a header) for a media cookie, so <img>
and <video> elements, which cannot send headers, load thumbnails and video; DELETE ends it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from streamvl.service.deps import MEDIA_COOKIE, ServiceState, get_state, media_token

router = APIRouter(prefix="/session", tags=["session"])


@router.post("", status_code=204, summary="Set the media cookie (needs the key when one is configured)")
async def start(request: Request, response: Response, state: ServiceState = Depends(get_state)) -> Response:
    key = state.settings.key_value()
    response.status_code = 204
    if key is not None:  # a browser-session cookie (no Max-Age), sent only to this origin's media paths
        response.set_cookie(MEDIA_COOKIE, media_token(key), httponly=True, samesite="strict", path="/api/v1/streams",
                            secure=request.url.scheme == "https")  # over TLS, never sent back in the clear
    return response


@router.delete("", status_code=204, summary="Forget the media cookie")
async def end(response: Response) -> Response:
    response.status_code = 204
    response.delete_cookie(MEDIA_COOKIE, path="/api/v1/streams", httponly=True, samesite="strict")
    return response
