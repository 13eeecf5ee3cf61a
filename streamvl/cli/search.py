"""`streamvl search`: text -> the best matching segments of the indexed streams."""

from __future__ import annotations

import json

import click

from streamvl import api
from streamvl.cli.common import db_option, line, options
from streamvl.cli.errors import warn


@click.command()
@click.argument("text")
@db_option()
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1), help="segments to return (>= 1)")
@click.option("--stream", "stream_ids", multiple=True, help="only these stream ids (repeatable)")
@click.option("--start", type=float, help="only clips ending after this time (s)")
@click.option("--end", type=float, help="only clips starting before this time (s)")
@click.option("--adapter", default="meanpool", show_default=True)
@click.option("--model", help="model spec to embed the query with (default: the one that indexed --db)")
@click.option("--rerank", help="reranker name (see `streamvl plugins`)")
@click.option("--tag", "tags", multiple=True, help="only clips tagged with this entity (repeatable: all must match)")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="the adapter's trained checkpoint")
@click.option("--option", "adapter_options", multiple=True, metavar="KEY=VALUE", help="adapter option (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print [{stream_id, uri, start, end, score, peak}]")
@click.option("--server", help="ask a running `streamvl serve` at this URL (key from $STREAMVL_API_KEY) instead of --db")
@click.option("--then", "then", multiple=True, help="sequence: a later step's TEXT, after the previous step (repeatable)")
@click.option("--within", type=float, help="sequence: most seconds from one step's clip end to the next step's start")
def search(text, db, k, stream_ids, start, end, adapter, model, rerank, tags, checkpoint, adapter_options,
           as_json, server, then, within) -> None:
    """Search indexed clips by TEXT; adjacent matching windows merge into one segment.

    Use the adapter options (--checkpoint) the index was built with. Control characters in TEXT
    are dropped; a TEXT longer than the model's context is cut to fit (with a warning)."""
    if then or within is not None:
        _sequence([text, *then], db, within, k, stream_ids, start, end, adapter, model, rerank, tags,
                  options(adapter_options, checkpoint), as_json, server)
        return
    if server:
        from streamvl.service.client import search_cli

        hits = search_cli(server, text, k, stream_ids, start, end, adapter, tags,
                          rerank or checkpoint or adapter_options or model)
    else:
        hits = api.search(text, db, k=k, adapter=adapter, model=model, stream_ids=list(stream_ids) or None,
                          start=start, end=end, rerank=rerank, tags=list(tags) or None,
                          adapter_options=options(adapter_options, checkpoint))
        _warn_stored(db)
    if as_json:
        click.echo(json.dumps([h.as_dict() for h in hits], indent=2))
        return
    for h in hits:
        found_tags = h.extra.get("tags")
        line(f"{h.score:7.4f}  {h.stream_id}  {h.start:8.2f}-{h.end:<8.2f} {h.uri}"
             + (f"  [{', '.join(found_tags)}]" if found_tags else ""))


def _warn_stored(db: str) -> None:
    """The warning the index recorded (random weights), loud on every search."""
    from streamvl.search.query import open_store

    warn(open_store(db).meta().get("streamvl.warning"))


def _sequence(steps, db, within, k, stream_ids, start, end, adapter, model, rerank, tags, adapter_options, as_json,
              server) -> None:
    """`search A --then B --within S`: A, then B on the same stream (docs/sequences.md)."""
    from streamvl.errors import ConfigError

    if server:
        raise ConfigError("sequence queries (--then/--within) run in-process only (drop --server)")
    res = api.search_sequence(steps, db, within=within, k=k, adapter=adapter, model=model, rerank=rerank,
                              stream_ids=list(stream_ids) or None, start=start, end=end, tags=list(tags) or None,
                              adapter_options=adapter_options)
    _warn_stored(db)
    warn(None if res.certified else "candidate lists hit their cap: the top hits may be incomplete")
    if as_json:
        click.echo(json.dumps([h.as_dict() for h in res.hits], indent=2))
        return
    for h in res.hits:
        line(f"{h.score:7.4f}  {h.stream_id}  {h.start:8.2f}-{h.end:<8.2f} {h.uri}  steps "
             + " > ".join(f"{s.start:.2f}-{s.end:.2f} ({s.score:.3f})" for s in h.steps))
