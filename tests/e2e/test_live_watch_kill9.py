"""A watch on a live RTSP camera, end to end, through a kill -9 of the indexing job.

A real camera (rtsp-server-perl fed by ffmpeg, tests/live_servers.py) loops a 10 s clip with one
4 s red episode; `streamvl serve-index` (its own local Ray) indexes it with a watch for red;
`streamvl serve` on the same database feeds an SSE client and POSTs to a webhook receiver, both on
127.0.0.1. While an event is open the whole indexing job is SIGKILLed; a fresh job resumes the
camera. Then:
  - the stored events are exactly what the event rules give over the committed clip rows (no
    duplicate key, none lost, the events from before the kill kept under their ids);
  - each event lies on one true red episode of the committed frames (read from their stored
    thumbnails' pixels), and each episode with a fully red clip has one event;
  - the SSE client got every event once, and the webhook receiver accepted every event once.
Runs with fresh ports every time (the camera's RTP ports included) and waits for the camera to
play before indexing (the camera's video has a 1 s GOP), so it can run again and again.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from streamvl.config import IndexConfig
from streamvl.search.watches import EventBuilder, Watch, WatchMatcher
from streamvl.storage.schema import CLIPS, FRAMES, sql_str
from streamvl.storage.store import Store
from streamvl.storage.watches import WatchTables
from tests.conftest import index_file
from tests.e2e.service_support import Server
from tests.e2e.test_live_kill9 import BIN, CONFIG, ENV, MODEL, _session, _tail, kill_job, start_job, wait_for
from tests.e2e.test_service_watches import Receiver
from tests.live_servers import RtspServer, have_rtsp_tools
from tests.videos import make_video

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200),
              pytest.mark.skipif(not have_rtsp_tools(), reason="needs Debian's rtsp-server-perl and ffmpeg (see .ci/run)")]
SID = "cam1"
QUIET_S = 2.0
RED = (220, 30, 30)
LOOP_S, EPISODE = 10.0, (2.0, 6.0)  # one red episode per loop of the camera's clip
FPS = 2.0  # the camera's sampling rate (CONFIG)
WINDOW = 4  # frames per clip window (CONFIG)


@pytest.fixture(autouse=True)
def sigterm_runs_the_cleanup():
    """A SIGTERM (`timeout 600 pytest ...`) ends the test through its `finally`, like Ctrl-C: the
    indexing jobs (their own sessions, with their local Ray), the camera and the server are stopped
    instead of outliving pytest, which SIGTERM would otherwise end on the spot."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


def camera_video(path: Path, seconds: float, red: tuple[tuple[float, float], ...]):
    """A static camera picture with red episodes, 25 fps, a keyframe every second."""
    return make_video(path, size=(160, 120), fps=25, seconds=seconds, gop=25, pattern="static",
                      episodes=tuple((a, b, RED) for a, b in red)).path


