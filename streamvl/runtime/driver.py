"""The Ray wiring: connect to Ray, and run an indexing Run on Ray actors (RayBackend).

The run itself (streamvl.runtime.engine) is plain Python; this module only chooses its backend
and its store, and owns the one `ray.init` call.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import ray

from streamvl.config import IndexConfig
from streamvl.runtime.engine import Run
from streamvl.runtime.ray_backend import RayBackend
from streamvl.runtime.report import IndexReport
from streamvl.storage.store import Store
from streamvl.types import StreamInfo
from streamvl.runtime.cluster import connect


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS (set under `ray job submit`) or start a local instance."""
    if not ray.is_initialized():
        connect()  # streamvl.runtime.cluster: RAY_ADDRESS if set, else a private local Ray on 127.0.0.1


class IndexRun(Run):
    """A Run on Ray actors over the LanceDB tables of config.db; actors start in `start()`."""

    backend: RayBackend

    def __init__(self, sources: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None = None):
        super().__init__(sources, config, on_frames, backend=RayBackend(config), store=Store(config.db, storage=config.storage))

    @property
    def encoder(self):
        return self.backend.encoder

    @property
    def sinks(self) -> dict[str, object]:
        """The current sink actors by table."""
        return self.backend.sinks.current

    @property
    def sink_recycles(self) -> int:
        return self.backend.sinks.recycles

    @property
    def sink_recycle_failures(self) -> int:
        return self.backend.sinks.failures


def run_index(sources: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None = None) -> IndexReport:
    """Index `sources` into config.db through Ray actors; a failing stream never stops the others."""
    ensure_ray()
    run = IndexRun(sources, config, on_frames)
    try:
        return run.start().run()
    finally:
        run.close()


def serve_index(config: IndexConfig, stop: Callable[[], bool], poll_s: float = 1.0,
                on_start: Callable[[IndexRun], None] | None = None) -> IndexReport:
    """A long-running job on config.db: streams come and go through `stream_requests` rows.

    on_start(run) is called once Ray and the actors are up (e.g. to show the model warning and
    to install signal handlers, which ray.init would otherwise replace)."""
    ensure_ray()
    run = IndexRun([], config, None)
    try:
        run.start()
        if on_start is not None:
            on_start(run)
        return run.serve(stop, poll_s)
    finally:
        run.close()
