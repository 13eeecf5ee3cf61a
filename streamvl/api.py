"""The Python API: index sources, search them, list streams. The CLI and jobs call only this."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from streamvl import inputs as checks
from streamvl.config import IndexConfig
from streamvl.errors import ConfigError
from streamvl.types import Hit, Status, StreamInfo, StreamState

if TYPE_CHECKING:
    from streamvl.runtime import IndexReport
    from streamvl.sources.discover import Discovery, FailedInput
    from streamvl.storage.check import CheckReport
    from streamvl.storage.repair import RepairReport
    from streamvl.search.sequences import SequenceResult


def discover(inputs: Sequence[str], ids: Sequence[str] | None = None) -> list[StreamInfo]:
    """Expand files, directories, globs and URLs into streams with deterministic ids (strict: a
    missing path or an empty folder raises SourceError; see `scan` for the lenient form)."""
    from streamvl.sources import expand_sources

    return expand_sources(list(inputs), list(ids) if ids else None)


def scan(inputs: Sequence[str], ids: Sequence[str] | None = None) -> "Discovery":
    """Like `discover`, but every input fails alone: .streams to index, .failed inputs (missing,
    unreadable, not media: give them to `index(failed=...)` to record), .warnings for folders or
    globs with nothing to index and .notes naming the files a folder skipped."""
    from streamvl.sources import scan as _scan

    return _scan(list(inputs), list(ids) if ids else None)


def expected_frames(streams: Sequence[StreamInfo], fps: float) -> int | None:
    """Frames a run will sample, when every stream has a known duration (for progress bars)."""
    if not streams or any(s.duration is None for s in streams):
        return None
    return sum(int(s.duration * fps) + 1 for s in streams)


def check_index_config(config: IndexConfig) -> None:
    """What can be checked before Ray starts: the database can be written, the model's weights
    file and the adapters' checkpoints are there and readable."""
    checks.writable_db(config.db, config.storage)
    checks.model_spec(config.model)
    checks.adapter_checkpoints(config.adapter_options)


def index(
    streams: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None = None,
    failed: Sequence["FailedInput"] = (),
) -> "IndexReport":
    """Index streams into config.db on Ray: config.ray_address, else RAY_ADDRESS, else a private local
    Ray (streamvl.runtime.cluster). `failed` inputs (from `scan`) are recorded as those streams'
    errors in the `streams` table and the report; the others are indexed all the same."""
    check_index_config(config)
    if failed:
        _record_failed(config, failed)
    if not streams:  # nothing to run: no Ray
        from streamvl.runtime import IndexReport

        return IndexReport(_failed_reports(failed), config.model, None, 0.0)
    from streamvl.runtime import run_index

    report = _on_ray(config, lambda: run_index(streams, config, on_frames))
    report.streams.extend(_failed_reports(failed))
    return report


def _on_ray(config: IndexConfig, work: Callable[[], "IndexReport"]) -> "IndexReport":
    """Connect as config.ray_address says, run, and turn a Ray error that carries a streamvl error
    (a model that failed to load inside the encode actor) into that error."""
    from streamvl.runtime.cluster import connect, typed_error

    connect(config.ray_address)
    try:
        return work()
    except Exception as exc:  # a Ray error carrying a streamvl error is also an instance of it: unwrap it
        typed = typed_error(exc)
        if typed is None or typed is exc:
            raise
        raise typed from exc


def _record_failed(config: IndexConfig, failed: Sequence["FailedInput"]) -> None:
    """Mark inputs that cannot be read as failed streams. A stream indexed before keeps its counts and
    checkpoint (its rows are still in the tables), so it resumes once the file is back."""
    import dataclasses

    from streamvl.storage.store import Store

    store = Store(config.db, storage=config.storage)
    for f in failed:
        stored = store.stream_state(f.stream_id)
        if stored is not None and stored.uri == f.uri:
            state = dataclasses.replace(stored, status=Status.ERROR, error=f.error, model=stored.model or config.model)
        else:
            state = StreamState(f.stream_id, f.uri, Status.ERROR, error=f.error, model=config.model)
        store.record_state(state)