def reference_vectors(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unit clip embeddings of an all-red and a red-free camera clip (real decoder and encode stage)."""
    config = IndexConfig(db=str(tmp_path / "ref"), model=MODEL, sampling={"fps": FPS}, clips={"window": WINDOW, "stride": 2})
    out = []
    for name, red in (("red", ((0.0, 8.0),)), ("grey", ())):
        db = str(tmp_path / f"ref-{name}")
        index_file(camera_video(tmp_path / f"{name}.mp4", 8, red), db, config.model_copy(update={"db": db}))
        v = np.array(Store(db).read(CLIPS)["embedding"].to_pylist(), np.float32)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return out[0], out[1]


def recomputed(store: Store, watch: Watch) -> list[tuple[float, float, float]]:
    """The events the rules give over every committed clip row of the camera, in one pass."""
    rows = sorted(store.read(CLIPS, f"stream_id = {sql_str(SID)}").to_pylist(), key=lambda r: r["start"])
    emb = np.array([r["embedding"] for r in rows], np.float32)
    matches = WatchMatcher([watch]).match([r["stream_id"] for r in rows], [r["start"] for r in rows],
                                          [r["end"] for r in rows], [r["adapter"] for r in rows], emb)
    builder = EventBuilder(QUIET_S, keep=10_000)
    builder.feed(matches, {})
    return sorted((e["start"], e["end"], round(e["peak_score"], 5)) for evs in builder.events.values() for e in evs)


def red_runs(store: Store) -> list[tuple[float, float, int]]:
    """(first pts, last pts, frames) of each run of consecutive red frames among the committed frames,
    judged from each frame's stored thumbnail (the truth the watch is tested against)."""
    from PIL import Image

    frames = store.read(FRAMES, f"stream_id = {sql_str(SID)}", ["pts", "thumbnail"]).to_pylist()
    frames.sort(key=lambda f: f["pts"])
    assert frames and all(f["thumbnail"] for f in frames), "the live frames must carry thumbnails"
    runs: list[list[float]] = []
    prev_red, prev_pts = False, None
    for f in frames:
        rgb = np.asarray(Image.open(io.BytesIO(f["thumbnail"])).convert("RGB"), np.float32).mean((0, 1))
        red = rgb[0] > 170 and rgb[1] < 90 and rgb[2] < 90
        adjacent = prev_pts is not None and f["pts"] - prev_pts <= 1.5 / FPS
        if red and prev_red and adjacent:
            runs[-1].append(f["pts"])
        elif red:
            runs.append([f["pts"]])
        prev_red, prev_pts = red, f["pts"]
    return [(r[0], r[-1], len(r)) for r in runs]


def start_ready_job(db: Path, cfg: Path, log: Path, attempts: int = 6, timeout: float = 600.0) -> subprocess.Popen:
    """`serve-index` started and waited for until it serves (its "serving DB" line). A job that exits
    before it gets there (its local Ray timed out starting: raylet registration has a fixed 30 s
    limit, which a machine at load 100+ exceeds) is started again; what the test is about begins
    only once a job serves."""
    for attempt in range(1, attempts + 1):
        path = log.with_name(f"{log.stem}-start{attempt}{log.suffix}") if attempt > 1 else log
        job = start_job(db, cfg, path)
        deadline = time.monotonic() + timeout
        try:
            while job.poll() is None and time.monotonic() < deadline:
                if "serving " in path.read_text(errors="replace"):
                    return job
                time.sleep(0.5)
        except BaseException:  # interrupted while it starts (SIGTERM, Ctrl-C): the caller does not know it yet
            kill_job(job)
            raise
        left = kill_job(job)  # a job that exited may leave Ray processes in its session
        assert not left, f"processes of a failed serve-index still alive: {left}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"serve-index not serving after {timeout:.0f}s:\n{_tail(path)}")
        time.sleep(15.0)  # let the load that starved its Ray pass
    raise AssertionError(f"serve-index exited before serving in {attempts} attempts:\n{_tail(path)}")


class SseClient:
    """Reads /api/v1/events/stream in a thread from the start, as a browser's EventSource does: when
    the connection drops (a read timeout on a loaded machine), it reconnects with Last-Event-ID, so
    it must get every event exactly once across reconnects. Records every message (SSE id, event)."""

    def __init__(self, url: str) -> None:
        self.url, self.messages, self.errors = url, [], []
        self._stop = threading.Event()
        self._response = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            headers = {"Last-Event-ID": self.messages[-1][0]} if self.messages else {}
            try:
                self._read(headers)
            except Exception as exc:  # noqa: BLE001 (counted; the client reconnects)
                if not self._stop.is_set():
                    self.errors.append(exc)
                    time.sleep(1.0)

    def _read(self, headers: dict) -> None:
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(10.0, read=60.0)) as http, \
                http.stream("GET", "/api/v1/events/stream", headers=headers) as r:
            assert r.status_code == 200, r.status_code
            self._response = r
            msg: dict = {}
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("id: "):
                    msg["id"] = line[4:]
                elif line.startswith("data: "):
                    msg["data"] = json.loads(line[6:])
                elif line == "" and "data" in msg:
                    self.messages.append((msg["id"], msg["data"]))
                    msg = {}

    def event_ids(self) -> list[str]:
        return [d["event_id"] for _, d in self.messages]

    def close(self) -> None:
        """Stop reading: close the response under the reading thread, then join it."""
        self._stop.set()
        if self._response is not None:
            self._response.close()
        self.thread.join(timeout=70)
        assert not self.thread.is_alive(), "the SSE reader did not stop"


