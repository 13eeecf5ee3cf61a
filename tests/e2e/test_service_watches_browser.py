"""The events view in a real browser (Debian's chromium via Playwright) against `streamvl serve` with a
key: "Notify me" makes a watch of the search, events arrive over the SSE feed, the badge counts
them, and the feed shows each with a thumbnail that really loaded."""

from __future__ import annotations

import httpx
import pytest

from streamvl.storage.schema import CLIPS
from streamvl.storage.sink import TableSink
from streamvl.storage.store import Store
from streamvl.types import StreamInfo
from tests.e2e.service_support import Server, index_streams, shapes_video
from tests.e2e.test_service_browser import ARTEFACTS, KEY, browser, poll  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("events-browser")
    streams = [StreamInfo(f"cam{i}", str(shapes_video(root / f"cam{i}.mp4", seed=i, seconds=12))) for i in range(2)]
    db = str(root / "db")
    index_streams(db, streams)
    srv = Server(db, env={"STREAMVL_API_KEY": KEY}).start()
    yield db, srv
    assert srv.stop() == 0


def test_notify_me_then_live_events_with_badge_and_thumbnails(served, browser):  # noqa: F811
    db, srv = served
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(srv.url + "/")
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key", KEY)
    page.click("#key-form button[type=submit]")
    page.locator("#key-dialog").wait_for(state="hidden")
    page.fill("#q", "a red star")
    page.press("#q", "Enter")
    poll(page, "() => document.querySelectorAll('#grid .card').length")
    page.click("#notify")
    poll(page, "() => document.querySelector('#status').textContent.includes('Watching for')")
    with httpx.Client(base_url=srv.url, headers={"X-API-Key": KEY}) as http:
        [watch] = http.get("/api/v1/watches").json()
    assert watch["text"] == "a red star" and -1 <= watch["threshold"] <= 1

    # clips committed through the clips sink (a replay of the index) score against the watch;
    # a threshold of -1 makes every stream match, so the events are known: one per stream
    with httpx.Client(base_url=srv.url, headers={"X-API-Key": KEY}) as http:
        http.delete(f"/api/v1/watches/{watch['watch_id']}")
        http.post("/api/v1/watches", json={"text": "a red star", "threshold": -1.0, "name": "red star"}).raise_for_status()
    store, sink = Store(db), TableSink(db, CLIPS)
    for sid in ("cam0", "cam1"):
        sink.write(store.read(CLIPS, f"stream_id = '{sid}'"))
    assert poll(page, "() => document.querySelector('#event-badge').textContent === '2'")  # unseen, on the search view
    page.click("#tab-events")
    assert poll(page, """() => { const imgs = [...document.querySelectorAll('#event-feed .event img')];
        return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }""")
    assert page.locator("#event-badge").is_hidden()
    assert "red star" in page.locator("#event-feed").inner_text()
    page.screenshot(path=str(ARTEFACTS / "serve-events.png"))
    assert not errors, errors
    page.close()
