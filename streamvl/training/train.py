"""Training adapters on labelled clips: batches, the loop, the frozen-backbone check, checkpoints.

Plain Python + torch (no Ray): `jobs/train.py` and `streamvl train` call `run_training`.

A training item is a *view*: frames [lo, hi) of one clip (a whole shapes clip, a file, or a
ground-truth segment of a long stream) with a label (recognition) or captions (retrieval).
Each step samples B views, takes T frames of each (TSN-style, random inside each segment),
plays a share of them backwards as their reverse class where the task knows one, and hands
the adapter a `TrainBatch`; the adapter returns its loss (symmetric NCE by default).
Localisation data also trains the adapter's class-agnostic proposal head when its spec declares
one (Capability.LOCALISES). What the loop calls on the adapter is the contract's `Trainable`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, cast

import numpy as np

from streamvl.pipeline.features import ClipFeatures, FeatureStore, clip_features, embed_pixels, load_frames, segment_indices
from streamvl.plugins.contract import Capability
from streamvl.training.datasets import DEFAULT_CLASS_TEMPLATE, LOCALISATION, RECOGNITION, RETRIEVAL, ClipRef, TaskData

if TYPE_CHECKING:
    import torch

    from streamvl.models.loading import LoadedModel
    from streamvl.plugins.contract import AdapterSpec, Localising, Trainable

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run (AdamW, linear warm-up then cosine decay)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 20
    frames: int = 8
    seed: int = 0
    log_every: int = 25
    grad_clip: float = 1.0
    proposal_window: int = 64  # frames per actionness window (localisation data)
    backwards: float = 0.5  # share of labelled views played backwards as their reverse class (task.reverses)
    crop: float = 1.0  # each view cropped to a random square of side in [crop, 1] x the frame (1: off)
    colours: bool = False  # class labels only: each view's RGB channels in a random order
    copies: int = 0  # feature-based adapters: augmented copies (crop, colours) of each clip's frozen features

    def __post_init__(self) -> None:
        if not 0.0 < self.crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1] (the smallest crop side as a share of the frame), got {self.crop}")
        if self.copies < 0:
            raise ValueError(f"copies must be >= 0, got {self.copies}")


@dataclass
class TrainReport:
    """What a run did: loss curve, time, parameter counts, and the frozen-backbone check."""

    adapter: str
    data: str
    steps: int
    seconds: float
    first_loss: float
    final_loss: float
    losses: list[float] = field(repr=False)
    parameters: dict[str, int]
    backbone_sha256_before: str
    backbone_sha256_after: str

    @property
    def backbone_unchanged(self) -> bool:
        return self.backbone_sha256_before == self.backbone_sha256_after

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["losses"] = [round(x, 4) for x in self.losses[:: max(1, len(self.losses) // 50)]]
        out["backbone_unchanged"] = self.backbone_unchanged
        return out


@dataclass(frozen=True)
class View:
    """Frames [lo, hi) of clip `clip` (in reverse order when `reversed`); target: a class label or captions."""

    clip: int
    lo: int
    hi: int
    target: str | tuple[str, ...]
    reversed: bool = False


@dataclass
class ClipData:
    """Frozen features of a list of clips, plus their frames when the adapter re-runs the vision tower."""

    refs: tuple[ClipRef, ...]
    features: list[ClipFeatures]
    frames: list[np.ndarray] | None = None
    copies: list[list[ClipFeatures]] | None = None  # per clip: frozen features of augmented copies (training)


def prepare(model: "LoadedModel", refs: Sequence[ClipRef], store: FeatureStore, needs_frames: bool,
            log: Log | None = None) -> ClipData:
    """Features from the store (embedded once), and frames rendered/decoded again if needed."""
    t0 = time.perf_counter()
    feats = clip_features(model, refs, store)
    frames = load_frames(refs) if needs_frames else None
    if log:
        what = "features + frames (rendered/decoded again)" if needs_frames else "features"
        log(f"{len(refs)} clips: {what} ready in {time.perf_counter() - t0:.1f}s")
    return ClipData(tuple(refs), feats, frames)


def clip_views(task: TaskData, data: ClipData) -> list[View]:
    """Training views: whole clips (recognition, retrieval) or ground-truth segments of streams."""
    if task.kind != LOCALISATION:
        return [View(i, 0, len(f), r.label if task.kind == RECOGNITION else r.captions)
                for i, (r, f) in enumerate(zip(data.refs, data.features))]
    views = []
    for i, (ref, f) in enumerate(zip(data.refs, data.features)):
        for seg in ref.segments:
            lo, hi = np.searchsorted(f.pts, seg.start), np.searchsorted(f.pts, seg.end)
            views.append(View(i, int(lo), int(max(hi, lo + 1)), seg.label))
    return views


def jitter(view: View, n: int, rng: np.random.Generator, amount: float = 0.2) -> View:
    """Move a segment view's ends by up to amount x its length (proposals are never exact)."""
    span = view.hi - view.lo
    lo = view.lo + int(round(rng.uniform(-amount, amount) * span))
    hi = view.hi + int(round(rng.uniform(-amount, amount) * span))
    lo = min(max(lo, 0), n - 1)
    return View(view.clip, lo, max(min(hi, n), lo + 1), view.target)


