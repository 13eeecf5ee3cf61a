"""`streamvl plugins`: what is installed and what it provides."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json) -> None:
    """List installed plugins, the hooks they implement, and the adapters/columns/rerankers found."""
    from streamvl.plugins.manager import Plugins

    info = Plugins().describe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for p in info["plugins"]:
        click.echo(f"plugin {p['name']} ({p['module']}): {', '.join(p['hooks'])}")
    for kind in ("adapters", "clip_columns", "rerankers"):
        click.echo(f"{kind}: " + (", ".join(info[kind]) or "none"))
