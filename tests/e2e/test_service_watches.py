"""Watches over real HTTP: `streamvl serve` on 127.0.0.1, watches made through the API, events
written by the clips sink's hook, read back as a list and as Server-Sent Events (with Last-Event-ID
resume), and delivered to a webhook receiver on 127.0.0.1 that fails its first request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from streamvl.storage.schema import CLIPS
from streamvl.storage.sink import TableSink
from streamvl.storage.store import Store
from streamvl.types import StreamInfo
from tests.e2e.service_support import Server, index_streams, shapes_video

pytestmark = pytest.mark.e2e


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 503 to its first `fail` requests, then 200."""

    def __init__(self, fail: int = 1) -> None:
        self.fail, self.calls, self.accepted = fail, [], []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.calls.append((self.headers.get("Idempotency-Key"), body))
                ok = len(owner.calls) > owner.fail
                if ok:
                    owner.accepted.append((self.headers.get("Idempotency-Key"), body))
                self.send_response(200 if ok else 503)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("watched")
    streams = [StreamInfo(f"s{i}", str(shapes_video(root / f"s{i}.mp4", seed=i, seconds=12))) for i in range(2)]
    db = str(root / "db")
    index_streams(db, streams)
    receiver = Receiver(fail=1)
    srv = Server(db, log=root / "server.log").start(timeout_s=600)  # model warm-up on a loaded machine
    yield db, srv, receiver
    assert srv.stop() == 0, "".join(srv.output)
    receiver.close()


def sse_events(client: httpx.Client, n: int, headers: dict | None = None, timeout_s: float = 60.0) -> list[tuple[str, dict]]:
    """Read n watch-event messages (id, data) from the SSE feed."""
    out, msg = [], {}
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", "/api/v1/events/stream", headers=headers or {}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("id: "):
                msg["id"] = line[4:]
            elif line.startswith("data: "):
                msg["data"] = json.loads(line[6:])
            elif line == "" and "data" in msg:
                out.append((msg["id"], msg["data"]))
                msg = {}
                if len(out) == n:
                    return out
            assert time.monotonic() < deadline, f"only {len(out)} of {n} events arrived"
    return out


def test_watch_events_reach_list_sse_and_webhook(setup):
    db, srv, receiver = setup
    with srv.client() as http:
        bad = http.post("/api/v1/watches", json={"text": "x", "webhook": "ftp://nope"})
        assert bad.status_code == 422 and "webhook" in bad.json()["error"]
        r = http.post("/api/v1/watches", json={"text": "a red star", "threshold": -1.0, "webhook": receiver.url,
                                               "quiet_s": 1.0, "name": "anything"})
        assert r.status_code == 201, r.text
        wid = r.json()["watch_id"]
        other = http.post("/api/v1/watches", json={"text": "a blue circle", "stream": ["nope"]}).json()["watch_id"]
        assert {w["watch_id"] for w in http.get("/api/v1/watches").json()} == {wid, other}
        assert http.delete(f"/api/v1/watches/{other}").status_code == 200
        assert http.delete(f"/api/v1/watches/{other}").status_code == 404
        assert [w["watch_id"] for w in http.get("/api/v1/watches").json()] == [wid]

        # the clips are committed again through the clips sink (as a replay would): the hook scores them
        store = Store(db)
        sink = TableSink(db, CLIPS)
        for sid in ("s0", "s1"):
            sink.write(store.read(CLIPS, f"stream_id = '{sid}'"))
        events = http.get("/api/v1/events", params={"watch": wid}).json()
        assert sorted(e["stream_id"] for e in events) == ["s0", "s1"]  # threshold -1: one event per stream
        assert all(e["thumbnail_url"].startswith(f"/api/v1/streams/{e['stream_id']}/thumbnail.jpg") for e in events)
        assert http.get(events[0]["thumbnail_url"]).headers["content-type"] == "image/jpeg"
        assert http.get("/api/v1/events", params={"since": "2100-01-01T00:00:00Z"}).json() == []
        sink.write(store.read(CLIPS, "stream_id = 's0'"))  # a replay adds nothing
        assert len(http.get("/api/v1/events").json()) == 2

        feed = sse_events(http, 2)
        assert [d["event_id"] for _, d in feed] == [e["event_id"] for e in events]
        resumed = sse_events(http, 1, headers={"Last-Event-ID": feed[0][0]})
        assert resumed[0][1]["event_id"] == feed[1][1]["event_id"]
        assert http.get("/api/v1/events/stream", headers={"Last-Event-ID": "garbage"}).status_code == 422

    deadline = time.monotonic() + 30
    while len({k for k, _ in receiver.accepted}) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {k for k, _ in receiver.accepted} == {e["event_id"] for e in events}
    assert len(receiver.calls) >= 3  # the first POST got 503 and was retried
    assert all(body["event_id"] == key for key, body in receiver.calls)


