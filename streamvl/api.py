"""The Python API: index sources, search them, list streams. The CLI and jobs call only this."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from streamvl.config import IndexConfig
from streamvl.types import Hit, StreamInfo

if TYPE_CHECKING:
    from streamvl.runtime import IndexReport
    from streamvl.search.sequences import SequenceResult


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
    """Text search over indexed clips; see streamvl.search.query.search for options."""
    from streamvl.search.query import search as _search

    return _search(text, db, **options)


def search_sequence(steps: Sequence[str], db: str, *, within: float, k: int = 10, **options) -> "SequenceResult":
    """Sequence search: clips matching steps[0], then steps[1] starting after it and at most `within`
    seconds after its end, then steps[2] ... on the same stream. Returns SequenceResult: hits
    (SequenceHit: stream, span, score = the weakest step's, each step's clip and score), best first,
    and whether the top k is proven (`certified`). Options as streamvl.search.query.search, plus
    min_score; see streamvl.search.sequences and docs/sequences.md."""
    from streamvl.search.sequences import search_sequence as _search_sequence

    return _search_sequence(list(steps), db, within=within, k=k, **options)


def streams(db: str) -> list[dict]:
    """Rows of the `streams` table: status, frames indexed, last committed pts, error, and for
    live streams lag, reconnects and gaps. Streams requested from a serve-index job but not
    picked up yet are listed with status "requested"."""
    from streamvl.storage.store import Store

    store = Store(db)
    rows = store.streams()
    have = {r["stream_id"] for r in rows}
    for req in store.requests():
        if req["stream_id"] not in have and req["action"] == "run":
            rows.append({"stream_id": req["stream_id"], "uri": req["uri"], "status": "requested", "frames_indexed": 0,
                         "last_committed_pts": None, "error": None, "updated_at": req["requested_at"]})
    return sorted(rows, key=lambda r: r["stream_id"])


# -- live indexing: a long-running serve-index job and its control rows --------------------------


def serve(config: IndexConfig, stop: Callable[[], bool] | None = None, poll_s: float = 1.0,
          on_start: Callable[[object], None] | None = None) -> "IndexReport":
    """Run a serve-index job on config.db until stop() is true (default: until interrupted).

    Streams are added and removed while it runs with add_stream/remove_stream (or the CLI's
    `streamvl streams add/remove`), which write the desired state to the `stream_requests` table;
    the job polls it every poll_s seconds. After a restart every requested stream resumes from its
    checkpoint. on_start(run) is called once the job is up (run.info["warning"]: the model warning).
    """
    from streamvl.runtime import serve_index

    return serve_index(config, stop or (lambda: False), poll_s, on_start)


def add_stream(db: str, uri: str, stream_id: str | None = None, fps: float | None = None,
               transport: str | None = None) -> str:
    """Ask the serve-index job on `db` to index `uri` (rtsp/tcp/udp/HLS URL or a file); returns its id.

    Adding a stream that exists already restarts it if it ended (from its checkpoint)."""
    from streamvl.errors import ConfigError
    from streamvl.sources import expand_sources
    from streamvl.storage.store import Store

    if transport not in (None, "udp", "tcp"):
        raise ConfigError(f"transport must be 'udp' or 'tcp', got {transport!r}", uri=uri)
    if fps is not None and not fps > 0:
        raise ConfigError(f"fps must be > 0, got {fps}", uri=uri)
    infos = expand_sources([uri], [stream_id] if stream_id else None)
    if len(infos) != 1:
        raise ConfigError(f"{uri!r} names {len(infos)} streams; add them one by one", uri=uri)
    info = infos[0]
    Store(db).request_stream(info.stream_id, info.uri, "run", fps=fps, transport=transport)
    return info.stream_id


def remove_stream(db: str, stream_id: str) -> None:
    """Ask the serve-index job on `db` to stop indexing a stream (the others keep running)."""
    from streamvl.errors import ConfigError
    from streamvl.storage.store import Store

    store = Store(db)
    known = {r["stream_id"]: r["uri"] for r in [*store.streams(), *store.requests()]}
    if stream_id not in known:
        raise ConfigError(f"no stream {stream_id!r} in {db}", stream_id=stream_id)
    store.request_stream(stream_id, known[stream_id], "remove")
