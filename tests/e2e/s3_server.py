"""A real S3 endpoint for tests: moto's S3 server in this process, on 127.0.0.1.

Use it from a test module by importing the fixtures (pytest picks up imported fixtures):

    from tests.e2e.s3_server import moto_s3, s3  # noqa: F401

    def test_x(s3):
        db = lancedb.connect(s3.uri("db"))          # env already points at the server
        subprocess.run([...], env=s3.env)          # the same for child processes

Two things differ from AWS and are fixed here, so tests see S3's real semantics:
- moto checks `If-None-Match: *` / `If-Match` and then stores the object in two steps, and its
  threaded server runs requests in parallel: two writers racing for one key could both win
  (Lance commits a table version with exactly such a conditional PUT of the next manifest).
  MotoS3 serialises every mutating request, which makes the check-and-put atomic, as on S3.
- Plain http: Lance refuses http endpoints unless allowed (AWS_ALLOW_HTTP / allow_http).

Every request is logged (method, path, query, status, conditional, bytes in and out), so tests
and bench/bench_scale.py can report S3 requests per commit; `latency(seconds, path_contains)`
delays requests like a remote store; MotoS3(host=...) binds another local address (Ray nodes in
network namespaces reach NetnsCluster.host_ip, not this process's 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

ACCESS_KEY, SECRET_KEY, REGION = "testing-key-id", "testing-secret", "us-east-1"
_MUTATING = {"PUT", "POST", "DELETE"}


class Request(NamedTuple):
    method: str
    path: str
    query: str
    status: int
    conditional: bool  # carried If-None-Match or If-Match
    received: int  # request body bytes (uploads)
    sent: int  # response body bytes (downloads)


class RequestLog:
    """Thread-safe record of the requests the server answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Request] = []

    def add(self, request: Request) -> None:
        with self._lock:
            self._items.append(request)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self._items)

    def counts(self, since: int = 0) -> Counter[str]:
        """{method: count} of the requests from index `since` on."""
        return Counter(r.method for r in self.snapshot()[since:])

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class _Middleware:
    """WSGI wrapper: logs each request; runs mutating requests one at a time (atomic conditional PUT)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], log: RequestLog, serialise: bool, latency_s: float) -> None:
        self.app, self.log, self.serialise, self.latency_s = app, log, serialise, latency_s
        self.latency_paths = ""  # delay only requests whose path contains this ("": all)
        self._write = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        status: list[int] = [0]

        def recording_start(code: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            status[0] = int(code.split()[0])
            return start_response(code, headers, *exc)

        conditional = "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ
        if self.latency_s and self.latency_paths in environ.get("PATH_INFO", ""):
            time.sleep(self.latency_s)  # outside the lock: requests overlap as on a remote store
        if self.serialise and method in _MUTATING:
            with self._write:  # the body is read and the object stored inside the lock
                body = self._run(environ, recording_start)
        else:
            body = self._run(environ, recording_start)
        received = int(environ.get("CONTENT_LENGTH") or 0)
        self.log.add(Request(method, environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""), status[0],
                             conditional, received, sum(len(chunk) for chunk in body)))
        return body

    def _run(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        result = self.app(environ, start_response)
        try:
            return list(result)
        finally:
            getattr(result, "close", lambda: None)()


class MotoS3:
    """moto's ThreadedMotoServer on 127.0.0.1 (a free port), with a request log.

    host: another local address to bind, e.g. NetnsCluster.host_ip, so that Ray nodes in network
    namespaces (each with its own 127.0.0.1) reach it.

    serialise_writes=False gives moto's own behaviour (non-atomic conditional PUT under races);
    only the test that shows that race should want it. latency_s delays every request (a remote
    store's round trip; moto answers in well under a millisecond), which widens the window in
    which concurrent writers collide.
    """

    def __init__(self, *, host: str = "127.0.0.1", serialise_writes: bool = True, latency_s: float = 0.0) -> None:
        self.host, self.serialise_writes, self.latency_s = host, serialise_writes, latency_s
        self.requests = RequestLog()
        self._server: Any = None
        self._names = itertools.count()

    def start(self) -> "MotoS3":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
        self._server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        self._server.start()
        wsgi = self._server._server  # werkzeug's server: its handlers call server.app per request
        self._app = wsgi.app = _Middleware(wsgi.app, self.requests, self.serialise_writes, self.latency_s)
        return self

    @contextlib.contextmanager
    def latency(self, seconds: float, path_contains: str = "") -> Iterator[None]:
        """Inside the block, delay every request (or those whose path contains path_contains) by `seconds`."""
        before = self._app.latency_s, self._app.latency_paths
        self._app.latency_s, self._app.latency_paths = seconds, path_contains
        try:
            yield
        finally:
            self._app.latency_s, self._app.latency_paths = before

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def client(self) -> Any:
        """A boto3 S3 client for this server (explicit keys: no lookup of ~/.aws or instance metadata)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"streamvl-{os.getpid()}-{next(self._names)}-{uuid.uuid4().hex[:6]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """The standard variables that point AWS clients (boto3, Lance/object_store) here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            # Lance (object_store) refuses plain http unless allowed; streamvl's objectstore module
            # derives it from an http:// endpoint, this is for clients reading the environment only.
            "AWS_ALLOW_HTTP": "true",
            # never ask 169.254.169.254 for credentials: traffic stays on 127.0.0.1
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": f"127.0.0.1,localhost,{self.host}",
        }

    def storage_options(self) -> dict[str, str]:
        """The same, as LanceDB/Lance storage_options (no environment needed)."""
        return {"aws_endpoint": self.endpoint, "aws_access_key_id": ACCESS_KEY,
                "aws_secret_access_key": SECRET_KEY, "aws_region": REGION, "allow_http": "true"}


@dataclass
class S3Bucket:
    """One bucket on a MotoS3 server; `env` is os.environ plus the server's variables."""

    server: MotoS3
    name: str
    env: dict[str, str] = field(repr=False)

    def uri(self, prefix: str = "db") -> str:
        return f"s3://{self.name}/{prefix.strip('/')}" if prefix else f"s3://{self.name}"

    @property
    def storage_options(self) -> dict[str, str]:
        return self.server.storage_options()

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under prefix (paginated)."""
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    """A running MotoS3 for the module's tests (conditional PUTs atomic); stopped afterwards."""
    server = MotoS3().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket; this process's environment points at the server for the test's duration."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)  # e.g. a developer's real AWS_PROFILE must not leak into the test
    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    return S3Bucket(moto_s3, moto_s3.make_bucket(), env=dict(os.environ))