def _failed_reports(failed: Sequence["FailedInput"]) -> list:
    from streamvl.runtime import StreamReport

    return [StreamReport(f.stream_id, f.uri, status="error", error=f.error) for f in failed]


def search(text: str, db: str, **options) -> list[Hit]:
    """Text search over indexed clips; see streamvl.search.query.search for options.

    Checked first: the database exists (nothing is created), k >= 1, the query is not blank
    (control characters become spaces), an adapter checkpoint is readable. A query longer than
    the model's text context is cut to fit, with an InputWarning."""
    import warnings

    from streamvl.models.textonly import tokenizer
    from streamvl.search.query import search as _search

    checks.existing_db(db)
    checks.search_k(options.get("k", 10))
    text = checks.search_text(text)
    if options.get("model"):
        checks.model_spec(options["model"])
    checkpoint = (options.get("adapter_options") or {}).get("checkpoint")
    if checkpoint:
        checks.adapter_checkpoint(str(checkpoint), options.get("adapter", "meanpool"))
    spec = options.get("model") or checks.indexed_model(
        db, ", or give the model to embed the query with (--model SPEC; Python: model=SPEC)")
    text, warning = checks.fit_context(text, tokenizer(spec))
    if warning:
        warnings.warn(warning, checks.InputWarning, stacklevel=2)
    return _search(text, db, **options)


def search_sequence(steps: Sequence[str], db: str, *, within: float, k: int = 10, **options) -> "SequenceResult":
    """Sequence search: clips matching steps[0], then steps[1] starting after it and at most `within`
    seconds after its end, then steps[2] ... on the same stream. Returns SequenceResult: hits
    (SequenceHit: stream, span, score = the weakest step's, each step's clip and score), best first,
    and whether the top k is proven (`certified`). Options as streamvl.search.query.search, plus
    min_score; see streamvl.search.sequences and docs/sequences.md."""
    from streamvl.search.sequences import search_sequence as _search_sequence

    checks.existing_db(db)
    checks.search_k(k)
    steps = [checks.search_text(s) for s in steps]
    return _search_sequence(steps, db, within=within, k=k, **options)


def streams(db: str) -> list[StreamState]:
    """Every stream's state, by id: status, frames indexed, last committed pts, error, and for
    live streams lag, reconnects and gaps. Streams requested from a serve-index job but not
    picked up yet are listed with status Status.REQUESTED."""
    from streamvl.storage.store import Store

    checks.existing_db(db)
    store = Store(db)
    states = store.stream_states()
    have = {s.stream_id for s in states}
    for req in store.requests():
        if req["stream_id"] not in have and req["action"] == "run":
            states.append(StreamState(req["stream_id"], req["uri"], Status.REQUESTED, updated_at=req["requested_at"]))
    return sorted(states, key=lambda s: s.stream_id)


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

    check_index_config(config)
    return _on_ray(config, lambda: serve_index(config, stop or (lambda: False), poll_s, on_start))


def add_stream(db: str, uri: str, stream_id: str | None = None, fps: float | None = None,
               transport: str | None = None) -> str:
    """Ask the serve-index job on `db` to index `uri` (rtsp/tcp/udp/HLS URL or a file); returns its id.

    Adding a stream that exists already restarts it if it ended (from its checkpoint)."""
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
    from streamvl.storage.store import Store

    checks.existing_db(db)
    store = Store(db)
    known = {s.stream_id: s.uri for s in store.stream_states()} | {r["stream_id"]: r["uri"] for r in store.requests()}
    if stream_id not in known:
        raise ConfigError(f"no stream {stream_id!r} in {db}", stream_id=stream_id)
    store.request_stream(stream_id, known[stream_id], "remove")


# -- verify and repair a database (streamvl.storage.check / repair) -------------------------------


