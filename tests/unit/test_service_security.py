"""The service's guards without a server process: start-up checks, the key, bounded bodies, and
what POST /streams may add. The app runs in-process (FastAPI's TestClient) on an empty database."""

import os

import pytest
from fastapi.testclient import TestClient

from streamvl.errors import ConfigError
from streamvl.service.app import create_app
from streamvl.service.deps import MEDIA_COOKIE, media_token, presented_key, same_secret
from streamvl.service.routers.streams import checked_uri
from streamvl.service.settings import ServiceSettings, check_settings, is_loopback, read_api_key

KEY = "unit-test-key-0123456789"


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False), ("::", False),
                                           ("example.org", False)])
def test_only_loopback_hosts_may_run_without_a_key(tmp_path, host, loopback):
    assert is_loopback(host) is loopback
    settings = ServiceSettings(db=str(tmp_path), host=host)
    if loopback:
        check_settings(settings)
    else:
        with pytest.raises(ConfigError, match="API key"):
            check_settings(settings)
        check_settings(ServiceSettings(db=str(tmp_path), host=host, api_key=KEY))


def test_keys_come_from_a_file_or_the_environment(tmp_path):
    (tmp_path / "key").write_text(f"{KEY}\nsecond line ignored\n")
    assert read_api_key(str(tmp_path / "key"), {}) == KEY
    assert read_api_key(None, {"STREAMVL_API_KEY": " env-key "}) == "env-key"
    assert read_api_key(None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_api_key(str(tmp_path / "empty"), {})
    with pytest.raises(ConfigError, match="cannot read"):
        read_api_key(str(tmp_path / "missing"), {})
    with pytest.raises(ConfigError, match="16 characters"):
        check_settings(ServiceSettings(db=str(tmp_path), api_key="short"))


def test_key_comparison_and_where_the_key_is_read_from():
    assert same_secret(KEY, KEY) and not same_secret(KEY[:-1], KEY) and not same_secret(None, KEY)
    assert not same_secret(KEY + "x", KEY) and not same_secret("", KEY)
    assert presented_key({b"authorization": f"Bearer {KEY}".encode()}) == KEY
    assert presented_key({b"authorization": f"bearer  {KEY} ".encode()}) == KEY
    assert presented_key({b"x-api-key": KEY.encode()}) == KEY
    assert presented_key({b"authorization": b"Basic abc"}) is None
    assert media_token(KEY) != KEY and len(media_token(KEY)) == 64


@pytest.fixture()
def keyed(tmp_path):
    app = create_app(ServiceSettings(db=str(tmp_path / "db"), api_key=KEY, warm=False))
    with TestClient(app) as client:
        yield client


def test_with_a_key_every_api_path_answers_401_without_it(keyed):
    for method, path in [("GET", "/api/v1/health"), ("GET", "/api/v1/search?q=x"), ("POST", "/api/v1/search"),
                         ("GET", "/api/v1/no/such/path"), ("DELETE", "/api/v1/streams/a"), ("GET", "/api"),
                         ("GET", "/api/v1/streams/a/video")]:
        r = keyed.request(method, path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
    assert keyed.get("/api/v1/health", headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.get("/api/v1/no/such/path", headers={"X-API-Key": KEY}).status_code == 404
    assert keyed.get("/").status_code == 200 and keyed.get("/docs").status_code == 200


def test_the_media_cookie_opens_media_reads_only(keyed):
    keyed.cookies.set(MEDIA_COOKIE, media_token(KEY), path="/api/v1/streams")
    assert keyed.get("/api/v1/streams/a/thumbnail.jpg?t=1").status_code == 404  # past the guard: no such stream
    assert keyed.get("/api/v1/streams").status_code == 401
    assert keyed.delete("/api/v1/streams/a").status_code == 401
    keyed.cookies.set(MEDIA_COOKIE, media_token("another-key-0123456789"), path="/api/v1/streams")
    assert keyed.get("/api/v1/streams/a/thumbnail.jpg?t=1").status_code == 401


def test_the_media_cookie_is_httponly_strict_path_limited_and_not_the_key(keyed, tmp_path):
    assert keyed.post("/api/v1/session").status_code == 401  # the cookie is only traded for the key
    r = keyed.post("/api/v1/session", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 204
    cookie = r.headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    value = cookie.split(";")[0].split("=", 1)[1]
    assert cookie.startswith(f"{MEDIA_COOKIE}=") and value == media_token(KEY)
    assert KEY not in cookie and len(value) == 64  # a derived token (HMAC-SHA256), not the key
    assert "httponly" in attrs and attrs["samesite"].lower() == "samesite=strict"
    assert attrs["path"] == "Path=/api/v1/streams"
    assert "max-age" not in attrs and "expires" not in attrs  # gone when the browser session ends
    assert "secure" not in attrs  # plain http on 127.0.0.1; over https it is Secure (below)
    keyed.cookies.clear()
    assert keyed.get("/api/v1/streams/a/clip.mp4?start=0&end=1").status_code == 401
    keyed.cookies.set(MEDIA_COOKIE, value, path="/api/v1/streams")
    for path in ("thumbnail.jpg?t=1", "strip.jpg?start=0&end=1", "video", "clip.mp4?start=0&end=1"):
        assert keyed.get(f"/api/v1/streams/a/{path}").status_code == 404, path  # past the guard: no such stream
        assert keyed.head(f"/api/v1/streams/a/{path}").status_code in (404, 405), path
    for method, path in [("POST", "/api/v1/search"), ("GET", "/api/v1/search?q=x"), ("GET", "/api/v1/streams"),
                         ("POST", "/api/v1/streams"), ("DELETE", "/api/v1/streams/a"), ("GET", "/api/v1/health"),
                         ("POST", "/api/v1/streams/a/clip.mp4"), ("GET", "/api/v1/streams/a/clip.mp4/x"),
                         ("GET", "/api/v1/watches")]:
        assert keyed.request(method, path).status_code == 401, (method, path)
    with TestClient(keyed.app, base_url="https://testserver") as tls:
        secure = tls.post("/api/v1/session", headers={"X-API-Key": KEY}).headers["set-cookie"]
        assert "secure" in secure.lower()
    open_app = create_app(ServiceSettings(db=str(tmp_path / "open"), warm=False))
    with TestClient(open_app) as client:  # no key configured: nothing to derive, no cookie
        r = client.post("/api/v1/session")
        assert r.status_code == 204 and "set-cookie" not in r.headers


def test_bodies_are_bounded_even_without_a_length(tmp_path):
    app = create_app(ServiceSettings(db=str(tmp_path / "db"), warm=False))
    with TestClient(app) as client:
        assert client.post("/api/v1/search", content=b"x" * 70_000).status_code == 413
        chunks = (b"x" * 10_000 for _ in range(10))  # streamed (chunked): no Content-Length to refuse up front
        assert client.post("/api/v1/search", content=chunks).status_code == 413
        r = client.get("/api/v1/search", params={"q": "anything"})  # an empty database: no hits, no error
        assert r.status_code == 200 and r.json() == {"hits": [], "next_cursor": None}


def test_what_post_streams_may_add(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "secret.mp4", media / "link.mp4")
    roots = (str(media),)
    assert checked_uri("rtsp://127.0.0.1/cam", ()) == "rtsp://127.0.0.1/cam"
    assert checked_uri(str(media / "a.mp4"), roots) == str((media / "a.mp4").resolve())
    assert checked_uri(f"file://{media / 'a.mp4'}", roots) == str((media / "a.mp4").resolve())
    from fastapi.exceptions import RequestValidationError

    for uri, roots_ in [(str(media / "a.mp4"), ()), (str(tmp_path / "secret.mp4"), roots), (str(media / "link.mp4"), roots),
                        (str(media / ".." / "secret.mp4"), roots), (str(media / "none.mp4"), roots),
                        ("concat:/etc/passwd", roots), ("pipe:0", roots), ("data:video/mp4;base64,AAAA", roots)]:
        with pytest.raises(RequestValidationError) as err:
            checked_uri(uri, roots_)
        assert err.value.errors()[0]["loc"] == ("body", "uri"), uri