def backwards(view: View, reverses: Mapping[str, str], p: float, rng: np.random.Generator) -> View:
    """With probability p, the view played backwards and labelled with its class's time reverse.

    Only for class labels the task knows a reverse of (TaskData.reverses): a left-to-right move
    played backwards is a right-to-left move, which doubles the data of every such class and
    shows the model the one thing that tells an order pair apart.
    """
    if not isinstance(view.target, str) or view.target not in reverses or rng.uniform() >= p:
        return view
    return replace(view, reversed=not view.reversed, target=reverses[view.target])


def trainable_reverses(task: TaskData) -> dict[str, str]:
    """task.reverses between train classes only (an open-set split may hold out one side of a pair)."""
    if task.kind == RETRIEVAL:
        return {}
    train = set(task.train_classes)
    return {a: b for a, b in task.reverses.items() if a in train and b in train}


def augment_views(frames: "torch.Tensor", rng: np.random.Generator, crop: float, colours: bool) -> "torch.Tensor":
    """Per view (the same for all its T frames): a random square crop resized back, RGB channels shuffled.

    frames [B, T, 3, S, S] preprocessed. One transform per view keeps its motion intact (a crop
    shifts and scales every frame alike); channel order changes what colour an object is, never
    what it does, so it is for class labels only (captions name colours)."""
    import torch
    import torch.nn.functional as F

    c, s = frames.shape[2], frames.shape[-1]
    out = []
    for x in frames:
        if crop < 1.0:
            side = max(2, int(round(s * rng.uniform(crop, 1.0))))
            top, left = int(rng.integers(0, s - side + 1)), int(rng.integers(0, s - side + 1))
            x = F.interpolate(x[..., top : top + side, left : left + side], size=(s, s), mode="bilinear",
                              align_corners=False)
        if colours:
            x = x[:, torch.from_numpy(rng.permutation(c))]
        out.append(x)
    return torch.stack(out)


def view_tensors(model: "LoadedModel", data: ClipData, views: Sequence[View], t: int,
                 rng: np.random.Generator | None) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """features [B, T, D] (and preprocessed frames [B, T, 3, S, S]) of views, T frames each."""
    import torch

    idx = [v.lo + segment_indices(v.hi - v.lo, t, rng)[:: -1 if v.reversed else 1] for v in views]
    feats = torch.from_numpy(np.stack([_source(data, v.clip, rng).features[i] for v, i in zip(views, idx)]))
    if data.frames is None:
        return feats, None
    raw = np.stack([data.frames[v.clip][i] for v, i in zip(views, idx)])  # [B, T, H, W, 3]
    b = raw.shape[0]
    frames = model.preprocess(raw.reshape(b * t, *raw.shape[2:]))
    return feats, frames.reshape(b, t, *frames.shape[1:])


def _source(data: ClipData, clip: int, rng: np.random.Generator | None) -> ClipFeatures:
    """A clip's frozen features; in training with augmented copies, the original or one copy at random."""
    if rng is None or not data.copies:
        return data.features[clip]
    k = int(rng.integers(len(data.copies[clip]) + 1))
    return data.features[clip] if k == 0 else data.copies[clip][k - 1]