def check(db: str, storage: Any = None) -> "CheckReport":
    """Verify every table of a database, local or on an object store (versions, data files,
    indices), and the resume ledger against the rows; reads only. `report.lines()` has one
    verdict per table. storage: the config's [storage] table (else the standard variables)."""
    from streamvl.storage.check import check as run_check

    checks.existing_db(db, storage)
    return run_check(db, storage)


def repair(db: str, force: bool = False, storage: Any = None) -> "RepairReport":
    """Restore damaged tables to their newest readable version, rebuild lost indices and re-queue
    the streams whose rows were lost. Refuses while a writer looks live unless force."""
    from streamvl.storage.repair import repair as run_repair

    checks.existing_db(db, storage)
    return run_repair(db, force=force, storage=storage)
# -- watches: standing queries over what gets committed (streamvl.search.watches) ----------------


def _watch_tables(db: str, create: bool = False):
    from streamvl.search.query import open_store
    from streamvl.storage.watches import WatchTables

    if not create:
        checks.existing_db(db)
    store = open_store(str(db))
    return WatchTables.of(store)


def _indexed_adapters(db: str) -> list[str]:
    from streamvl.search.query import open_store
    from streamvl.storage.schema import CLIPS

    table = open_store(str(db)).read(CLIPS, columns=["adapter"])
    return sorted(set(table["adapter"].to_pylist())) if table.num_rows else ["meanpool"]


def watch_add(db: str, text: str, *, streams: Sequence[str] = (), threshold: float = 0.25, webhook: str | None = None,
              name: str | None = None, adapters: Sequence[str] | None = None, quiet_s: float | None = None,
              model: str | None = None, adapter_options: dict | None = None, then: Sequence[str] = (),
              within: float | None = None) -> str:
    """Add a watch on `db`: TEXT embedded once per adapter (default: every adapter in the clips table);
    every clip row committed from now on is scored against it. Returns the watch id.

    then (with within, seconds): a sequence watch, firing when each `then` text follows the step
    before it within `within` seconds on one stream (streamvl.search.sequence_watches)."""
    from streamvl.search.watches import embed_watch_texts

    checks.existing_db(db)
    text = checks.search_text(text)
    if then or within is not None:
        return _sequence_watch_add(db, [text, *then], within, streams=streams, threshold=threshold, webhook=webhook,
                                   name=name, adapters=adapters, quiet_s=quiet_s, model=model,
                                   adapter_options=adapter_options)
    _check_watch_options(threshold, webhook, quiet_s)
    [vectors] = embed_watch_texts([text], db, list(adapters or _indexed_adapters(db)), model=model,
                                  adapter_options=adapter_options)
    return _watch_tables(db).add_watch(text, vectors, name=name, streams=list(streams), threshold=threshold,
                                       webhook=webhook, quiet_s=quiet_s)


def _sequence_watch_add(db: str, texts: list[str], within: float | None, *, streams, threshold, webhook, name,
                        adapters, quiet_s, model, adapter_options) -> str:
    """watch_add for a sequence: every step embedded per adapter (one text-tower call per adapter)."""
    from streamvl.search.sequences import check_query
    from streamvl.search.watches import embed_watch_texts

    texts = [texts[0], *(checks.search_text(t) for t in texts[1:])]
    check_query(len(texts), within, 1)
    _check_watch_options(threshold, webhook, quiet_s)
    adapters = list(adapters or _indexed_adapters(db))
    per_text = embed_watch_texts(texts, db, adapters, model=model, adapter_options=adapter_options)
    vectors = {a: [v[a] for v in per_text] for a in adapters}
    return _watch_tables(db).add_sequence_watch(texts, vectors, within_s=float(within), name=name, streams=list(streams),
                                                threshold=threshold, webhook=webhook, quiet_s=quiet_s)


