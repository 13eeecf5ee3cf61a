"""`streamvl serve --index`: a stream added through the API is indexed by the server's own
serve-index job (a child process on a local Ray), then found by search; SIGTERM stops both."""

from __future__ import annotations

import time

import pytest

from tests.e2e.service_support import Server
from tests.videos import make_video

pytestmark = pytest.mark.e2e


def test_streams_added_through_the_api_get_indexed_and_searched(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "added.mp4", size=(320, 240), seconds=6.0, pattern="moving")
    cfg = tmp_path / "index.toml"
    cfg.write_text('model = "streamvl-tiny@random:0"\n\n[sampling]\nfps = 2.0\n\n[clips]\nwindow = 4\nstride = 2\n')
    srv = Server(str(tmp_path / "db"), "--index", "--config", str(cfg), "--media-root", str(media),
                 log=tmp_path / "server.log").start()
    try:
        with srv.client() as http:
            made = http.post("/api/v1/streams", json={"uri": str(media / "added.mp4"), "id": "added"})
            assert made.status_code == 201 and made.json()["indexing"] is True
            assert http.get("/api/v1/health").json()["indexing"] == "running"
            deadline, status = time.monotonic() + 480, None
            while time.monotonic() < deadline:
                rows = {r["stream_id"]: r for r in http.get("/api/v1/streams").json()}
                status = rows.get("added", {}).get("status")
                if status in ("done", "error"):
                    break
                time.sleep(2)
            assert status == "done", "".join(srv.output[-40:])
            assert rows["added"]["frames_indexed"] == 12
            hits = http.get("/api/v1/search", params={"q": "a red square", "k": 3}).json()["hits"]
            assert hits and {h["stream_id"] for h in hits} == {"added"}
            assert http.get("/api/v1/streams/added/thumbnail.jpg", params={"t": 2}).status_code == 200
        job = srv.proc.pid
    finally:
        code = srv.stop(timeout_s=120)
    assert code == 0, "".join(srv.output[-40:])
    import psutil

    assert not [p for p in psutil.process_iter(["cmdline"]) if "serve-index" in " ".join(p.info["cmdline"] or [])
                and str(tmp_path / "db") in " ".join(p.info["cmdline"] or [])], f"the serve-index child of {job} outlived it"
