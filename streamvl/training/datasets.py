"""Labelled clip sets for training and evaluating adapters: shapes-world splits, folders, CSVs.

A `ClipRef` names one clip (or long stream) by a stable id and knows how to produce its frames;
nothing is rendered or decoded until frames or features are asked for (see streamvl.pipeline.features).

Data specs (the `--data` of `streamvl train` / `evaluate`):
  shapes:closed_set | shapes:few_shot:K | shapes:open_set | shapes:retrieval | shapes:localisation
  folder:PATH   one subfolder per class, videos inside (recognition)
  csv:PATH      header `path,label` (recognition) or `path,caption` (retrieval); paths relative to the CSV
A folder or CSV is used whole on both sides (train and test): pass separate ones to train and evaluate.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from streamvl.errors import ConfigError

RECOGNITION, RETRIEVAL, LOCALISATION = "recognition", "retrieval", "localisation"
FrameSource = Callable[[], tuple[np.ndarray, np.ndarray]]  # () -> (pts float64 [N], uint8 frames [N, H, W, 3])


@dataclass(frozen=True)
class GroundTruth:
    """A labelled time range of a stream (localisation ground truth)."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class ClipRef:
    """One clip or stream: a stable id (same id, same frames), its label, captions and frame source."""

    id: str
    label: str
    captions: tuple[str, ...]
    source: FrameSource = field(compare=False, repr=False)
    segments: tuple[GroundTruth, ...] = ()


@dataclass(frozen=True)
class TaskData:
    """Train and test clips of one task; class_texts maps a label to the text adapters see.

    reverses: label -> the label of such a clip played backwards, for classes whose time reverse
    is known (the shapes world's order pairs; blink is its own reverse). Training may use it to
    augment views (streamvl.training.train.backwards); empty for a user's folder or CSV.
    """

    name: str
    kind: str  # RECOGNITION | RETRIEVAL | LOCALISATION
    train: tuple[ClipRef, ...]
    test: tuple[ClipRef, ...]
    train_classes: tuple[str, ...]
    test_classes: tuple[str, ...]
    class_texts: Mapping[str, str]
    reverses: Mapping[str, str] = field(default_factory=dict)

    def texts(self, labels: tuple[str, ...]) -> list[str]:
        return [self.class_texts.get(label, label) for label in labels]

    def with_class_template(self, template: str) -> "TaskData":
        """The same task with every class text put into `template` ("a video of a shape {}").

        Class names are phrases ("moves left"); a frozen text tower trained on captions reads
        them better inside a sentence, as CLIP's "a photo of a {}". Captions (retrieval) and search
        queries are not class texts and are left alone."""
        check_class_template(template)
        labels = dict.fromkeys((*self.train_classes, *self.test_classes, *self.class_texts))
        return replace(self, class_texts={c: template.format(self.class_texts.get(c, c)) for c in labels})


DEFAULT_CLASS_TEMPLATE = "{}"


