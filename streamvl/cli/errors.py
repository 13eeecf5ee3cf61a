"""The one place that turns errors into what a user sees: one line (plus a hint where one helps) and
a stable exit code. Tracebacks only with `streamvl --debug` or STREAMVL_DEBUG=1.

Exit codes:
  0  success
  1  an unexpected error (a bug: run again with --debug and report the traceback)
  2  bad usage or bad configuration (also: no database at --db, an unusable --ray-address)
  3  failed streams: some input could not be indexed (the others were)
  4  the database is damaged or refused a read or write
  5  a model or plugin failed to load (weights file, adapter checkpoint, unknown adapter)
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from contextlib import contextmanager
from typing import Iterator

import click

from streamvl.errors import (ClusterError, ConfigError, ModelLoadError, PluginError, SourceError, StoreDamagedError,
                             StoreError, StreamvlError, one_line)

EXIT_ERROR, EXIT_USAGE, EXIT_STREAMS_FAILED, EXIT_STORE, EXIT_MODEL = 1, 2, 3, 4, 5
MAX_MESSAGE = 400  # characters of one error line

# Most specific first: the first matching type gives the code.
CODES: tuple[tuple[type[BaseException], int], ...] = (
    (StoreError, EXIT_STORE),
    (ModelLoadError, EXIT_MODEL),
    (PluginError, EXIT_MODEL),
    (ConfigError, EXIT_USAGE),
    (SourceError, EXIT_STREAMS_FAILED),
)
DEBUG_ENV = "STREAMVL_DEBUG"


def exit_code(exc: BaseException) -> int:
    return next((code for kind, code in CODES if isinstance(exc, kind)), EXIT_ERROR)


def message(exc: BaseException) -> str:
    """The error as one line: a StreamvlError's own text (type, message, context), anything else
    as `Type: text`; lines joined, control characters escaped, capped at MAX_MESSAGE characters."""
    text = str(exc) if isinstance(exc, StreamvlError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    line = one_line(line)
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def hint(exc: BaseException) -> str | None:
    """What to do next, where the message alone does not say it."""
    if isinstance(exc, StoreDamagedError):
        db = f" --db {exc.db}" if exc.db else ""
        return f"run `streamvl check{db}` to see what is damaged, then `streamvl repair{db}`"
    if isinstance(exc, ModelLoadError):
        return "--model takes default, ARCH@TAG (e.g. ViT-B-32@openai), ARCH@/path/to/weights.safetensors or ARCH@random"
    if isinstance(exc, ClusterError):
        return None  # the message names the address and the way out
    if not isinstance(exc, StreamvlError):
        return f"this is a bug; run again as `streamvl --debug ...` (or {DEBUG_ENV}=1) and report the traceback"
    return None


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def report(exc: BaseException, debug: bool = False) -> int:
    """Print the error (with the traceback when debugging) to stderr; return its exit code."""
    if debug_enabled(debug):
        traceback.print_exception(exc, file=sys.stderr)
    click.secho(message(exc), fg="red", err=True)
    if (text := hint(exc)) is not None:
        click.echo(f"hint: {text}", err=True)
    return exit_code(exc)


def warn(text: str | None) -> None:
    """A loud one-line warning on stderr."""
    if text:
        click.secho(f"WARNING: {one_line(text)}", fg="yellow", bold=True, err=True)


def note(text: str | None) -> None:
    if text:
        click.echo(f"note: {one_line(text)}", err=True)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Python warnings (a query cut to fit, another model than the index's) as WARNING lines."""
    def show(msg, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001 (showwarning's signature)
        warn(str(msg))

    with warnings.catch_warnings():  # the filters stay Python's (each warning once per place)
        warnings.showwarning = show
        yield


class ErrorHandlingGroup(click.Group):
    """A click group whose commands' errors go through `report` (click's own usage errors keep exit 2)."""

    def invoke(self, ctx: click.Context):
        try:
            with one_line_warnings():
                return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            ctx.exit(report(exc, bool(ctx.meta.get("streamvl.debug"))))
