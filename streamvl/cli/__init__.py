"""The `streamvl` command: one module per command group, thin parsing and display over streamvl.api.

Errors from every command go through streamvl.cli.errors (one line, a stable exit code); nothing
heavy (torch, Ray, LanceDB, the lab) is imported until a command runs.
"""

from __future__ import annotations

import click

from streamvl.cli.demo import demo
from streamvl.cli.errors import ErrorHandlingGroup
from streamvl.cli.index import index
from streamvl.cli.plugins import plugins
from streamvl.cli.search import search
from streamvl.cli.serve import serve
from streamvl.cli.storage_cmds import check, repair
from streamvl.cli.streams import serve_index, streams
from streamvl.cli.training import evaluate, localise, rescore, train
from streamvl.cli.watch import watch


@click.group(cls=ErrorHandlingGroup)
@click.version_option(package_name="streamvl")
@click.option("--debug", is_flag=True, help="show the full traceback of an error (also STREAMVL_DEBUG=1)")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Index video streams with image-language models and search them by text.

    Exit codes: 0 ok, 1 unexpected error, 2 bad usage or config, 3 failed streams, 4 damaged
    database, 5 model or plugin failed to load."""
    ctx.meta["streamvl.debug"] = debug


for _command in (index, search, serve, streams, serve_index, plugins, demo, train, evaluate, rescore, localise, check,
                 repair, watch):
    main.add_command(_command)

__all__ = ["main"]