def _check_watch_options(threshold: float, webhook: str | None, quiet_s: float | None) -> None:
    if not -1.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold is a cosine score in [-1, 1], got {threshold}")
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise ConfigError(f"webhook must be an http(s) URL, got {webhook!r}")
    if quiet_s is not None and not quiet_s >= 0:
        raise ConfigError(f"quiet_s must be >= 0, got {quiet_s}")


_SEQUENCE_COLUMNS = ("embedding", "adapter", "then_texts", "then_embeddings", "within_s")


def watches(db: str, include_removed: bool = False) -> list[dict]:
    """The watches of `db`, one dict per watch (adapters listed; no embeddings), oldest first.
    A sequence watch lists its later steps as `then` and its gap as `within` (a plain one: [], None)."""
    by_id: dict[str, dict] = {}
    for r in _watch_tables(db).watch_rows(active_only=not include_removed):
        w = by_id.setdefault(r["watch_id"], {k: v for k, v in r.items() if k not in _SEQUENCE_COLUMNS}
                             | {"adapters": [], "then": list(r.get("then_texts") or []), "within": r.get("within_s")})
        w["adapters"].append(r["adapter"])
    return list(by_id.values())


def watch_remove(db: str, watch_id: str) -> None:
    """Deactivate a watch (its events stay); ConfigError if no active watch has this id."""
    if not _watch_tables(db).remove_watch(watch_id):
        raise ConfigError(f"no active watch {watch_id!r} in {db}")


def watch_events(db: str, watch_id: str | None = None, since=None) -> list[dict]:
    """Events of every watch (or one), opened at or after `since` (UTC datetime or epoch s), in feed order."""
    return _watch_tables(db).watch_events(watch_id, since)


def watch_test(db: str, text: str, *, adapter: str = "meanpool", thresholds: Sequence[float] | None = None,
               quiet_s: float | None = None, streams: Sequence[str] = (), top: int = 5,
               model: str | None = None, adapter_options: dict | None = None, then: Sequence[str] = (),
               within: float | None = None):
    """Run TEXT as a watch over what `db` already holds: events per threshold and the best clips
    (streamvl.search.watches.DryRun), to choose a threshold from your own data. Reads every clip
    row of the adapter (and streams): a full scan, meant for an interactive check. With then and
    within: the sequence watch (its top are the best chains, with each step)."""
    import numpy as np

    from streamvl.search.query import open_store
    from streamvl.search.watches import DEFAULT_QUIET_S, dry_run, embed_watch_texts
    from streamvl.storage.schema import CLIPS, clip_filter

    checks.existing_db(db)
    text = checks.search_text(text)
    texts = [text, *(checks.search_text(t) for t in then)]
    if then or within is not None:
        from streamvl.search.sequences import check_query

        check_query(len(texts), within, 1)
    per_text = embed_watch_texts(texts, db, [adapter], model=model, adapter_options=adapter_options)
    vectors = per_text[0]
    rows = open_store(str(db)).read(CLIPS, clip_filter(adapter, list(streams) or None),
                                    ["stream_id", "start", "end", "embedding"])
    n = rows.num_rows
    emb = (rows["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(n, -1)
           if n else np.zeros((0, len(vectors[adapter])), np.float32))
    if len(texts) > 1:
        from streamvl.search.sequence_watches import sequence_dry_run

        return sequence_dry_run(rows["stream_id"].to_pylist() if n else [], rows["start"].to_pylist() if n else [],
                                rows["end"].to_pylist() if n else [], emb, [v[adapter] for v in per_text], texts,
                                within_s=float(within), thresholds=thresholds, top=top, adapter=adapter,
                                quiet_s=DEFAULT_QUIET_S if quiet_s is None else quiet_s)
    return dry_run(rows["stream_id"].to_pylist() if n else [], rows["start"].to_pylist() if n else [],
                   rows["end"].to_pylist() if n else [], emb, vectors[adapter], adapter=adapter, thresholds=thresholds,
                   quiet_s=DEFAULT_QUIET_S if quiet_s is None else quiet_s, top=top)
