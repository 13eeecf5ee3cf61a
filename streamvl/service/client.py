"""A small HTTP client of a running `streamvl serve` (standard library only): what
`streamvl search --server URL` calls instead of loading the model in the CLI process."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

from streamvl.errors import ConfigError, StreamvlError
from streamvl.types import Hit


class ServerError(StreamvlError):
    """The server answered with an error, or could not be reached."""


def search(server: str, text: str, *, k: int = 10, stream_ids: Sequence[str] | None = None,
           start: float | None = None, end: float | None = None, tags: Sequence[str] | None = None,
           adapter: str = "meanpool", api_key: str | None = None, timeout_s: float = 60.0) -> list[Hit]:
    """The first page of hits for text from the server at `server` (http://host:port)."""
    if not server.startswith(("http://", "https://")):
        raise ConfigError(f"--server must be an http(s) URL, got {server!r}")
    body = {"q": text, "k": k, "adapter": adapter, "stream": list(stream_ids) if stream_ids else None,
            "start": start, "end": end, "tag": list(tags) if tags else None}
    body = {key: value for key, value in body.items() if value is not None}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = urllib.parse.urljoin(server.rstrip("/") + "/", "api/v1/search")
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ServerError(f"{server} answered {exc.code}: {_message(exc)}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ServerError(f"cannot reach {server}: {getattr(exc, 'reason', exc)}") from exc
    return [Hit(stream_id=h["stream_id"], uri=h["uri"], start=h["start"], end=h["end"], score=h["score"],
                adapter=adapter, extra={"tags": h["tags"]} if h.get("tags") else {}, peak=tuple(h["peak"]))
            for h in payload["hits"]]


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("error", exc.reason)
    except (ValueError, OSError):
        return str(exc.reason)


def search_cli(server: str, text: str, k: int, stream_ids, start, end, adapter: str, tags, local_only) -> list[Hit]:
    """`streamvl search --server`: refuses options only the in-process path has (rerank, adapter
    options), reads the key from STREAMVL_API_KEY."""
    import os

    if local_only:
        raise ConfigError("--rerank, --checkpoint, --option and --model work in-process only (drop --server)")
    return search(server, text, k=k, stream_ids=list(stream_ids) or None, start=start, end=end,
                  tags=list(tags) or None, adapter=adapter, api_key=os.environ.get("STREAMVL_API_KEY") or None)
