"""The `streamvl` command: thin parsing and display over streamvl.api."""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

import click

from streamvl import api
from streamvl.config import DEFAULT_DB, IndexConfig, load_config
from streamvl.errors import StreamvlError

EXIT_STREAMS_FAILED = 3


def _fail(exc: StreamvlError) -> None:
    click.secho(str(exc), fg="red", err=True)
    sys.exit(2)


def _value(text: str) -> object:
    """An option value: JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _options(pairs: tuple[str, ...], checkpoint: str | None = None) -> dict[str, object]:
    """`KEY=VALUE` pairs (and --checkpoint) -> adapter options."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        out[key] = _value(value)
    if checkpoint:
        out["checkpoint"] = checkpoint
    return out


def _adapter_options(pairs: tuple[str, ...]) -> dict[str, object]:
    """`NAME.KEY=VALUE` pairs -> dotted config overrides `adapter_options.NAME.KEY`."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.count(".") != 1:
            raise click.BadParameter(f"expected ADAPTER.KEY=VALUE, got {pair!r}")
        out[f"adapter_options.{key}"] = _value(value)
    return out


def _warn(message: str | None) -> None:
    if message:
        click.secho(f"WARNING: {message}", fg="yellow", bold=True, err=True)


@click.group()
@click.version_option(package_name="streamvl")
def main() -> None:
    """Index video streams with image-language models and search them by text."""


_INDEXING_OPTIONS = (
    click.option("--db", default=DEFAULT_DB, show_default=True, help="LanceDB path or URI"),
    click.option("--fps", type=float, help="frames sampled per second (default 1)"),
    click.option("--model", help="model spec: default, ARCH@TAG, ARCH@PATH, ARCH@random[:SEED]"),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
                 help="image tower precision (default auto: bf16 where the CPU has native bf16)"),
    click.option("--adapter", "adapters", multiple=True, help="adapter name (repeatable; default meanpool)"),
    click.option("--window", type=int, help="frames per clip window (default 8)"),
    click.option("--stride", type=int, help="frames between clip windows (default 4)"),
    click.option("--adapter-option", "adapter_options", multiple=True, metavar="ADAPTER.KEY=VALUE",
                 help="adapter option, e.g. prompt.checkpoint=ckpt/prompt.safetensors (repeatable)"),
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML config file"),
)


def _indexing_options(command: Callable) -> Callable:
    """The options `index` and `serve-index` share (one config through `_indexing_config`)."""
    for option in reversed(_INDEXING_OPTIONS):
        command = option(command)
    return command


def _indexing_config(config_path: str | None, db: str, fps: float | None, model: str | None, precision: str | None,
                     adapters: tuple[str, ...], window: int | None, stride: int | None,
                     adapter_options: tuple[str, ...]) -> IndexConfig:
    """The TOML config (or defaults) with the shared indexing options laid over it."""
    overrides = {"db": db, "model": model, "precision": precision, "adapters": list(adapters) or None, "sampling.fps": fps,
                 "clips.window": window, "clips.stride": stride, **_adapter_options(adapter_options)}
    return load_config(config_path, overrides)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@_indexing_options
@click.option("--id", "ids", multiple=True, help="stream id for each source, in order")
@click.option("--json", "as_json", is_flag=True, help="print the run report as JSON")
def index(sources, db, fps, model, precision, adapters, window, stride, adapter_options, config_path, ids, as_json) -> None:
    """Index SOURCES (files, directories, globs, URLs) into the database."""
    from tqdm import tqdm

    try:
        config = _indexing_config(config_path, db, fps, model, precision, adapters, window, stride, adapter_options)
        streams = api.discover(sources, ids)
        total = api.expected_frames(streams, config.sampling.fps)
        with tqdm(total=total, unit="frame", desc="indexing", disable=as_json or None) as bar:
            report = api.index(streams, config, on_frames=bar.update)
    except StreamvlError as exc:
        _fail(exc)
    _warn(report.warning)
    if as_json:
        click.echo(json.dumps({"model": report.model, "precision": report.precision, "warning": report.warning,
                               "seconds": report.seconds,
                               "streams": [vars(s) for s in report.streams]}, indent=2))
    else:
        for s in report.streams:
            skipped = f" skipped={s.skipped}/{s.frames}" if s.skipped else ""
            line = f"{s.status:6} {s.stream_id}  frames={s.frames} clips={s.clips}{skipped}  {s.uri}"
            click.secho(line + (f"\n       {s.error}" if s.error else ""), fg="red" if s.error else None)
        click.echo(f"{report.frames} frames from {len(report.streams)} streams in {report.seconds:.1f}s -> {config.db} "
                   f"(image tower {report.precision})")
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
@click.option("--tag", "tags", multiple=True, help="only clips tagged with this entity (repeatable: all must match)")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="the adapter's trained checkpoint")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="adapter option (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print [{stream_id, uri, start, end, score}]")
@click.option("--then", "then", multiple=True, help="sequence: a later step's TEXT, after the previous step (repeatable)")
@click.option("--within", type=float, help="sequence: most seconds from one step's clip end to the next step's start")
def search(text, db, k, stream_ids, start, end, adapter, rerank, tags, checkpoint, options, as_json, then, within) -> None:
    """Search indexed clips by TEXT; adjacent matching windows merge into one segment.

    With --then B [--then C] --within S: streams where TEXT is seen, then B within S seconds, ...
    (docs/sequences.md). Use the adapter options (--checkpoint) the index was built with."""
    from streamvl.storage.store import Store

    try:
        _warn(Store(db).meta().get("streamvl.warning"))
        if then or within is not None:
            res = api.search_sequence([text, *then], db, within=within, k=k, adapter=adapter, rerank=rerank,
                                      stream_ids=list(stream_ids) or None, start=start, end=end, tags=list(tags) or None,
                                      adapter_options=_options(options, checkpoint))
            _warn(None if res.certified else "candidate lists hit their cap: the top hits may be incomplete")
            click.echo(json.dumps([h.as_dict() for h in res.hits], indent=2) if as_json else "\n".join(
                f"{h.score:7.4f}  {h.stream_id}  {h.start:8.2f}-{h.end:<8.2f} {h.uri}  steps "
                + " > ".join(f"{s.start:.2f}-{s.end:.2f} ({s.score:.3f})" for s in h.steps) for h in res.hits))
            return
        hits = api.search(text, db, k=k, adapter=adapter, stream_ids=list(stream_ids) or None,
                          start=start, end=end, rerank=rerank, tags=list(tags) or None,
                          adapter_options=_options(options, checkpoint))
    except StreamvlError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([h.as_dict() for h in hits], indent=2))
        return
    for h in hits:
        tags_ = h.extra.get("tags")
        click.echo(f"{h.score:7.4f}  {h.stream_id}  {h.start:8.2f}-{h.end:<8.2f} {h.uri}" + (f"  [{', '.join(tags_)}]" if tags_ else ""))


@main.group(name="streams", invoke_without_command=True)
@click.option("--db", default=DEFAULT_DB, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def streams_cmd(ctx, db, as_json) -> None:
    """List streams with status, frames, last committed pts, lag and errors; `add`/`remove` control
    a running `serve-index` job."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        rows = api.streams(db)
    except StreamvlError as exc:
        _fail(exc)
    now = time.time()
    for r in rows:  # lag now: how far the committed data of a live stream is behind real time
        wall = r.get("last_wallclock")
        r["lag_now_s"] = None if wall is None or r["status"] not in ("running", "reconnecting") else now - wall
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        click.echo(_stream_line(r))
        if r.get("error"):
            click.secho(f"        {r['error']}", fg="red")


