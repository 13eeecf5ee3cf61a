"""The Python API: index sources, search them, list streams. The CLI and jobs call only this."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from streamvl.config import IndexConfig
from streamvl.types import Hit, StreamInfo

if TYPE_CHECKING:
    from streamvl.runtime import IndexReport


def discover(inputs: Sequence[str], ids: Sequence[str] | None = None) -> list[StreamInfo]:
    """Expand files, directories, globs and URLs into streams with deterministic ids."""
    from streamvl.sources import expand_sources

    return expand_sources(list(inputs), list(ids) if ids else None)


def expected_frames(streams: Sequence[StreamInfo], fps: float) -> int | None:
    """Frames a run will sample, when every stream has a known duration (for progress bars)."""
    if not streams or any(s.duration is None for s in streams):
        return None
    return sum(int(s.duration * fps) + 1 for s in streams)


def index(
    streams: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None = None
) -> "IndexReport":
    """Index streams into config.db on Ray (local, or the cluster in RAY_ADDRESS)."""
    from streamvl.runtime import run_index

    return run_index(streams, config, on_frames)


def search(text: str, db: str, **options) -> list[Hit]:
    """Text search over indexed clips; see streamvl.query.search for options."""
    from streamvl.query import search as _search

    return _search(text, db, **options)


def streams(db: str) -> list[dict]:
    """Rows of the `streams` table: status, frames indexed, last committed pts, error."""
    from streamvl.store import Store

    return Store(db).streams()
