"""`streamvl index`: files, folders, globs and URLs into the database; every input fails alone."""

from __future__ import annotations

import json
from typing import Callable

import click

from streamvl import api
from streamvl.cli.common import adapter_options as _adapter_options
from streamvl.cli.common import db_option, line
from streamvl.cli.errors import EXIT_STREAMS_FAILED, note, warn
from streamvl.config import IndexConfig, load_config

_INDEXING_OPTIONS = (
    db_option(),
    click.option("--fps", type=float, help="frames sampled per second (default 1)"),
    click.option("--model", help="model spec: default, ARCH@TAG, ARCH@PATH, ARCH@random[:SEED]"),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "int8"]),
                 help="image tower precision (default auto: bf16 where the CPU has native bf16)"),
    click.option("--adapter", "adapters", multiple=True, help="adapter name (repeatable; default meanpool)"),
    click.option("--window", type=int, help="frames per clip window (default 8)"),
    click.option("--stride", type=int, help="frames between clip windows (default 4)"),
    click.option("--adapter-option", "adapter_options", multiple=True, metavar="ADAPTER.KEY=VALUE",
                 help="adapter option, e.g. prompt.checkpoint=ckpt/prompt.safetensors (repeatable)"),
    click.option("--ray-address", help="Ray to run on: auto (the cluster `ray start` made here), HOST:PORT, "
                 "ray://HOST:PORT or local; default RAY_ADDRESS, else a private local Ray on 127.0.0.1"),
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML config file"),
)


def indexing_options(command: Callable) -> Callable:
    """The options `index` and `serve-index` share (one config through `indexing_config`)."""
    for option in reversed(_INDEXING_OPTIONS):
        command = option(command)
    return command


def indexing_config(config_path: str | None, db: str, fps: float | None, model: str | None, precision: str | None,
                    adapters: tuple[str, ...], window: int | None, stride: int | None,
                    adapter_options: tuple[str, ...], ray_address: str | None) -> IndexConfig:
    """The TOML config (or defaults) with the shared indexing options laid over it."""
    overrides = {"db": db, "model": model, "precision": precision, "adapters": list(adapters) or None, "sampling.fps": fps,
                 "clips.window": window, "clips.stride": stride, "ray_address": ray_address,
                 **_adapter_options(adapter_options)}
    return load_config(config_path, overrides)


@click.command()
@click.argument("sources", nargs=-1, required=True)
@indexing_options
@click.option("--id", "ids", multiple=True, help="stream id for each source, in order")
@click.option("--json", "as_json", is_flag=True, help="print the run report as JSON")
@click.pass_context
def index(ctx, sources, db, fps, model, precision, adapters, window, stride, adapter_options, ray_address, config_path,
          ids, as_json) -> None:
    """Index SOURCES (files, directories, globs, URLs) into the database.

    A source that cannot be read (missing, empty, not media) is recorded as that stream's error and
    the others are indexed; a folder with nothing to index is a warning. Either way the exit code is 3."""
    from tqdm import tqdm

    config = indexing_config(config_path, db, fps, model, precision, adapters, window, stride, adapter_options,
                             ray_address)
    api.check_index_config(config)  # before probing every file: a bad --db or --model says so at once
    found = api.scan(sources, ids)
    for text in found.warnings:
        warn(text)
    for text in found.notes:
        note(text)
    total = api.expected_frames(found.streams, config.sampling.fps)
    with tqdm(total=total, unit="frame", desc="indexing", disable=as_json or not found.streams or None) as bar:
        report = api.index(found.streams, config, on_frames=bar.update, failed=found.failed)
    warn(report.warning)
    if as_json:
        click.echo(json.dumps({"model": report.model, "precision": report.precision, "warning": report.warning,
                               "seconds": report.seconds, "inputs": {"warnings": found.warnings, "notes": found.notes},
                               "streams": [vars(s) for s in report.streams]}, indent=2))
    else:
        _print_report(report, config.db)
    if report.failed or found.warnings:
        ctx.exit(EXIT_STREAMS_FAILED)


def _print_report(report, db: str) -> None:
    for s in report.streams:
        skipped = f" skipped={s.skipped}/{s.frames}" if s.skipped else ""
        line(f"{s.status:6} {s.stream_id}  frames={s.frames} clips={s.clips}{skipped}  {s.uri}",
             fg="red" if s.error else None)
        if s.error:
            line(f"       {s.error}", fg="red")
    line(f"{report.frames} frames from {len(report.streams)} streams in {report.seconds:.1f}s -> {db} "
         f"(image tower {report.precision})")
