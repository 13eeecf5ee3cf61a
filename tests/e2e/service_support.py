"""Helpers of the service tests: a small real index (real decoding, the shipped model, the encode
stage and the store, without Ray) and a real `streamvl serve` process on a free 127.0.0.1 port."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from streamvl.config import IndexConfig
from streamvl.service.indexer import stop_process
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import StreamInfo

MODEL = "default"
READY = re.compile(r"streamvl serving .* on (http://\S+)")


def shapes_video(path: Path, seed: int, seconds: float = 40.0, size: int = 160) -> Path:
    """A shapes-world stream (coloured shapes that move, turn, appear and vanish) as an h264 mp4."""
    from streamvl.lab.synthetic import DOMAINS, sample_stream, write_video
    from streamvl.lab.synthetic.clips import iter_frames

    spec = sample_stream(seed, seconds, domain=DOMAINS["test"], width=size, height=size, fps=8.0)
    return write_video(path, (f for _, f in iter_frames(spec)), spec.fps)


def index_streams(db: str, streams: list[StreamInfo], *, fps: float = 2.0, window: int = 4, stride: int = 2,
                  live: dict[str, tuple[float, str]] | None = None, no_thumbnails: set[str] = frozenset()) -> None:
    """Index files through the real source and encode stage into db (as the runtime does, without Ray).

    live: streams to record as live: {id: (UTC epoch second of the first frame, the URI to record)},
    the frames carrying arrival times as a live source's do. no_thumbnails: streams indexed without
    stored thumbnails (as tables from before thumbnails are)."""
    from streamvl.pipeline.encode import EncodeStage
    from streamvl.sources import open_source

    config = IndexConfig(db=db, model=MODEL, sampling={"fps": fps}, clips={"window": window, "stride": stride})
    stage = EncodeStage(config)
    store = Store(db)
    for info in streams:
        t0, uri = (live or {}).get(info.stream_id, (None, info.uri))
        width = 0 if info.stream_id in no_thumbnails else config.sampling.thumbnail_width
        sampling = config.sampling.model_copy(update={"size": stage.model.image_size, "thumbnail_width": width})
        frames = 0
        with open_source(info, sampling) as source:
            for batch in source:
                if t0 is not None:
                    batch = dataclasses.replace(batch, wallclock=t0 + batch.pts)
                rows, clips, _ = stage.process([batch])
                store.upsert(FRAMES, rows)
                store.upsert(CLIPS, clips)
                frames += len(batch)
        store.record_stream(info.stream_id, uri, "done", frames_indexed=frames, model=stage.model.name,
                            live=t0 is not None, last_wallclock=None if t0 is None else t0 + frames / fps)


class Server:
    """`streamvl serve` in a child process; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, db: str, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.argv = [sys.executable, "-c", "from streamvl.cli import main; main()", "serve", "--db", db, "--port", "0", *args]
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.output: list[str] = []

    def start(self, timeout_s: float = 120.0) -> "Server":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            found = READY.search(line)
            if found:
                self.url = found.group(1)
                self._drain()
                return self
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        """Keep reading the child's stderr so it never blocks on a full pipe."""
        import threading

        def pump() -> None:
            for line in self.proc.stderr:
                self.output.append(line)

        threading.Thread(target=pump, daemon=True).start()

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kw)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, timeout_s)
        if self.log is not None:
            self.log.write_text("".join(self.output))
        return self.proc.returncode


def all_pages(client: httpx.Client, params: dict, *, method: str = "GET") -> list[list[dict]]:
    """Every page of a search, following next_cursor to the end."""
    pages, cursor = [], None
    for _ in range(10_000):  # bounded: a cursor that never ends fails the test instead of hanging
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get("/api/v1/search", params=query) if method == "GET" else client.post("/api/v1/search", json=query)
        r.raise_for_status()
        body = r.json()
        pages.append(body["hits"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ended")


def clip_rows(db: str, extra: list[str] = ()) -> list[dict]:
    """Every clip row: stream_id, start, end and the `extra` columns (no embeddings)."""
    import lancedb

    table = lancedb.connect(db).open_table(CLIPS)
    columns = ["stream_id", "start", "end", *[c for c in extra if c in table.schema.names]]
    return table.search().select(columns).limit(None).to_arrow().to_pylist()


def clip_scores(db: str, text: str) -> dict[tuple[str, float], float]:
    """(stream_id, start) -> cosine score of every clip for text, computed here by brute force."""
    from streamvl.search.query import query_vector
    from streamvl.storage.schema import embeddings_array
    import lancedb

    table = lancedb.connect(db).open_table(CLIPS).to_arrow()
    emb = embeddings_array(table["embedding"], table.schema.field("embedding").type.list_size)
    q = np.asarray(query_vector(text, db), np.float32)
    scores = emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    return {(s, t): float(x) for s, t, x in zip(table["stream_id"].to_pylist(), table["start"].to_pylist(), scores)}