def feature_copies(model: "LoadedModel", data: ClipData, n: int, crop: float, colours: bool,
                   rng: np.random.Generator) -> list[list[ClipFeatures]]:
    """n augmented copies of every clip, each one crop and one channel order of all its frames,
    embedded once by the frozen tower: augmentation for adapters that read only frozen features
    (as Tip-Adapter builds its cache from augmented views of the training images). The clips are
    rendered / decoded again (`ClipRef.source`), one at a time, as for adapters that read frames."""
    out = []
    for ref, orig in zip(data.refs, data.features):
        pixels = model.preprocess(ref.source()[1])
        copies = []
        for _ in range(n):  # one copy at a time: a long stream's frames are held once, not n times
            view = augment_views(pixels[None], rng, crop, colours)[0]
            copies.append(ClipFeatures(orig.pts, embed_pixels(model, view)))
        out.append(copies)
    return out


def targets_and_texts(views: Sequence[View], task: TaskData, rng: np.random.Generator) -> tuple[list[str], "torch.Tensor"]:
    """Texts of a batch and the positives mask: all train classes, or one random caption per clip
    (equal captions of different clips are positives of each other)."""
    import torch

    if task.kind in (RECOGNITION, LOCALISATION):
        classes = list(task.train_classes)
        pos = torch.zeros(len(views), len(classes), dtype=torch.bool)
        for b, v in enumerate(views):
            pos[b, classes.index(v.target)] = True
        return task.texts(tuple(classes)), pos
    texts = [v.target[int(rng.integers(len(v.target)))] for v in views]
    pos = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.bool)
    return texts, pos