def _stream_line(r: dict) -> str:
    pts = "-" if r.get("last_committed_pts") is None else f"{r['last_committed_pts']:.2f}"
    line = f"{r['status']:12} {r['stream_id']}  frames={r['frames_indexed']} last_pts={pts}"
    if r.get("live"):
        lag = "-" if r.get("lag_now_s") is None else f"{r['lag_now_s']:.1f}s"
        line += f" lag={lag} reconnects={r.get('reconnects') or 0} gaps={r.get('gaps') or 0}"
        if r.get("gap_total_s"):
            line += f" ({r['gap_total_s']:.1f}s)"
    if r.get("frames_skipped"):
        line += f" skipped={r['frames_skipped']}/{r['frames_indexed']}"
    if r.get("restarts"):
        line += f" restarts={r['restarts']}"
    return f"{line}  {r['uri']}"


@streams_cmd.command(name="add")
@click.argument("uri")
@click.option("--db", default=DEFAULT_DB, show_default=True)
@click.option("--id", "stream_id", help="stream id (default: derived from the URI)")
@click.option("--fps", type=float, help="frames sampled per second for this stream")
@click.option("--transport", type=click.Choice(["udp", "tcp"]), help="rtsp lower transport")
def streams_add(uri, db, stream_id, fps, transport) -> None:
    """Add URI to the serve-index job on --db (it starts within a poll interval)."""
    try:
        sid = api.add_stream(db, uri, stream_id=stream_id, fps=fps, transport=transport)
    except StreamvlError as exc:
        _fail(exc)
    click.echo(f"requested {sid}  {uri}")