def test_live_watch_fires_once_per_episode_through_kill_9_to_sse_and_webhook(tmp_path):
    red, grey = reference_vectors(tmp_path)
    vec = red.mean(0) / np.linalg.norm(red.mean(0))
    lo, hi = float((grey @ vec).max()), float((red @ vec).min())
    assert hi > lo, "the model must tell red from the red-free picture for this test to mean anything"
    db, cfg = tmp_path / "db", tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    store = Store(str(db))
    tables = WatchTables(store.conn, store.reader, store.writer)
    receiver = Receiver(fail=1)
    wid = tables.add_watch("red", {"meanpool": vec}, threshold=(lo + hi) / 2, quiet_s=QUIET_S, webhook=receiver.url)
    [watch] = Watch.from_rows(tables.watch_rows())

    camera = RtspServer(tmp_path).start()
    logs = [tmp_path / "serve-index-1.log", tmp_path / "serve-index-2.log"]
    jobs, server, sse = [], None, None
    try:
        camera.push(camera_video(tmp_path / "cam.mp4", LOOP_S, (EPISODE,)), SID)  # returns once a client sees it play
        job = start_ready_job(db, cfg, logs[0])
        jobs.append(job)
        add = subprocess.run([str(BIN / "streamvl"), "streams", "add", camera.url(SID), "--db", str(db), "--id", SID,
                              "--transport", "udp", "--fps", str(FPS)], env=ENV, capture_output=True, text=True,
                             timeout=120)
        assert add.returncode == 0, add.stderr[-3000:]
        wait_for(lambda: CLIPS in store.table_names() and store.count(CLIPS) > 0, "the first clips", job, logs[0])
        server = Server(str(db), log=tmp_path / "serve.log").start(timeout_s=600)  # model warm-up on a loaded machine
        sse = SseClient(server.url)

        # kill -9 while an event is open (mid-episode): its rows may be committed without their event
        wait_for(lambda: any(e["status"] == "open" for e in tables.watch_events(wid)), "an open event", job, logs[0],
                 every=0.2)
        survivors = kill_job(job)
        assert not survivors, f"processes of the killed job still alive: {survivors}"
        before = tables.watch_events(wid)
        t_restart = time.time()
        job = start_ready_job(db, cfg, logs[1])
        jobs.append(job)

        def new_closed():
            evs = tables.watch_events(wid)
            return any(e["opened_at"].timestamp() >= t_restart and e["status"] == "closed" for e in evs)

        wait_for(new_closed, "an event opened and closed by the restarted job", job, logs[1], timeout=600)
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=120)
        assert job.returncode == 0, _tail(logs[1])

        events = tables.watch_events(wid)
        ids = {e["event_id"] for e in events}
        deadline = time.monotonic() + 60  # the server polls the table: let the feed and the webhook catch up
        while time.monotonic() < deadline and not (set(sse.event_ids()) >= ids and
                                                   {k for k, _ in receiver.accepted} >= ids):
            time.sleep(0.5)
    finally:
        for j in jobs:
            if j.poll() is None or _session(j):
                kill_job(j)
        if sse is not None:
            sse.close()
        if server is not None:
            assert server.stop() == 0, "".join(server.output)[-3000:]
        camera.stop()
        receiver.close()

    # exactly once: the stored events are the rules over the committed rows; the killed job's kept
    stored = sorted((e["start"], e["end"], round(e["peak_score"], 5)) for e in events)
    assert len({(e["stream_id"], e["start"]) for e in events}) == len(events)
    assert stored == recomputed(store, watch), _tail(logs[1])
    assert {b["event_id"] for b in before} <= ids
    assert any(e["opened_at"].timestamp() >= t_restart for e in events)

    # once per true episode (the clip windows blur each edge by up to a window)
    runs = red_runs(store)
    span = WINDOW / FPS
    for e in events:
        hits = [r for r in runs if r[0] - span <= e["end"] and e["start"] <= r[1] + 1 / FPS]
        assert len(hits) == 1, (e, runs)
    for r in runs:
        on = [e for e in events if r[0] - span <= e["end"] and e["start"] <= r[1] + 1 / FPS]
        assert len(on) <= 1, (r, events)
        if r[2] >= WINDOW:  # a fully red clip lies in this episode: it must have fired
            assert len(on) == 1, (r, events)

    # the push channels: every event once on the SSE feed, and accepted once by the webhook receiver
    assert sorted(sse.event_ids()) == sorted(ids), (sse.messages, events, sse.errors)  # once each, across reconnects
    assert len(sse.errors) <= 5, sse.errors
    accepted = [k for k, _ in receiver.accepted]
    assert sorted(accepted) == sorted(ids) and len(receiver.calls) > len(accepted)  # the first POST got a 503
    print(f"\n{len(events)} events ({len(before)} before the kill), {len(runs)} red episodes seen, "
          f"{len(sse.messages)} SSE messages ({len(sse.errors)} reconnects), {len(receiver.calls)} webhook calls")
