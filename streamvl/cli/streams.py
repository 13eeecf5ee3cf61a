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
    rows = api.streams(db)
    now = time.time()
    for r in rows:  # lag now: how far the committed data of a live stream is behind real time
        wall = r.get("last_wallclock")
        r["lag_now_s"] = None if wall is None or r["status"] not in ("running", "reconnecting") else now - wall
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        line(stream_line(r))
        if r.get("error"):
            line(f"        {r['error']}", fg="red")


def stream_line(r: dict) -> str:
    pts = "-" if r.get("last_committed_pts") is None else f"{r['last_committed_pts']:.2f}"
    text = f"{r['status']:12} {r['stream_id']}  frames={r['frames_indexed']} last_pts={pts}"
    if r.get("live"):
        lag = "-" if r.get("lag_now_s") is None else f"{r['lag_now_s']:.1f}s"
        text += f" lag={lag} reconnects={r.get('reconnects') or 0} gaps={r.get('gaps') or 0}"
        if r.get("gap_total_s"):
            text += f" ({r['gap_total_s']:.1f}s)"
    if r.get("frames_skipped"):
        text += f" skipped={r['frames_skipped']}/{r['frames_indexed']}"
    if r.get("restarts"):
        text += f" restarts={r['restarts']}"
    return f"{text}  {r['uri']}"


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
