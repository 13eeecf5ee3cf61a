"""`streamvl check` and `streamvl repair`: verify a database and bring a damaged one back."""

from __future__ import annotations

import sys

import click

from streamvl import api
from streamvl.cli.common import db_option, line
from streamvl.cli.errors import EXIT_STORE


@click.command(name="check")
@db_option()
def check(db) -> None:
    """Verify every table (version chain, data files, ANN and scalar indices) and the resume ledger
    against the rows; one line per table. Exit 4 if anything is damaged. Reads only."""
    report = api.check(db)
    for text in report.lines():
        line(text, fg=None if report.ok else "red")
    if not report.ok:
        sys.exit(EXIT_STORE)


@click.command(name="repair")
@db_option()
@click.option("--force", is_flag=True, help="repair even though a stream's row says a writer is running it")
def repair(db, force) -> None:
    """Restore damaged tables to their last readable version, rebuild lost indices and re-queue the
    streams whose rows were lost (the next `streamvl index` of the same inputs redoes exactly them).
    Stop every index / serve-index job on the database first."""
    report = api.repair(db, force=force)
    for text in report.lines():
        line(text)
    if not report.ok:
        sys.exit(EXIT_STORE)
