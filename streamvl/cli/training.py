"""Adapters on labelled clips: `train`, `evaluate`, and over an index's frames `rescore`, `localise`.

A ValueError from these (a data spec, a class template, an augmentation an adapter cannot use) is
bad usage: it becomes a ConfigError (exit 2)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

import click

from streamvl.cli.common import db_option, line
from streamvl.cli.common import options as option_pairs
from streamvl.errors import ConfigError, StreamvlError


@contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except StreamvlError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _shapes(seed: int, train_per_class: int | None, test_per_class: int | None, streams: str | None):
    from streamvl.training.datasets import ShapesOptions

    base = ShapesOptions(seed=seed)
    n_streams = tuple(int(x) for x in streams.split(",")) if streams else base.streams
    if len(n_streams) != 2:
        raise click.BadParameter(f"--streams takes TRAIN,TEST counts, got {streams!r}")
    return ShapesOptions(seed=seed, train_per_class=train_per_class or base.train_per_class,
                         test_per_class=test_per_class or base.test_per_class, streams=n_streams)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _data_options(f):
    """Options shared by train and evaluate: what data, how it is sampled, where features are cached."""
    for opt in reversed([
        click.option("--adapter", required=True, help="adapter name (see `streamvl plugins`)"),
        click.option("--data", "data_spec", required=True,
                     help="shapes:closed_set | shapes:few_shot:K | shapes:open_set | shapes:retrieval | "
                          "shapes:localisation | folder:PATH | csv:PATH"),
        click.option("--model", "model_spec", default="default", show_default=True, help="frozen backbone spec"),
        click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="adapter option (repeatable)"),
        click.option("--frames", default=8, show_default=True, help="frames per clip given to the adapter"),
        click.option("--fps", default=2.0, show_default=True, help="sampling rate for folder/CSV videos"),
        click.option("--class-template", help="sentence class names are put into, e.g. 'a video of a shape {}' "
                     "(train default '{}': the names as they are; evaluate default: the checkpoint's)"),
        click.option("--cache", type=click.Path(file_okay=False), help="feature cache root (default ~/.cache/streamvl/features)"),
        click.option("--seed", default=0, show_default=True, help="shapes-world split seed"),
        click.option("--train-per-class", type=int, help="shapes clips per class, train side (default 16)"),
        click.option("--test-per-class", type=int, help="shapes clips per class, test side (default 8)"),
        click.option("--streams", help="shapes localisation streams TRAIN,TEST (default 24,8)"),
        click.option("--threads", type=int, help="torch CPU threads (default: torch's choice)"),
        click.option("--json", "as_json", is_flag=True, help="print the result as JSON"),
    ]):
        f = opt(f)
    return f


@click.command()
@_data_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="checkpoint path (.safetensors; JSON beside it)")
@click.option("--steps", default=300, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--train-seed", default=0, show_default=True, help="seed of batch sampling and initialisation")
@click.option("--backwards", default=0.5, show_default=True,
              help="share of labelled views played backwards as their class's time reverse (data that names reverses)")
@click.option("--crop", default=1.0, show_default=True, type=click.FloatRange(0.05, 1.0),
              help="each view (or feature copy) cropped to a random square of side in [crop, 1] x the frame")
@click.option("--colours", is_flag=True,
              help="class labels only: each view's (or feature copy's) RGB channels in a random order")
@click.option("--copies", default=0, show_default=True, type=click.IntRange(0),
              help="adapters that read frozen features: augmented copies (--crop, --colours) of each training clip, "
                   "embedded once; each view reads the original or one copy")
def train(adapter, data_spec, model_spec, options, frames, fps, class_template, cache, seed, train_per_class,
          test_per_class, streams, threads, as_json, out, steps, batch_size, lr, train_seed, backwards, crop, colours,
          copies) -> None:
    """Train an adapter on labelled clips; save safetensors + JSON; check the backbone is unchanged."""
    from streamvl.training.datasets import DEFAULT_CLASS_TEMPLATE
    from streamvl.training.train import TrainConfig, run_training

    _threads(threads)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, frames=frames, seed=train_seed, backwards=backwards,
                         crop=crop, colours=colours, copies=copies)
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    with _usage_errors():
        report = run_training(adapter, data_spec, out, model_spec=model_spec, options=option_pairs(options), config=config,
                              cache=cache, fps=fps, shapes=_shapes(seed, train_per_class, test_per_class, streams),
                              class_template=class_template or DEFAULT_CLASS_TEMPLATE, log=log)
    if as_json:
        click.echo(json.dumps(report.summary(), indent=2))


@click.command()
@_data_options
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="trained adapter checkpoint")
@click.option("--out", type=click.Path(dir_okay=False), help="also write the metrics JSON here")
def evaluate(adapter, data_spec, model_spec, options, frames, fps, class_template, cache, seed, train_per_class,
             test_per_class, streams, threads, as_json, checkpoint, out) -> None:
    """Measure an adapter on the test side of DATA: top-1/5, R@K and median rank, or mAP@tIoU."""
    from pathlib import Path

    from streamvl.inputs import adapter_checkpoint
    from streamvl.training.evaluate import run_evaluation

    if checkpoint:
        adapter_checkpoint(checkpoint, adapter)
    _threads(threads)
    with _usage_errors():
        result = run_evaluation(adapter, data_spec, model_spec=model_spec, options=option_pairs(options, checkpoint),
                                frames=frames, cache=cache, fps=fps,
                                shapes=_shapes(seed, train_per_class, test_per_class, streams),
                                class_template=class_template, log=lambda m: click.echo(m, err=True))
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text)
    click.echo(text)


@click.command()
@db_option()
@click.option("--adapter", required=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="the new/retrained adapter checkpoint")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="adapter option (repeatable)")
def rescore(db, adapter, checkpoint, options) -> None:
    """Replace ADAPTER's clip rows from the frames table (no decoding; feature-based adapters only)."""
    from streamvl.inputs import adapter_checkpoint, indexed_model
    from streamvl.pipeline.rescore import rescore as _rescore

    indexed_model(db)
    if checkpoint:
        adapter_checkpoint(checkpoint, adapter)
    with _usage_errors():
        _rescore(db, adapter, option_pairs(options, checkpoint), log=click.echo)


@click.command()
@db_option()
@click.option("--adapter", default="prompt", show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="checkpoint trained on localisation data")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="adapter option (repeatable)")
@click.option("--stream", "stream_ids", multiple=True, help="only these stream ids (repeatable)")
@click.option("--min-score", default=0.0, show_default=True)
def localise(db, adapter, checkpoint, options, stream_ids, min_score) -> None:
    """Find labelled segments in indexed streams (from the frames table) and write the `segments` table."""
    from streamvl.inputs import adapter_checkpoint, indexed_model
    from streamvl.search.localisation import localise_index

    indexed_model(db)
    if checkpoint:
        adapter_checkpoint(checkpoint, adapter)
    with _usage_errors():
        written = localise_index(db, adapter, option_pairs(options, checkpoint), stream_ids=list(stream_ids) or None,
                                 min_score=min_score)
    for sid, n in written.items():
        line(f"{n:5d} segments  {sid}")
