"""`streamvl demo`: a generated shapes-world stream, indexed and searched through the normal pipeline.

A stream from `sample_stream` is written to an mp4, indexed with streamvl.api.index (Ray,
the default model, meanpool) and searched with static queries built from the objects that are
actually in it ("a red star"). Each query's hits are compared with the ground truth: the time
ranges where an object of that shape shows that colour at least half opaque. A query for a
combination that never appears is added as a contrast: search always returns something, its
scores are the floor. No Ray or torch here: api.index does the work.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.lab.synthetic import COLOURS, DOMAINS, SHAPES, ClipSpec, clip_metadata, frame_times, sample_stream, write_video
from streamvl.lab.synthetic.clips import Timeline, iter_frames


@dataclass(frozen=True)
class DemoConfig:
    """The stream (seed, length, size, domain), how it is indexed, and how many hits to show."""

    seed: int = 0
    seconds: float = 90.0
    size: int = 128
    fps: float = 8.0
    domain: str = "test"  # "test": held-out seeds, combos and backgrounds of the video splits
    sample_fps: float = 2.0
    window: int = 4
    stride: int = 2
    k: int = 3
    model: str = "default"


@dataclass(frozen=True)
class DemoHit:
    """One search hit against the truth: its merged range, score, and its best window (`peak`)."""

    start: float
    end: float
    score: float
    overlaps: bool  # the merged range touches a ground-truth range
    peak: tuple[float, float]
    peak_in_truth: bool  # the best window's centre lies inside a ground-truth range (the strict test)


@dataclass
class QueryResult:
    """One query: its hits and the ground-truth ranges."""

    text: str
    truth: list[tuple[float, float]]
    coverage: float  # fraction of the stream where the object is visible (what a random window would hit)
    hits: list[DemoHit] = field(default_factory=list)

    @property
    def top_in_truth(self) -> bool:
        """Whether the best window of the top hit is centred on the object's true visible time."""
        return bool(self.hits and self.truth and self.hits[0].peak_in_truth)


@dataclass
class DemoReport:
    """Everything the demo found: the video, the index, the model and per-query results."""

    video: str
    db: str
    model: str
    seconds: float
    queries: list[QueryResult]
    absent: QueryResult | None

    @property
    def hit_rate(self) -> float:
        """Fraction of present-object queries whose top hit's best window is centred inside their truth."""
        return float(np.mean([q.top_in_truth for q in self.queries])) if self.queries else 0.0

    @property
    def chance_rate(self) -> float:
        """The same fraction for a window placed at random: the mean coverage of the queried objects."""
        return float(np.mean([q.coverage for q in self.queries])) if self.queries else 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"hit_rate": self.hit_rate, "chance_rate": self.chance_rate}


def query_text(shape: str, colour: str) -> str:
    """'a red star', 'an orange circle'."""
    return re.sub(r"^a (?=[aeiou])", "an ", f"a {colour} {shape}")


def visible_ranges(spec: ClipSpec, combo: tuple[str, str]) -> list[tuple[float, float]]:
    """[start, end) seconds where some object shows `combo` at alpha >= 0.5, frame by frame."""
    tl, step = Timeline(spec), 1.0 / spec.fps
    ranges: list[tuple[float, float]] = []
    for t in frame_times(spec):
        shown = any(o.alpha >= 0.5 and o.combo == combo for o in tl.scene_at(float(t)).objects)
        if not shown:
            continue
        if ranges and abs(ranges[-1][1] - t) < step / 2:
            ranges[-1] = (ranges[-1][0], float(t) + step)
        else:
            ranges.append((float(t), float(t) + step))
    return ranges


def present_combos(spec: ClipSpec) -> list[tuple[str, str]]:
    """(shape, colour) pairs visible at some time, in order of first appearance."""
    tl, found = Timeline(spec), []
    for t in frame_times(spec):
        for o in tl.scene_at(float(t)).objects:
            if o.alpha >= 0.5 and o.combo not in found:
                found.append(o.combo)
    return found


def absent_combo(spec: ClipSpec, present: list[tuple[str, str]]) -> tuple[str, str]:
    """A combo never visible whose shape and colour both differ from every present object."""
    shapes, colours = {s for s, _ in present}, {c for _, c in present}
    rng = np.random.default_rng([spec.seed, 5])
    options = [(s, c) for s in SHAPES for c in COLOURS if s not in shapes and c not in colours]
    return options[int(rng.integers(len(options)))]


def _overlaps(start: float, end: float, truth: list[tuple[float, float]]) -> bool:
    return any(start < e and s < end for s, e in truth)


def _inside(t: float, truth: list[tuple[float, float]]) -> bool:
    return any(s <= t < e for s, e in truth)


def write_stream(config: DemoConfig, workdir: Path) -> tuple[ClipSpec, Path]:
    """Generate the stream, encode it to workdir/stream-<seed>.mp4 with its ground truth beside it."""
    spec = sample_stream(config.seed, config.seconds, domain=DOMAINS[config.domain], width=config.size,
                         height=config.size, fps=config.fps)
    video = workdir / f"stream-{config.seed}.mp4"
    write_video(video, (f for _, f in iter_frames(spec)), spec.fps)
    video.with_suffix(".mp4.json").write_text(json.dumps(clip_metadata(spec), indent=1))
    return spec, video


def search_query(text: str, truth: list[tuple[float, float]], db: str, config: DemoConfig, seconds: float) -> QueryResult:
    hits = api.search(text, db, k=config.k)
    result = QueryResult(text, truth, sum(e - s for s, e in truth) / seconds)
    for h in hits:
        peak = h.best_window
        result.hits.append(DemoHit(h.start, h.end, h.score, _overlaps(h.start, h.end, truth), peak,
                                   _inside((peak[0] + peak[1]) / 2, truth)))
    return result


def run_demo(config: DemoConfig, workdir: str | Path, on_frames: Callable[[int], None] | None = None) -> DemoReport:
    """Generate, index (Ray) and search; the report says how the top hits line up with the truth."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec, video = write_stream(config, workdir)
    db = str(workdir / "db")
    index_config = IndexConfig(db=db, model=config.model, sampling={"fps": config.sample_fps},
                               clips={"window": config.window, "stride": config.stride})
    report = api.index(api.discover([str(video)]), index_config, on_frames)
    if report.failed:
        raise RuntimeError(f"indexing the demo stream failed: {report.failed[0].error}")
    present = present_combos(spec)
    queries = [search_query(query_text(*c), visible_ranges(spec, c), db, config, spec.duration) for c in present]
    absent = search_query(query_text(*absent_combo(spec, present)), [], db, config, spec.duration)
    return DemoReport(str(video), db, report.model, spec.duration, queries, absent)