def actionness_batch(data: ClipData, window: int, size: int, rng: np.random.Generator) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Random windows of long streams: features [B, W, D] and per-frame targets [B, W] (inside a GT segment)."""
    import torch

    feats, targets = [], []
    for _ in range(size):
        i = int(rng.integers(len(data.refs)))
        f = data.features[i]
        lo = int(rng.integers(0, max(1, len(f) - window + 1)))
        pts = f.pts[lo : lo + window]
        inside = np.zeros(len(pts), np.float32)
        for seg in data.refs[i].segments:
            inside[(pts >= seg.start) & (pts < seg.end)] = 1.0
        feats.append(f.features[lo : lo + window])
        targets.append(inside)
    return torch.from_numpy(np.stack(feats)), torch.from_numpy(np.stack(targets))


def lr_lambda(warmup: int, steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


def check_augmentation(adapter: str, config: TrainConfig, reads_frames: bool) -> None:
    """Refuse augmentation settings that would do nothing for this adapter, rather than ignore them."""
    if reads_frames and config.copies:
        raise ValueError(f"{adapter} reads frames, whose views are augmented as they are drawn (crop, colours): "
                         f"feature copies (copies={config.copies}) are for adapters that read frozen features")
    if not reads_frames and not config.copies and (config.crop < 1.0 or config.colours):
        raise ValueError(f"{adapter} reads frozen features, not frames: crop and colours apply to its training "
                         "data only through augmented feature copies (copies N)")


def train(spec: "AdapterSpec", adapter: "Trainable", task: TaskData, data: ClipData, config: TrainConfig,
          log: Log = print) -> TrainReport:
    """Optimise the adapter's trainable parameters on the task's train side; the backbone must not change.

    spec: the adapter's AdapterSpec; it must declare TRAINABLE, and with LOCALISES localisation
    data also trains the proposal head (`Localising.proposal_loss`)."""
    import torch

    from streamvl.adapters.checkpoints import module_digest
    from streamvl.plugins.contract import TrainBatch

    spec.require(Capability.TRAINABLE, "training")
    check_augmentation(adapter.name, config, reads_frames=data.frames is not None)
    model = adapter.backbone
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    views = clip_views(task, data)
    if not views:
        raise ValueError(f"{task.name}: no training clips")
    localises = task.kind == LOCALISATION and spec.can(Capability.LOCALISES)
    localiser = cast("Localising", adapter) if localises else None
    reverses = trainable_reverses(task)
    recolour = config.colours and task.kind != RETRIEVAL  # captions name colours; class names: the caller decides
    before = module_digest(model.model)
    t0 = time.perf_counter()  # the copies' embedding is part of the training time
    if config.copies:  # check_augmentation: only for adapters that read features
        data = replace(data, copies=feature_copies(model, data, config.copies, config.crop, recolour, rng))
        log(f"{config.copies} augmented feature copies of {len(data.refs)} clips in {time.perf_counter() - t0:.1f}s")
    opt = torch.optim.AdamW(adapter.param_groups(config.lr), weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config.warmup, config.steps))
    losses: list[float] = []
    adapter.train()
    for step in range(config.steps):
        picked = [views[i] for i in rng.integers(len(views), size=config.batch_size)]
        if task.kind == LOCALISATION:
            picked = [jitter(v, len(data.features[v.clip]), rng) for v in picked]
        if reverses and config.backwards:
            picked = [backwards(v, reverses, config.backwards, rng) for v in picked]
        feats, frames = view_tensors(model, data, picked, config.frames, rng)
        if frames is not None and (config.crop < 1.0 or recolour):
            frames = augment_views(frames, rng, config.crop, recolour)
        texts, positives = targets_and_texts(picked, task, rng)
        loss, logs = adapter.training_loss(TrainBatch(feats, frames, texts, positives, task.kind != RETRIEVAL))
        if localiser is not None:
            w_feats, w_targets = actionness_batch(data, config.proposal_window, config.batch_size, rng)
            p_loss = localiser.proposal_loss(w_feats, w_targets)
            loss = loss + p_loss
            logs["proposal"] = float(p_loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        adapter.clip_gradients(config.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if config.log_every and (step % config.log_every == 0 or step == config.steps - 1):
            parts = " ".join(f"{k}={v:.3f}" for k, v in logs.items())
            log(f"step {step:5d}/{config.steps} loss={losses[-1]:.4f} {parts} ({time.perf_counter() - t0:.0f}s)")
    adapter.eval()
    after = module_digest(model.model)
    report = TrainReport(adapter.name, task.name, config.steps, time.perf_counter() - t0, losses[0], losses[-1],
                         losses, adapter.parameter_counts(), before, after)
    if not report.backbone_unchanged:
        raise RuntimeError(f"the frozen backbone changed during training ({before} -> {after})")
    return report


def seeded_adapter(spec: "AdapterSpec", model: "LoadedModel", options: Mapping[str, Any] | None, seed: int) -> Any:
    """A new adapter from its plugin spec (`AdapterSpec.build`) whose random initialisation is fixed by `seed`.

    `train` seeds its batches with the same seed, so one seed reproduces a whole run."""
    import torch

    torch.manual_seed(seed)
    return spec.build(model, dict(options or {}))


def run_training(adapter_name: str, data_spec: str, out: str | Path, *, model_spec: str = "default",
                 options: dict[str, Any] | None = None, config: TrainConfig = TrainConfig(),
                 cache: str | Path | None = None, fps: float = 2.0, shapes: Any = None,
                 class_template: str = DEFAULT_CLASS_TEMPLATE, log: Log = print) -> TrainReport:
    """Everything `streamvl train` does: load model and data, train, check the backbone, save.

    class_template: the sentence class names are put into (recorded in the checkpoint, which
    evaluation then uses by default)."""
    from streamvl.training.datasets import load_task
    from streamvl.pipeline.features import DEFAULT_ROOT
    from streamvl.models.loading import load_model
    from streamvl.plugins.manager import Plugins

    spec = Plugins().adapter(adapter_name)
    spec.require(Capability.TRAINABLE, "training")
    check_augmentation(adapter_name, config, spec.needs_frames)
    model = load_model(model_spec)
    if model.warning():
        log(f"WARNING: {model.warning()}")
    adapter = seeded_adapter(spec, model, options, config.seed)
    task = load_task(data_spec, image_size=model.image_size, fps=fps, shapes=shapes, class_template=class_template)
    store = FeatureStore(DEFAULT_ROOT if cache is None else cache, model)
    data = prepare(model, task.train, store, spec.needs_frames, log)
    counts = adapter.parameter_counts()
    log(f"{adapter_name}: {counts['trainable']:,} trainable parameters of {counts['total']:,} "
        f"(frozen backbone {counts['backbone']:,})")
    report = train(spec, adapter, task, data, config, log)
    classes = list(task.train_classes) if task.kind != "retrieval" else []
    path = adapter.save(out, {"data": task.name, "kind": task.kind, "classes": classes,
                              "class_texts": {c: task.class_texts.get(c, c) for c in classes},
                              "class_template": class_template,
                              "train": {**report.summary(), "config": asdict(config)}})
    log(f"backbone weights unchanged: {report.backbone_unchanged} ({report.backbone_sha256_after[:16]})")
    log(f"saved {path} and {path.with_suffix('.json')} ({report.seconds:.1f}s training)")
    return report
