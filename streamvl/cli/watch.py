"""`streamvl watch` (add, list, remove, test): standing queries that fire events as clips are committed."""

from __future__ import annotations

import json

import click

from streamvl import api
from streamvl.cli.common import db_option, line


@click.group(name="watch")
def watch() -> None:
    """Standing queries: a watch scores every clip committed from now on and opens an event when a
    stream starts to match its text (see docs/watches.md)."""


@watch.command(name="add")
@click.argument("text")
@db_option()
@click.option("--stream", "streams", multiple=True, help="only these stream ids (repeatable; default: every stream)")
@click.option("--threshold", type=float, default=0.25, show_default=True, help="cosine score a window must reach")
@click.option("--webhook", help="POST each event here (JSON, Idempotency-Key header; needs `streamvl serve`)")
@click.option("--name", help="a short name (default: the text)")
@click.option("--quiet", "quiet_s", type=float, help="seconds without a match that close an event (default 4)")
@click.option("--adapter", "adapters", multiple=True, help="adapters to embed TEXT for (default: every indexed one)")
@click.option("--then", "then", multiple=True, help="a sequence watch: fires when this follows TEXT (repeatable, in order)")
@click.option("--within", type=float, help="with --then: the longest gap in seconds between one step and the next")
def add(text, db, streams, threshold, webhook, name, quiet_s, adapters, then, within) -> None:
    """Add a watch for TEXT (or for TEXT --then B ... --within S); prints its id."""
    wid = api.watch_add(db, text, streams=streams, threshold=threshold, webhook=webhook, name=name, quiet_s=quiet_s,
                        adapters=list(adapters) or None, then=list(then), within=within)
    click.echo(wid)


@watch.command(name="list")
@db_option()
@click.option("--all", "include_removed", is_flag=True, help="also removed watches")
@click.option("--json", "as_json", is_flag=True)
def list_(db, include_removed, as_json) -> None:
    """List watches: id, threshold, streams, name."""
    rows = api.watches(db, include_removed)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for w in rows:
        where = ",".join(w["streams"]) or "*"
        state = "" if w["active"] else "  (removed)"
        steps = f"  [{' -> '.join([w['text'], *w['then']])} within {w['within']:g}s]" if w.get("then") else ""
        line(f"{w['watch_id']}  {w['threshold']:.3f}  {where}  {w['name']}{steps}{state}")


@watch.command(name="remove")
@click.argument("watch_id")
@db_option()
def remove(watch_id, db) -> None:
    """Remove a watch (its events stay)."""
    api.watch_remove(db, watch_id)


@watch.command(name="test")
@click.argument("text")
@db_option()
@click.option("--adapter", default="meanpool", show_default=True)
@click.option("--stream", "streams", multiple=True, help="only these stream ids (repeatable)")
@click.option("--threshold", "thresholds", multiple=True, type=float, help="thresholds to try (default: score quantiles)")
@click.option("--quiet", "quiet_s", type=float, help="seconds without a match that close an event (default 4)")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=0))
@click.option("--then", "then", multiple=True, help="test a sequence watch: TEXT, then this (repeatable, in order)")
@click.option("--within", type=float, help="with --then: the longest gap in seconds between one step and the next")
def test(text, db, adapter, streams, thresholds, quiet_s, top, then, within) -> None:
    """Run TEXT (or TEXT --then B ... --within S) as a watch over what is indexed: events each threshold
    would have fired, and the top matches."""
    result = api.watch_test(db, text, adapter=adapter, streams=streams, thresholds=list(thresholds) or None,
                            quiet_s=quiet_s, top=top, then=list(then), within=within)
    line(f"{result.clips} clips scored")
    line("threshold  events")
    for th, n in sorted(result.counts.items()):
        line(f"{th:9.3f}  {n:6d}")
    if result.top:
        line("top matches:")
    for m in result.top:
        steps = "  " + " -> ".join(f"{s.text!r} {s.start:.2f}-{s.end:.2f} ({s.score:.4f})" for s in m.steps) \
            if getattr(m, "steps", ()) else ""
        line(f"{m.score:7.4f}  {m.stream_id}  {m.start:8.2f}-{m.end:<8.2f}{steps}")
