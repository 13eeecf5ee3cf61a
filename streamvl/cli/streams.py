"""`streamvl streams` (list, add, remove) and `streamvl serve-index`, the live job they control."""

from __future__ import annotations

import json
import time

import click

from streamvl import api
from streamvl.cli.common import db_option, line
from streamvl.cli.errors import warn
from streamvl.cli.index import indexing_config, indexing_options


@click.group(name="streams", invoke_without_command=True)
@db_option()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def streams(ctx, db, as_json) -> None:
    """List streams with status, frames, last committed pts, lag and errors; `add`/`remove` control
    a running `serve-index` job."""
    if ctx.invoked_subcommand is not None:
        return
    states = api.streams(db)
    now = time.time()
    # lag now: how far the committed data of a live stream is behind real time
    lags = [None if s.last_wallclock is None or not s.status.active else now - s.last_wallclock for s in states]
    if as_json:
        rows = [stream_dict(s) | {"lag_now_s": lag} for s, lag in zip(states, lags)]
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for s, lag in zip(states, lags):
        line(stream_line(s, lag))
        if s.error:
            line(f"        {s.error}", fg="red")


# What a request tells of a stream the serve-index job has not picked up yet (it has no row).
_REQUESTED_KEYS = ("stream_id", "uri", "status", "frames_indexed", "last_committed_pts", "error", "updated_at")


def stream_dict(state) -> dict:
    """A StreamState as `streams --json` shows it: its `streams` row (column -> value)."""
    from streamvl.storage.schema import stream_row
    from streamvl.types import Status

    row = stream_row(state)
    return {k: row[k] for k in _REQUESTED_KEYS} if state.status is Status.REQUESTED else row


def stream_line(s, lag_now: float | None) -> str:
    """One line of `streams` for a StreamState."""
    pts = "-" if s.last_committed_pts is None else f"{s.last_committed_pts:.2f}"
    text = f"{s.status.value:12} {s.stream_id}  frames={s.frames_indexed} last_pts={pts}"
    if s.live:
        lag = "-" if lag_now is None else f"{lag_now:.1f}s"
        text += f" lag={lag} reconnects={s.reconnects or 0} gaps={s.gaps or 0}"
        if s.gap_total_s:
            text += f" ({s.gap_total_s:.1f}s)"
    if s.frames_skipped:
        text += f" skipped={s.frames_skipped}/{s.frames_indexed}"
    if s.restarts:
        text += f" restarts={s.restarts}"
    return f"{text}  {s.uri}"


@streams.command(name="add")
@click.argument("uri")
@db_option()
@click.option("--id", "stream_id", help="stream id (default: derived from the URI)")
@click.option("--fps", type=float, help="frames sampled per second for this stream")
@click.option("--transport", type=click.Choice(["udp", "tcp"]), help="rtsp lower transport")
def streams_add(uri, db, stream_id, fps, transport) -> None:
    """Add URI to the serve-index job on --db (it starts within a poll interval)."""
    sid = api.add_stream(db, uri, stream_id=stream_id, fps=fps, transport=transport)
    line(f"requested {sid}  {uri}")


@streams.command(name="remove")
@click.argument("stream_id")
@db_option()
def streams_remove(stream_id, db) -> None:
    """Stop indexing STREAM_ID in the serve-index job on --db; the other streams keep running."""
    api.remove_stream(db, stream_id)
    line(f"removal requested {stream_id}")


@click.command(name="serve-index")
@indexing_options
@click.option("--poll", "poll_s", type=float, default=1.0, show_default=True, help="seconds between control polls")
def serve_index(db, fps, model, precision, adapters, window, stride, adapter_options, ray_address, config_path,
                poll_s) -> None:
    """Index live streams continuously until interrupted (SIGINT/SIGTERM).

    Streams are added and removed while it runs: `streamvl streams add URI` / `streams remove ID`.
    Every stream resumes from its committed checkpoint when the job is restarted."""
    import signal

    stopping: list[int] = []
    config = indexing_config(config_path, db, fps, model, precision, adapters, window, stride, adapter_options,
                             ray_address)

    def started(run) -> None:  # after Ray started, which installs its own handlers
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stopping.append(signum))
        warn(run.info["warning"])
        click.echo(f"serving {config.db}: add streams with `streamvl streams add URI --db {config.db}`", err=True)

    report = api.serve(config, stop=lambda: bool(stopping), poll_s=poll_s, on_start=started)
    warn(report.warning)
    for s in report.streams:
        line(f"{s.status:12} {s.stream_id}  frames={s.frames} reconnects={s.reconnects} restarts={s.restarts}")
