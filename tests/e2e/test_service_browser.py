"""The page in a real browser: Debian's chromium (driven by Playwright) against `streamvl serve`
with an API key: unlock once, search, see thumbnails that really loaded, play a hit in place."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamvl.types import StreamInfo
from tests.e2e.service_support import Server, index_streams, shapes_video

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts"
KEY = "browser-test-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    streams = [StreamInfo(f"shapes-{i}", str(shapes_video(root / f"shapes-{i}.mp4", seed=i, seconds=30))) for i in range(3)]
    index_streams(str(root / "db"), streams)
    srv = Server(str(root / "db"), env={"STREAMVL_API_KEY": KEY}).start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def poll(page, script: str, timeout_s: float = 30.0):
    """Evaluate script until it returns a truthy value (page.wait_for_function would need eval,
    which the page's Content-Security-Policy forbids, rightly)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


LOADED = """() => { const imgs = [...document.querySelectorAll('.card img.thumb, .card img.strip')];
  return imgs.length >= 8 && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.length : 0; }"""


def test_search_see_and_play_a_hit(server, browser):
    ARTEFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.locator("#key-dialog").wait_for(state="visible")  # the server has a key: the page asks once
    page.fill("#key", KEY)
    page.click("#key-form button[type=submit]")
    page.locator("#key-dialog").wait_for(state="hidden")

    page.fill("#q", "a red star")
    page.press("#q", "Enter")
    assert poll(page, LOADED) >= 8  # thumbnails and strips decoded by the browser, not just requested
    assert "q=a+red+star" in page.url  # the search is in the URL: it can be shared
    cards = page.locator(".card")
    first = cards.nth(0)
    start, end = float(first.get_attribute("data-start")), float(first.get_attribute("data-end"))
    first.click()
    t = poll(page, f"""() => {{ const v = document.querySelector('.card.playing video');
        return v && !v.paused && v.readyState >= 2 && v.currentTime > {start} + 0.3 ? v.currentTime : 0; }}""")
    assert start <= t <= end + 0.5  # playing, from within the hit's segment
    page.screenshot(path=str(ARTEFACTS / "serve-browser.png"))

    page.reload()  # the key is kept for the tab's session and the search comes back from the URL
    assert poll(page, LOADED) >= 8
    assert not page.locator("#key-dialog").is_visible()
    page.click("#tab-streams")
    page.locator("#stream-rows tr").first.wait_for()
    assert page.locator("#stream-rows tr").count() == 3
    page.screenshot(path=str(ARTEFACTS / "serve-browser-streams.png"))
    assert not errors, errors
    page.close()
