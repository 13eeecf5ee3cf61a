"""Run the service on uvicorn: bind first (port 0 picks a free port), say where, serve until
SIGINT/SIGTERM; uvicorn then stops accepting, finishes requests (up to GRACE_S) and runs the
app's shutdown (the indexing job stops and commits)."""

from __future__ import annotations

import signal
import socket
from typing import Callable

from streamvl.service.settings import ServiceSettings, check_settings

GRACE_S = 10.0  # open responses (a long video) get this long to finish at shutdown


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6)."""
    from streamvl.errors import ConfigError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def run(settings: ServiceSettings, on_ready: Callable[[str], None] | None = None, log_level: str = "info") -> None:
    """Serve until interrupted; on_ready(url) once listening."""
    import uvicorn

    from streamvl.service.app import create_app

    check_settings(settings)
    sock = bind(settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACE_S, access_log=False,
                            server_header=False, proxy_headers=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        _notify_when_started(server, on_ready, url_of(sock))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again against the
    # handlers that were in place before it: these note it, so a requested stop exits with 0.
    stops: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stops.append(signum))
    server.run(sockets=[sock])


def _notify_when_started(server, on_ready: Callable[[str], None], url: str) -> None:
    """Call on_ready(url) after uvicorn's startup (lifespan included) has completed."""
    startup = server.startup

    async def started(sockets=None):
        await startup(sockets=sockets)
        if server.started:
            on_ready(url)

    server.startup = started
