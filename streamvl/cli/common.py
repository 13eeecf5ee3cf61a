"""Option parsing the command groups share: KEY=VALUE adapter options, the --db option, and output
lines that stay one line whatever a file name holds."""

from __future__ import annotations

import json
from typing import Callable

import click

from streamvl.config import DEFAULT_DB
from streamvl.errors import one_line


def db_option(help: str = "LanceDB path or URI") -> Callable:  # noqa: A002 (click's keyword)
    return click.option("--db", default=DEFAULT_DB, show_default=True, help=help)


def value(text: str) -> object:
    """An option value: JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def options(pairs: tuple[str, ...], checkpoint: str | None = None) -> dict[str, object]:
    """`KEY=VALUE` pairs (and --checkpoint) -> adapter options."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value(text)
    if checkpoint:
        out["checkpoint"] = checkpoint
    return out


def adapter_options(pairs: tuple[str, ...]) -> dict[str, object]:
    """`NAME.KEY=VALUE` pairs -> dotted config overrides `adapter_options.NAME.KEY`."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key.count(".") != 1:
            raise click.BadParameter(f"expected ADAPTER.KEY=VALUE, got {pair!r}")
        out[f"adapter_options.{key}"] = value(text)
    return out


def line(text: str, **style) -> None:
    """One output line to stdout; control characters (a newline in a file name) are escaped."""
    click.secho(one_line(text), **style)
