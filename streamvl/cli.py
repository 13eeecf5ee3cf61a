"""The `streamvl` command: thin parsing and display over streamvl.api."""

from __future__ import annotations

import json
import sys

import click

from streamvl import api
from streamvl.config import DEFAULT_DB, load_config
from streamvl.errors import StreamvlError

EXIT_STREAMS_FAILED = 3


def _fail(exc: StreamvlError) -> None:
    click.secho(str(exc), fg="red", err=True)
    sys.exit(2)


def _warn(message: str | None) -> None:
    if message:
        click.secho(f"WARNING: {message}", fg="yellow", bold=True, err=True)


@click.group()
@click.version_option(package_name="streamvl")
def main() -> None:
    """Index video streams with image-language models and search them by text."""


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--db", default=DEFAULT_DB, show_default=True, help="LanceDB path or URI")
@click.option("--fps", type=float, help="frames sampled per second (default 1)")
@click.option("--model", help="model spec: default, ARCH@TAG, ARCH@PATH, ARCH@random[:SEED]")
@click.option("--adapter", "adapters", multiple=True, help="adapter name (repeatable; default meanpool)")
@click.option("--window", type=int, help="frames per clip window (default 8)")
@click.option("--stride", type=int, help="frames between clip windows (default 4)")
@click.option("--id", "ids", multiple=True, help="stream id for each source, in order")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML config file")
@click.option("--json", "as_json", is_flag=True, help="print the run report as JSON")
def index(sources, db, fps, model, adapters, window, stride, ids, config_path, as_json) -> None:
    """Index SOURCES (files, directories, globs, URLs) into the database."""
    from tqdm import tqdm

    overrides = {"db": db, "model": model, "adapters": list(adapters) or None, "sampling.fps": fps,
                 "clips.window": window, "clips.stride": stride}
    try:
        config = load_config(config_path, overrides)
        streams = api.discover(sources, ids)
        total = api.expected_frames(streams, config.sampling.fps)
        with tqdm(total=total, unit="frame", desc="indexing", disable=as_json or None) as bar:
            report = api.index(streams, config, on_frames=bar.update)
    except StreamvlError as exc:
        _fail(exc)
    _warn(report.warning)
    if as_json:
        click.echo(json.dumps({"model": report.model, "warning": report.warning, "seconds": report.seconds,
                               "streams": [vars(s) for s in report.streams]}, indent=2))
    else:
        for s in report.streams:
            line = f"{s.status:6} {s.stream_id}  frames={s.frames} clips={s.clips}  {s.uri}"
            click.secho(line + (f"\n       {s.error}" if s.error else ""), fg="red" if s.error else None)
        click.echo(f"{report.frames} frames from {len(report.streams)} streams in {report.seconds:.1f}s -> {config.db}")
    if report.failed:
        sys.exit(EXIT_STREAMS_FAILED)


@main.command()
@click.argument("text")
@click.option("--db", default=DEFAULT_DB, show_default=True)
@click.option("--k", default=10, show_default=True, help="segments to return")
@click.option("--stream", "stream_ids", multiple=True, help="only these stream ids (repeatable)")
@click.option("--start", type=float, help="only clips ending after this time (s)")
@click.option("--end", type=float, help="only clips starting before this time (s)")
@click.option("--adapter", default="meanpool", show_default=True)
@click.option("--rerank", help="reranker name (see `streamvl plugins`)")
@click.option("--json", "as_json", is_flag=True, help="print [{stream_id, uri, start, end, score}]")
def search(text, db, k, stream_ids, start, end, adapter, rerank, as_json) -> None:
    """Search indexed clips by TEXT; adjacent matching windows merge into one segment."""
    from streamvl.store import Store

    try:
        _warn(Store(db).meta().get("streamvl.warning"))
        hits = api.search(text, db, k=k, adapter=adapter, stream_ids=list(stream_ids) or None,
                          start=start, end=end, rerank=rerank)
    except StreamvlError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([h.as_dict() for h in hits], indent=2))
        return
    for h in hits:
        click.echo(f"{h.score:7.4f}  {h.stream_id}  {h.start:8.2f}-{h.end:<8.2f} {h.uri}")


@main.command(name="streams")
@click.option("--db", default=DEFAULT_DB, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def streams_cmd(db, as_json) -> None:
    """List indexed streams with status, frames indexed, last committed pts and errors."""
    try:
        rows = api.streams(db)
    except StreamvlError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        pts = "-" if r.get("last_committed_pts") is None else f"{r['last_committed_pts']:.2f}"
        click.echo(f"{r['status']:7} {r['stream_id']}  frames={r['frames_indexed']} last_pts={pts}  {r['uri']}")
        if r.get("error"):
            click.secho(f"        {r['error']}", fg="red")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json) -> None:
    """List installed plugins, the hooks they implement, and the adapters/columns/rerankers found."""
    from streamvl.plugins import Plugins

    try:
        info = Plugins().describe()
    except StreamvlError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for p in info["plugins"]:
        click.echo(f"plugin {p['name']} ({p['module']}): {', '.join(p['hooks'])}")
    for kind in ("adapters", "clip_columns", "rerankers"):
        click.echo(f"{kind}: " + (", ".join(info[kind]) or "none"))
