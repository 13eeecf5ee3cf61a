"""`streamvl serve` over real HTTP: a server process on a free 127.0.0.1 port, on a small index of
generated videos built through the real decode and encode stages (no Ray)."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
from PIL import Image

from streamvl.types import StreamInfo
from tests.e2e.service_support import Server, all_pages, clip_rows, clip_scores, index_streams, shapes_video
from tests.videos import make_video

pytestmark = pytest.mark.e2e
KEY = "test-key-0123456789abcdef"
T0 = 1_780_000_000.0  # UTC arrival of the live stream's first frame
QUERY = "a red star"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    streams = [StreamInfo(f"shapes-{i}", str(shapes_video(root / f"shapes-{i}.mp4", seed=i, seconds=30))) for i in range(3)]
    make_video(root / "moving.avi", codec="mpeg4", size=(320, 240), seconds=12, pattern="moving")
    streams.append(StreamInfo("moving", str(root / "moving.avi")))
    streams.append(StreamInfo("cam", str(shapes_video(root / "cam.mp4", seed=7, seconds=30))))
    db = str(root / "db")
    index_streams(db, streams, live={"cam": (T0, "rtsp://127.0.0.1:9/cam")}, no_thumbnails={"moving"})
    return root, db


@pytest.fixture(scope="module")
def server(index):
    root, db = index
    srv = Server(db, "--media-root", str(root), log=root / "server.log").start()
    yield srv
    assert srv.stop() == 0, "".join(srv.output)  # SIGTERM: a clean exit


@pytest.fixture(scope="module")
def keyed(index):
    root, db = index
    srv = Server(db, env={"STREAMVL_API_KEY": KEY}).start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture()
def http(server):
    with server.client() as client:
        yield client


def hit_ids(pages):
    return [(h["stream_id"], tuple(h["peak"])) for page in pages for h in page]


# ---------------------------------------------------------------- search and paging


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paging_with_the_cursor_returns_every_hit_exactly_once(http, index, method):
    _, db = index
    pages = all_pages(http, {"q": QUERY, "k": 4}, method=method)
    hits = [h for page in pages for h in page]
    assert len(pages) > 3 and all(len(p) == 4 for p in pages[:-1])
    assert len(set(hit_ids(pages))) == len(hits)  # no hit twice
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    clips = clip_rows(db)
    for c in clips:  # none missing: every indexed clip belongs to (touches) a hit of its stream
        assert any(h["stream_id"] == c["stream_id"] and h["start"] <= c["end"] and c["start"] <= h["end"] for h in hits), c
    by_stream = {}
    for h in hits:
        by_stream.setdefault(h["stream_id"], []).append((h["start"], h["end"]))
    for spans in by_stream.values():  # hits never overlap
        spans.sort()
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
    truth = clip_scores(db, QUERY)  # brute force over every clip
    assert hits[0]["score"] == pytest.approx(max(truth.values()), abs=1e-5)
    again = all_pages(http, {"q": QUERY, "k": 4}, method=method)
    assert again == pages  # one deterministic list


def test_filters_are_applied_inside_the_vector_search(http, index):
    _, db = index
    truth = clip_scores(db, QUERY)
    weakest = min({s for s, _ in truth}, key=lambda s: max(v for (x, _), v in truth.items() if x == s))
    body = http.get("/api/v1/search", params={"q": QUERY, "k": 3, "stream": weakest}).json()
    assert len(body["hits"]) == 3 and {h["stream_id"] for h in body["hits"]} == {weakest}  # a post-filter would find none
    assert body["hits"][0]["score"] == pytest.approx(max(v for (s, _), v in truth.items() if s == weakest), abs=1e-5)
    two = all_pages(http, {"q": QUERY, "k": 5, "stream": ["shapes-0", "shapes-2"]})
    assert {h["stream_id"] for p in two for h in p} == {"shapes-0", "shapes-2"}
    ranged = all_pages(http, {"q": QUERY, "k": 5, "start": 10, "end": 20})
    assert ranged[0] and all(h["end"] >= 10 and h["start"] <= 20 for p in ranged for h in p)
    rows = clip_rows(db, ["tags"])
    if "tags" in rows[0]:  # a tagging plugin (alpro) wrote the tags column: tags filter inside the search
        assert http.get("/api/v1/search", params={"q": QUERY, "tag": "no-such-tag"}).json()["hits"] == []
        tagged = [r for r in rows if r["tags"]]
        if tagged:
            tag = tagged[0]["tags"][0]
            hits = [h for p in all_pages(http, {"q": QUERY, "k": 10, "tag": tag}) for h in p]
            assert hits and all(tag in (h["tags"] or []) for h in hits)
    else:
        r = http.get("/api/v1/search", params={"q": QUERY, "tag": "person"})
        assert r.status_code == 422 and "tag" in r.json()["error"]


def test_live_streams_filter_by_utc_instants_and_carry_wall_clock(http):
    iso = lambda s: dt.datetime.fromtimestamp(T0 + s, dt.timezone.utc).isoformat()  # noqa: E731
    pages = all_pages(http, {"q": QUERY, "k": 5, "start": iso(10), "end": iso(20)})
    hits = [h for p in pages for h in p]
    assert hits and {h["stream_id"] for h in hits} == {"cam"}  # files have no wall clock: left out
    assert all(h["end"] >= 10 - 1e-6 and h["start"] <= 20 + 1e-6 for h in hits)
    assert all(h["wallclock"] == pytest.approx(T0 + h["start"], abs=0.6) for h in hits)
    assert all(h["video_url"] is None for h in hits)  # no file and no recording
    mixed = http.get("/api/v1/search", params={"q": QUERY, "start": 10, "end": iso(20)})
    assert mixed.status_code == 422


def test_time_order_pages_earliest_first(http):
    pages = all_pages(http, {"q": QUERY, "k": 3, "sort": "time", "min_score": 0.0})
    hits = [h for p in pages for h in p]
    assert len(pages) > 2 and len(set(hit_ids(pages))) == len(hits)
    assert [(h["start"], h["stream_id"]) for h in hits] == sorted((h["start"], h["stream_id"]) for h in hits)
    first = http.get("/api/v1/search", params={"q": QUERY, "k": 3, "sort": "time"}).json()
    cursor = first["next_cursor"]
    if cursor:  # a cursor of one order is refused by the other
        r = http.get("/api/v1/search", params={"q": QUERY, "k": 3, "cursor": cursor})
        assert r.status_code == 422 and "cursor" in r.json()["error"]


@pytest.mark.parametrize("params,field", [
    ({"q": QUERY, "k": 0}, "k"), ({"q": QUERY, "k": 100000}, "k"), ({"q": "x" * 501}, "q"), ({}, "q"),
    ({"q": QUERY, "cursor": "not-a-cursor"}, "cursor"), ({"q": QUERY, "sort": "random"}, "sort"),
    ({"q": QUERY, "start": 20, "end": 10}, "start"), ({"q": QUERY, "start": "nan"}, "start"),
    ({"q": QUERY, "stream": ["s"] * 65}, "stream"), ({"q": QUERY, "bogus": 1}, "bogus"),
])
def test_bad_parameters_get_422_naming_the_field(http, params, field):
    r = http.get("/api/v1/search", params=params)
    assert r.status_code == 422
    assert field in r.json()["error"], r.json()


def test_bodies_are_bounded_and_validated(http):
    r = http.post("/api/v1/search", content=json.dumps({"q": "a" * 100_000}), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = http.post("/api/v1/search", json={"q": QUERY, "k": "many"})
    assert r.status_code == 422 and "k" in r.json()["error"]


# ---------------------------------------------------------------- media


def test_video_serves_byte_ranges(http, index):
    root, _ = index
    data = (root / "shapes-0.mp4").read_bytes()
    r = http.get("/api/v1/streams/shapes-0/video", headers={"Range": "bytes=100-1099"})
    assert r.status_code == 206 and r.content == data[100:1100]
    assert r.headers["content-range"] == f"bytes 100-1099/{len(data)}" and r.headers["content-type"] == "video/mp4"
    tail = http.get("/api/v1/streams/shapes-0/video", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    whole = http.get("/api/v1/streams/shapes-0/video")
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    assert http.get("/api/v1/streams/moving/video").status_code == 415  # mpeg4 in avi: browsers cannot play it
    assert http.get("/api/v1/streams/cam/video").status_code == 404  # a live URL: no file


def decoded(content: bytes) -> tuple[list[float], str]:
    with av.open(io.BytesIO(content)) as c:
        name = c.streams.video[0].codec_context.name
        return [float(f.time) for f in c.decode(video=0)], name


@pytest.mark.parametrize("stream,start,end,how", [("shapes-0", 0.0, 4.0, "remux"), ("shapes-1", 5.3, 9.8, "transcode"),
                                                  ("moving", 2.0, 7.5, "transcode")])
def test_clip_cuts_the_segment(http, stream, start, end, how):
    r = http.get(f"/api/v1/streams/{stream}/clip.mp4", params={"start": start, "end": end})
    assert r.status_code == 200 and r.headers["x-streamvl-cut"] == how and r.headers["content-type"] == "video/mp4"
    times, codec = decoded(r.content)
    fps = 8.0 if stream.startswith("shapes") else 25.0
    assert codec == "h264" and times[0] == pytest.approx(0.0, abs=1e-6)
    assert times[-1] + 1 / fps == pytest.approx(end - start, abs=1 / fps + 1e-6)  # the right duration
    again = http.get(f"/api/v1/streams/{stream}/clip.mp4", params={"start": start, "end": end}, headers={"Range": "bytes=0-99"})
    assert again.status_code == 206 and again.content == r.content[:100]  # cached cut, byte ranges
    assert http.get(f"/api/v1/streams/{stream}/clip.mp4", params={"start": 5, "end": 2}).status_code == 422
    assert http.get(f"/api/v1/streams/{stream}/clip.mp4", params={"start": 0, "end": 4000}).status_code == 422


def jpeg_size(content: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(content))
    assert image.format == "JPEG"
    return image.size


def test_thumbnails_from_the_table_and_from_the_file(http):
    assert jpeg_size(http.get("/api/v1/streams/shapes-0/thumbnail.jpg", params={"t": 12.3}).content) == (256, 256)
    assert jpeg_size(http.get("/api/v1/streams/cam/thumbnail.jpg", params={"t": 3}).content) == (256, 256)  # live: stored
    assert jpeg_size(http.get("/api/v1/streams/moving/thumbnail.jpg", params={"t": 3}).content) == (256, 192)  # decoded
    w, h = jpeg_size(http.get("/api/v1/streams/shapes-1/strip.jpg", params={"start": 2, "end": 9, "n": 4}).content)
    assert (w, h) == (4 * 256, 256)
    assert http.get("/api/v1/streams/nope/thumbnail.jpg", params={"t": 1}).status_code == 404
    assert http.get("/api/v1/streams/shapes-0/thumbnail.jpg", params={"t": -1}).status_code == 422


def test_no_request_parameter_becomes_a_path(http, index):
    root, _ = index
    for sid in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", str(root / "shapes-0.mp4").replace("/", "%2F")):
        assert http.get(f"/api/v1/streams/{sid}/video").status_code == 404
    for uri in ("/etc/passwd", "file:///etc/passwd", "concat:/etc/passwd", "subfile:,,start,0,end,0,,:/etc/passwd",
                str(Path(root).parent / "elsewhere.mp4")):
        r = http.post("/api/v1/streams", json={"uri": uri})
        assert r.status_code == 422 and "uri" in r.json()["error"], (uri, r.json())


# ---------------------------------------------------------------- streams, health, docs, CLI


def test_streams_list_add_remove(http, index):
    root, _ = index
    rows = {r["stream_id"]: r for r in http.get("/api/v1/streams").json()}
    assert set(rows) >= {"shapes-0", "shapes-1", "shapes-2", "moving", "cam"}
    assert rows["shapes-0"]["video"] and not rows["moving"]["video"] and rows["cam"]["live"]
    made = http.post("/api/v1/streams", json={"uri": "rtsp://127.0.0.1:9/door", "id": "door", "fps": 2})
    assert made.status_code == 201 and made.json() == {"stream_id": "door", "status": "requested", "indexing": False}
    local = http.post("/api/v1/streams", json={"uri": str(root / "shapes-2.mp4"), "id": "again"})
    assert local.status_code == 201  # inside --media-root
    listed = {r["stream_id"]: r["status"] for r in http.get("/api/v1/streams").json()}
    assert listed["door"] == "requested" and listed["again"] == "requested"
    assert http.delete("/api/v1/streams/door").status_code == 202
    assert http.delete("/api/v1/streams/never-added").status_code == 404


def test_health_docs_and_page_come_from_local_assets(http):
    health = http.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["streams"] >= 5 and health["model"] and health["auth"] is False
    docs = http.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert http.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = http.get("/openapi.json").json()
    assert {"/api/v1/search", "/api/v1/streams", "/api/v1/streams/{stream_id}/clip.mp4"} <= set(schema["paths"])
    page = http.get("/")
    assert page.status_code == 200 and "app.js" in page.text and "http" not in page.text.replace("http-equiv", "").split("<body")[0]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in http.get("/api/v1/health", headers={"Origin": "http://evil.test"}).headers


def test_cli_search_talks_to_the_server(server, http):
    out = subprocess.run([sys.executable, "-c", "from streamvl.cli import main; main()", "search", QUERY, "--k", "4",
                          "--server", server.url, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    api_hits = http.get("/api/v1/search", params={"q": QUERY, "k": 4}).json()["hits"]
    assert [(h["stream_id"], h["start"], h["end"]) for h in json.loads(out.stdout)] == \
        [(h["stream_id"], h["start"], h["end"]) for h in api_hits]


# ---------------------------------------------------------------- the key


def test_with_a_key_every_api_request_needs_it(keyed):
    with keyed.client() as c:
        for path in ("/api/v1/health", "/api/v1/search?q=x", "/api/v1/streams", "/api/v1/nothing-here",
                     "/api/v1/streams/shapes-0/thumbnail.jpg?t=1", "/api/v1/streams/shapes-0/video"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-API-Key": KEY[:-1] + "x"}).status_code == 401, path
        assert c.post("/api/v1/search", json={"q": "x"}).status_code == 401
        assert c.get("/api/v1/search", params={"q": QUERY}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/api/v1/search", params={"q": QUERY}, headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/").status_code == 200  # the page loads, then asks for the key
        assert c.get("/api/v1/health", headers={"Authorization": f"Bearer {KEY}"}).json()["auth"] is True
        session = c.post("/api/v1/session", headers={"X-API-Key": KEY})
        assert session.status_code == 204 and "httponly" in session.headers["set-cookie"].lower()
        # the media cookie opens media GETs (what <img> and <video> need), nothing else
        assert c.get("/api/v1/streams/shapes-0/thumbnail.jpg", params={"t": 1}).status_code == 200
        assert c.get("/api/v1/search", params={"q": QUERY}).status_code == 401


def test_a_reachable_host_without_a_key_is_refused(index):
    _, db = index
    out = subprocess.run([sys.executable, "-c", "from streamvl.cli import main; main()", "serve", "--db", db,
                          "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in __import__("os").environ.items() if k != "STREAMVL_API_KEY"})
    assert out.returncode == 2 and "API key" in out.stderr and "Traceback" not in out.stderr