@streams_cmd.command(name="remove")
@click.argument("stream_id")
@click.option("--db", default=DEFAULT_DB, show_default=True)
def streams_remove(stream_id, db) -> None:
    """Stop indexing STREAM_ID in the serve-index job on --db; the other streams keep running."""
    try:
        api.remove_stream(db, stream_id)
    except StreamvlError as exc:
        _fail(exc)
    click.echo(f"removal requested {stream_id}")


@main.command(name="serve-index")
@_indexing_options
@click.option("--poll", "poll_s", type=float, default=1.0, show_default=True, help="seconds between control polls")
def serve_index(db, fps, model, precision, adapters, window, stride, adapter_options, config_path, poll_s) -> None:
    """Index live streams continuously until interrupted (SIGINT/SIGTERM).

    Streams are added and removed while it runs: `streamvl streams add URI` / `streams remove ID`.
    Every stream resumes from its committed checkpoint when the job is restarted."""
    import signal

    stopping: list[int] = []

    def started(run) -> None:  # after ray.init, which installs its own handlers
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stopping.append(signum))
        _warn(run.info["warning"])
        click.echo(f"serving {config.db}: add streams with `streamvl streams add URI --db {config.db}`", err=True)

    try:
        config = _indexing_config(config_path, db, fps, model, precision, adapters, window, stride, adapter_options)
        report = api.serve(config, stop=lambda: bool(stopping), poll_s=poll_s, on_start=started)
    except StreamvlError as exc:
        _fail(exc)
    _warn(report.warning)
    for s in report.streams:
        click.echo(f"{s.status:12} {s.stream_id}  frames={s.frames} reconnects={s.reconnects} restarts={s.restarts}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json) -> None:
    """List installed plugins, the hooks they implement, and the adapters/columns/rerankers found."""
    from streamvl.plugins.manager import Plugins

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


def _print_demo(report) -> None:
    click.echo(f"stream {report.video} ({report.seconds:.0f} s) indexed with {report.model} -> {report.db}")
    for q in report.queries + ([report.absent] if report.absent else []):
        truth = ", ".join(f"{s:.1f}-{e:.1f}" for s, e in q.truth) or "never visible"
        head = f"\n{q.text!r}: visible {truth} ({q.coverage:.0%} of the stream)"
        click.secho(head, bold=True)
        for h in q.hits:
            mark = click.style("best window on the truth", fg="green") if h.peak_in_truth else click.style("off the truth", fg="red")
            click.echo(f"  {h.score:7.4f}  {h.start:6.1f}-{h.end:<6.1f} best window {h.peak[0]:.1f}-{h.peak[1]:.1f}  "
                       f"{mark if q.truth else ''}")
    click.echo(f"\ntop hits whose best window is on the truth: {report.hit_rate:.0%} of {len(report.queries)} queries "
               f"(a random window: {report.chance_rate:.0%})")


@main.command()
@click.option("--seconds", type=float, default=90.0, show_default=True, help="stream length")
@click.option("--seed", type=int, default=0, show_default=True, help="stream seed")
@click.option("--domain", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="test: the video splits' held-out side (combos held out of adapter training, checker background)")
@click.option("--k", type=int, default=3, show_default=True, help="hits per query")
@click.option("--model", default="default", show_default=True, help="model spec")
@click.option("--workdir", type=click.Path(file_okay=False), help="where the video and index go (default: a temp dir)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def demo(seconds, seed, domain, k, model, workdir, as_json) -> None:
    """Generate a shapes-world stream, index it with the pipeline and search it for the objects in it."""
    import tempfile

    from streamvl.lab.demo import DemoConfig, run_demo

    config = DemoConfig(seed=seed, seconds=seconds, domain=domain, k=k, model=model)
    workdir = workdir or tempfile.mkdtemp(prefix="streamvl-demo-")
    try:
        report = run_demo(config, workdir)
    except StreamvlError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_demo(report)


# ---------------------------------------------------------------- adapters: train, evaluate, rescore, localise


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


@main.command()
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
    try:
        report = run_training(adapter, data_spec, out, model_spec=model_spec, options=_options(options), config=config,
                              cache=cache, fps=fps, shapes=_shapes(seed, train_per_class, test_per_class, streams),
                              class_template=class_template or DEFAULT_CLASS_TEMPLATE, log=log)
    except (StreamvlError, ValueError) as exc:
        _fail(exc if isinstance(exc, StreamvlError) else StreamvlError(str(exc)))
    if as_json:
        click.echo(json.dumps(report.summary(), indent=2))


@main.command()
@_data_options
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="trained adapter checkpoint")
@click.option("--out", type=click.Path(dir_okay=False), help="also write the metrics JSON here")
def evaluate(adapter, data_spec, model_spec, options, frames, fps, class_template, cache, seed, train_per_class,
             test_per_class, streams, threads, as_json, checkpoint, out) -> None:
    """Measure an adapter on the test side of DATA: top-1/5, R@K and median rank, or mAP@tIoU."""
    from pathlib import Path

    from streamvl.training.evaluate import run_evaluation

    _threads(threads)
    try:
        result = run_evaluation(adapter, data_spec, model_spec=model_spec, options=_options(options, checkpoint),
                                frames=frames, cache=cache, fps=fps,
                                shapes=_shapes(seed, train_per_class, test_per_class, streams),
                                class_template=class_template, log=lambda m: click.echo(m, err=True))
    except (StreamvlError, ValueError) as exc:
        _fail(exc if isinstance(exc, StreamvlError) else StreamvlError(str(exc)))
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text)
    click.echo(text)