def check_class_template(template: str) -> None:
    """A class template holds exactly one `{}` (the class text) and no other field."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"class template {template!r}: {exc}") from exc
    if fields != [""]:
        raise ConfigError(f"class template {template!r} must hold exactly one '{{}}' for the class text, "
                          f"e.g. 'a video of a shape {{}}'")


@dataclass(frozen=True)
class ShapesOptions:
    """How shapes-world splits are built: render size (the model's input size), sizes of the sides."""

    seed: int = 0
    image_size: int = 64
    train_per_class: int = 16
    test_per_class: int = 8
    streams: tuple[int, int] = (24, 8)
    stream_seconds: float = 120.0


# ---------------------------------------------------------------- shapes world


def _render(spec) -> tuple[np.ndarray, np.ndarray]:
    from streamvl.lab.synthetic import frame_times, render_clip

    return frame_times(spec), render_clip(spec)


def shapes_id(spec) -> str:
    """Everything that fixes a rendered shapes clip: domain, label, seed, size, rate, length."""
    return f"shapes:{spec.domain}:{spec.label}:{spec.seed}:{spec.width}x{spec.height}:{spec.fps:g}:{spec.n_frames}"


def _shapes_ref(item, with_segments: bool = False) -> ClipRef:
    segs = tuple(GroundTruth(s.start, s.end, s.label) for s in item.segments) if with_segments else ()
    return ClipRef(shapes_id(item.spec), item.label, tuple(item.captions), partial(_render, item.spec), segs)


def shapes_class_texts() -> dict[str, str]:
    """Action label -> the phrase adapters see as its class name ('move_left' -> 'moves left')."""
    from streamvl.lab.synthetic.actions import ACTIONS
    from streamvl.lab.synthetic.captions import action_phrase

    return {a: "changes colour" if a == "change_colour" else action_phrase(a, participle=False) for a in ACTIONS}


def shapes_reverses() -> dict[str, str]:
    """Every shapes action's time reverse: a clip of it played backwards is exactly a clip of that
    action (streamvl.lab.synthetic.actions.reverse_event): the order pairs swap, the rest map to themselves."""
    from streamvl.lab.synthetic.actions import ACTIONS, reverse_action

    return {a: reverse_action(a) for a in ACTIONS}


def shapes_task(name: str, k: int | None = None, options: ShapesOptions = ShapesOptions()) -> TaskData:
    """A shapes-world split as TaskData (rendered at the model's input size)."""
    from streamvl.lab.synthetic import RenderConfig, make_split

    render = RenderConfig(width=options.image_size, height=options.image_size)
    split = make_split(name, options.seed, k=k, train_per_class=options.train_per_class,
                       test_per_class=options.test_per_class, render=render, streams=options.streams,
                       stream_seconds=options.stream_seconds)
    kind = {"retrieval": RETRIEVAL, "localisation": LOCALISATION}.get(name, RECOGNITION)
    streams = kind == LOCALISATION
    label = f"shapes:{name}" + (f":{k}" if k else "")
    return TaskData(label, kind, tuple(_shapes_ref(i, streams) for i in split.train),
                    tuple(_shapes_ref(i, streams) for i in split.test), split.train_classes, split.test_classes,
                    shapes_class_texts(), shapes_reverses())


# ---------------------------------------------------------------- files


def _decode(path: Path, fps: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    from streamvl.config import SamplingConfig
    from streamvl.sources import open_source
    from streamvl.types import StreamInfo

    info = StreamInfo(stream_id=path.stem, uri=str(path))
    pts, frames = [], []
    with open_source(info, SamplingConfig(fps=fps, size=size, batch_frames=64)) as source:
        for batch in source:
            pts.append(batch.pts)
            frames.append(batch.frames)
    if not pts or not sum(len(p) for p in pts):
        raise ConfigError(f"no frames decoded from {path}")
    return np.concatenate(pts), np.concatenate(frames)


def file_ref(path: Path, label: str, captions: tuple[str, ...], fps: float, size: int) -> ClipRef:
    """A video file; its id changes when the file, its sampling rate or frame size changes."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return ClipRef(f"file:{key}:{fps:g}:{size}", label, captions, partial(_decode, path, fps, size))


def folder_task(root: str | Path, fps: float, size: int) -> TaskData:
    """Recognition data from class-named subfolders (every video file inside, recursively)."""
    from streamvl.sources.discover import is_video_file

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data folder {root} not found")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    refs = [file_ref(p, c, (c.replace("_", " "),), fps, size)
            for c in classes for p in sorted((root / c).rglob("*")) if p.is_file() and is_video_file(p)]
    if not refs:
        raise ConfigError(f"no videos in class subfolders of {root}")
    texts = {c: c.replace("_", " ") for c in classes}
    return TaskData(f"folder:{root}", RECOGNITION, tuple(refs), tuple(refs), tuple(classes), tuple(classes), texts)


def csv_task(path: str | Path, fps: float, size: int) -> TaskData:
    """Recognition (`path,label`) or retrieval (`path,caption`) data from a CSV with a header row."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.open(newline="")))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    cols = set(rows[0]) if rows else set()
    if "path" not in cols or not cols & {"label", "caption"}:
        raise ConfigError(f"{path}: need a header with `path` and `label` or `caption`, got {sorted(cols)}")
    kind = RECOGNITION if "label" in cols else RETRIEVAL
    key = "label" if kind == RECOGNITION else "caption"
    refs = []
    for row in rows:
        video = (path.parent / row["path"]).resolve()
        if not video.is_file():
            raise ConfigError(f"{path}: video {video} not found")
        text = row[key].strip()
        refs.append(file_ref(video, text, (text.replace("_", " "),), fps, size))
    classes = tuple(sorted({r.label for r in refs}))
    texts = {c: c.replace("_", " ") for c in classes}
    return TaskData(f"csv:{path}", kind, tuple(refs), tuple(refs), classes, classes, texts)


def load_task(spec: str, *, image_size: int = 64, fps: float = 2.0, shapes: ShapesOptions | None = None,
              class_template: str = DEFAULT_CLASS_TEMPLATE) -> TaskData:
    """Parse a data spec (see the module doc) into TaskData, class texts put into `class_template`."""
    return _load_task(spec, image_size, fps, shapes).with_class_template(class_template)


def _load_task(spec: str, image_size: int, fps: float, shapes: ShapesOptions | None) -> TaskData:
    kind, _, rest = spec.partition(":")
    if kind == "shapes":
        name, _, k = rest.partition(":")
        opts = replace(shapes or ShapesOptions(), image_size=image_size)
        try:
            return shapes_task(name, int(k) if k else None, opts)
        except ValueError as exc:
            raise ConfigError(f"bad data spec {spec!r}: {exc}") from exc
    if kind == "folder":
        return folder_task(rest, fps, image_size)
    if kind == "csv":
        return csv_task(rest, fps, image_size)
    raise ConfigError(f"data spec {spec!r}: expected shapes:SPLIT[:K], folder:PATH or csv:PATH")
