"""`streamvl demo`: a shapes-world stream indexed and searched end to end (the only command that
imports streamvl.lab, and only when it runs)."""

from __future__ import annotations

import json

import click


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


@click.command()
@click.option("--seconds", type=float, default=90.0, show_default=True, help="stream length")
@click.option("--seed", type=int, default=0, show_default=True, help="stream seed")
@click.option("--domain", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="test: the video splits' held-out side (combos held out of adapter training, checker background)")
@click.option("--k", type=click.IntRange(min=1), default=3, show_default=True, help="hits per query")
@click.option("--model", default="default", show_default=True, help="model spec")
@click.option("--workdir", type=click.Path(file_okay=False), help="where the video and index go (default: a temp dir)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def demo(seconds, seed, domain, k, model, workdir, as_json) -> None:
    """Generate a shapes-world stream, index it with the pipeline and search it for the objects in it."""
    import tempfile

    from streamvl.lab.demo import DemoConfig, run_demo

    config = DemoConfig(seed=seed, seconds=seconds, domain=domain, k=k, model=model)
    report = run_demo(config, workdir or tempfile.mkdtemp(prefix="streamvl-demo-"))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_demo(report)