def test_sequence_watch_over_http_events_carry_steps_to_list_sse_and_webhook(setup):
    """A sequence watch made through the API ("then", "within"); its events carry each step's clip
    in the list, on the SSE feed and in the webhook body. Threshold -1: every clip matches every step,
    so each stream completes one chain at its second clip and keeps extending it: one event each."""
    db, srv, receiver = setup
    with srv.client() as http:
        for bad in ({"text": "a red star", "then": ["a blue circle"]}, {"text": "a red star", "within": 3},
                    {"text": "a red star", "then": [" "], "within": 3}, {"text": "a", "then": ["b"], "within": 0}):
            r = http.post("/api/v1/watches", json=bad)
            assert r.status_code == 422, (bad, r.text)
        r = http.post("/api/v1/watches", json={"text": "a red star", "then": ["a blue circle"], "within": 3.0,
                                               "threshold": -1.0, "webhook": receiver.url, "quiet_s": 1.0})
        assert r.status_code == 201, r.text
        w = r.json()
        assert (w["text"], w["then"], w["within"]) == ("a red star", ["a blue circle"], 3.0)
        [listed] = [x for x in http.get("/api/v1/watches").json() if x["watch_id"] == w["watch_id"]]
        assert listed["then"] == ["a blue circle"]
        seen = http.get("/api/v1/events").json()

        store = Store(db)
        sink = TableSink(db, CLIPS)
        for sid in ("s0", "s1"):
            sink.write(store.read(CLIPS, f"stream_id = '{sid}'"))
        events = http.get("/api/v1/events", params={"watch": w["watch_id"]}).json()
        assert sorted(e["stream_id"] for e in events) == ["s0", "s1"]
        for e in events:
            a, b = e["steps"]
            assert (a["text"], b["text"]) == ("a red star", "a blue circle")
            # the event spans from its first chain's first step; steps are its best chain's
            assert a["start"] < b["start"] <= a["end"] + 3.0 and e["start"] <= a["start"] and b["end"] <= e["end"]
        sink.write(store.read(CLIPS, "stream_id = 's0'"))  # a replay adds nothing
        assert http.get("/api/v1/events", params={"watch": w["watch_id"]}).json() == events
        assert all(e["steps"] is None for e in seen)  # the plain watch's events have none

        feed = sse_events(http, len(seen) + 2)[len(seen):]  # the feed is in opening order: these came last
        assert sorted(d["event_id"] for _, d in feed) == sorted(e["event_id"] for e in events)
        assert all(d["steps"] and len(d["steps"]) == 2 for _, d in feed)

    want = {e["event_id"] for e in events}
    deadline = time.monotonic() + 30
    while not want <= {k for k, _ in receiver.accepted} and time.monotonic() < deadline:
        time.sleep(0.2)
    bodies = {k: body for k, body in receiver.accepted if k in want}
    assert set(bodies) == want and all(len(b["steps"]) == 2 for b in bodies.values())