@main.command()
@click.option("--db", default=DEFAULT_DB, show_default=True)
@click.option("--adapter", required=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="the new/retrained adapter checkpoint")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="adapter option (repeatable)")
def rescore(db, adapter, checkpoint, options) -> None:
    """Replace ADAPTER's clip rows from the frames table (no decoding; feature-based adapters only)."""
    from streamvl.pipeline.rescore import rescore as _rescore

    try:
        _rescore(db, adapter, _options(options, checkpoint), log=click.echo)
    except (StreamvlError, ValueError) as exc:
        _fail(exc if isinstance(exc, StreamvlError) else StreamvlError(str(exc)))


@main.command()
@click.option("--db", default=DEFAULT_DB, show_default=True)
@click.option("--adapter", default="prompt", show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="checkpoint trained on localisation data")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="adapter option (repeatable)")
@click.option("--stream", "stream_ids", multiple=True, help="only these stream ids (repeatable)")
@click.option("--min-score", default=0.0, show_default=True)
def localise(db, adapter, checkpoint, options, stream_ids, min_score) -> None:
    """Find labelled segments in indexed streams (from the frames table) and write the `segments` table."""
    from streamvl.search.localisation import localise_index

    try:
        written = localise_index(db, adapter, _options(options, checkpoint), stream_ids=list(stream_ids) or None,
                                 min_score=min_score)
    except (StreamvlError, ValueError) as exc:
        _fail(exc if isinstance(exc, StreamvlError) else StreamvlError(str(exc)))
    for sid, n in written.items():
        click.echo(f"{n:5d} segments  {sid}")
