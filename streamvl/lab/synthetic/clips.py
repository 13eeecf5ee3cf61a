"""Clips and long streams: specs (plain data, cheap), their frames, labels, captions, segments, mp4s.

A ClipSpec is everything needed to render: initial objects, timed events, background, size, fps.
Frame i is at pts i / fps; nothing is rendered until frames are asked for, so splits of
thousands of specs build in well under a second and frames can be streamed (`iter_frames`).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from streamvl.adapters.exposure import EXPOSURE_DECAY, EXPOSURE_FRAMES, exposure_indices, recency_weights  # noqa: F401
from streamvl.errors import ConfigError
from streamvl.lab.synthetic.actions import (
    ACTIONS,
    INSTANT_ACTIONS,
    POS_RANGE,
    Event,
    apply_event,
    compose_label,
    local_time,
    path,
    reverse_event,
    sample_event,
)
from streamvl.lab.synthetic.captions import sequence_captions, static_caption
from streamvl.lab.synthetic.world import (
    TRAIN,
    Background,
    Domain,
    ObjectState,
    SceneState,
    position_name,
    render_background,
    render_frame,
    sample_background,
    sample_size,
    sample_still_scene,
    size_name,
)


@dataclass(frozen=True)
class RenderConfig:
    """Frame size, rate and clip length (frames). Width and height must be even for yuv420p mp4s."""

    width: int = 112
    height: int = 112
    fps: float = 8.0
    n_frames: int = 16


@dataclass(frozen=True)
class ClipSpec:
    """A renderable clip or long stream: frame i shows the scene at pts i / fps seconds."""

    seed: int
    label: str
    width: int
    height: int
    fps: float
    n_frames: int
    background: Background
    objects: tuple[ObjectState, ...]
    events: tuple[Event, ...]
    domain: str = "train"

    @property
    def last_pts(self) -> float:
        """pts of the last frame; clip reversal mirrors time around last_pts / 2."""
        return (self.n_frames - 1) / self.fps

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps


@dataclass(frozen=True)
class GTSegment:
    """A ground-truth event of a stream: [start, end] seconds, action label, captions."""

    start: float
    end: float
    label: str
    captions: tuple[str, ...] = field(default=(), compare=False)


class Timeline:
    """Object states of a spec at any time: per object, its events in order and the state after each."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self._tracks: list[tuple[list[float], list[Event], list[ObjectState]]] = []
        for i, obj in enumerate(spec.objects):
            events = sorted((e for e in spec.events if e.obj == i), key=lambda e: e.start)
            states = [obj]  # states[k] = state before event k
            for ev in events:
                states.append(apply_event(states[-1], ev, 1.0))
            self._tracks.append(([e.start for e in events], events, states))

    def object_at(self, i: int, tau: float) -> ObjectState:
        starts, events, states = self._tracks[i]
        k = bisect_right(starts, tau) - 1
        if k < 0:
            return states[0]
        ev = events[k]
        return states[k + 1] if tau >= ev.end else apply_event(states[k], ev, local_time(ev, tau))

    def scene_at(self, tau: float) -> SceneState:
        return SceneState(self.spec.background, tuple(self.object_at(i, tau) for i in range(len(self.spec.objects))))

    def before(self, ev: Event) -> ObjectState:
        """The acting object's state when `ev` starts."""
        starts, events, states = self._tracks[ev.obj]
        return states[events.index(ev)]


def frame_times(spec: ClipSpec) -> np.ndarray:
    """pts (seconds, float64) of every frame."""
    return np.arange(spec.n_frames, dtype=np.float64) / spec.fps


def clip_states(spec: ClipSpec) -> list[SceneState]:
    """Scene state of every frame, without rendering (for statistics and captions)."""
    tl = Timeline(spec)
    return [tl.scene_at(float(t)) for t in frame_times(spec)]


def iter_frames(spec: ClipSpec, start: float = 0.0, stop: float | None = None, supersample: int = 2) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (pts, uint8 [H, W, 3]) for frames with start <= pts < stop: a live source can pace these."""
    tl = Timeline(spec)
    bg = render_background(spec.background, spec.width, spec.height)
    for t in frame_times(spec):
        if t < start or (stop is not None and t >= stop):
            continue
        yield float(t), render_frame(tl.scene_at(float(t)), spec.width, spec.height, background=bg, supersample=supersample)




def exposure(spec: ClipSpec, width: int, height: int, frames: int = EXPOSURE_FRAMES, decay: float = EXPOSURE_DECAY) -> np.ndarray:
    """A clip's first event as one still, like a long exposure that favours its end: uint8 [H, W, 3].

    The mean of `frames` renders spread over the event, frame k weighted decay ** (age in frames),
    so the end state dominates and earlier moments show as fainter traces: a left move leaves a
    trail on the right, a shrinking shape a faint rim, a colour change a tint of the old colour.
    This is how a still photograph of a moving thing carries its motion (blur, streaks); a
    single video frame carries none of it.
    """
    ev = min(spec.events, key=lambda e: e.start)
    tl = Timeline(spec)
    bg = render_background(spec.background, width, height)
    taus = np.linspace(ev.start, ev.end, frames)
    return recency_blend(np.stack([render_frame(tl.scene_at(float(t)), width, height, background=bg) for t in taus]), decay)


def recency_blend(frames: np.ndarray, decay: float = EXPOSURE_DECAY) -> np.ndarray:
    """Frames [K, H, W, 3] (oldest first) averaged with weight decay ** (age in frames): uint8 [H, W, 3].

    The blend `exposure` makes of an event; applied to any clip's frames it gives the still a
    model pretrained on exposures reads motion from.
    """
    w = recency_weights(len(frames), decay)
    return np.clip(np.tensordot(w, frames.astype(np.float32), axes=1) + 0.5, 0, 255).astype(np.uint8)


def render_clip(spec: ClipSpec, supersample: int = 2) -> np.ndarray:
    """All frames, uint8 [N, H, W, 3]."""
    return np.stack([f for _, f in iter_frames(spec, supersample=supersample)])


def reverse_clip(spec: ClipSpec) -> ClipSpec:
    """The clip played backwards, as a spec: frame i of the result equals frame n-1-i of `spec`.

    Order-pair actions become their pair (move_left -> move_right from the end position).
    """
    tl = Timeline(spec)
    end = tl.scene_at(spec.last_pts).objects
    events = tuple(sorted((reverse_event(e, spec.last_pts) for e in spec.events), key=lambda e: e.start))
    label = "stream" if spec.label == "stream" else compose_label([e.action for e in events])
    return replace(spec, objects=end, events=events, label=label)


def _windows(rng: np.random.Generator, actions: Sequence[str], total: float) -> list[tuple[float, float]]:
    """One window per step in consecutive equal slots; mirror-symmetric in distribution.

    Sustained actions fill their slot but for a random 0..15% at each end; instant ones take
    15..35% of the slot around its middle (+-20%).
    """
    slot = total / len(actions)
    out = []
    for k, name in enumerate(actions):
        s0 = k * slot
        if name in INSTANT_ACTIONS:
            centre = s0 + slot * (0.5 + float(rng.uniform(-0.2, 0.2)))
            half = slot * float(rng.uniform(0.15, 0.35)) / 2
            out.append((centre - half, centre + half))
        else:
            out.append((s0 + slot * float(rng.uniform(0, 0.15)), s0 + slot * (1 - float(rng.uniform(0, 0.15)))))
    return out


def _clear(p: np.ndarray, others: Sequence[np.ndarray], gap: float = 0.02) -> bool:
    """Whether path p [k, 3] (x, y, r) keeps away from every other path."""
    for q in others:
        d = np.hypot(p[:, None, 0] - q[None, :, 0], p[:, None, 1] - q[None, :, 1])
        if np.any(d < 1.2 * (p[:, None, 2] + q[None, :, 2]) + gap):
            return False
    return True


def _free_object(rng: np.random.Generator, combo: tuple[str, str]) -> ObjectState:
    x, y = rng.uniform(*POS_RANGE, size=2)
    return ObjectState(combo[0], combo[1], sample_size(rng), float(x), float(y), angle=float(rng.uniform(0, 2 * math.pi)))


def _combo_for(rng: np.random.Generator, action: str, pool: Sequence[tuple[str, str]], used: set[tuple[str, str]]) -> tuple[str, str]:
    ok = [c for c in pool if c not in used and not (action.startswith("rotate") and c[0] == "circle")]
    return ok[int(rng.integers(len(ok)))]


def _place_actor(
    rng: np.random.Generator,
    name: str,
    index: int,
    window: tuple[float, float],
    domain: Domain,
    used: set[tuple[str, str]],
    paths: list[np.ndarray],
) -> tuple[ObjectState, Event, np.ndarray]:
    """An acting object whose whole path stays clear of the objects placed so far (best effort)."""
    for attempt in range(30):
        obj = _free_object(rng, _combo_for(rng, name, domain.actor_combos, used))
        found = sample_event(name, obj, index, *window, rng, domain=domain, avoid=frozenset(used))
        if found is None:
            continue
        obj, ev = found
        p = path(obj, ev)
        if _clear(p, paths) or attempt == 29:
            return obj, ev, p
    raise RuntimeError(f"could not place an object for {name!r}")  # only if the domain has no usable combo


def _distractors(rng: np.random.Generator, n: int, domain: Domain, used: set[tuple[str, str]], paths: list[np.ndarray]) -> list[ObjectState]:
    """Up to n static objects that stay clear of every actor path and wear combos no actor wears."""
    out: list[ObjectState] = []
    for _ in range(n):
        for _ in range(20):
            obj = _free_object(rng, _combo_for(rng, "", domain.other_combos, used))
            p = np.array([[obj.x, obj.y, obj.size]])
            if _clear(p, paths):
                used.add(obj.combo)
                paths.append(p)
                out.append(obj)
                break
    return out


def sample_composition(
    seed: int,
    actions: Sequence[str],
    *,
    domain: Domain = TRAIN,
    render: RenderConfig = RenderConfig(),
    n_distractors: int | None = None,
) -> ClipSpec:
    """A clip where distinct objects perform `actions` one after another (one action: a plain clip).

    Up to 3 objects in all: the actors, then static distractors (random count unless given),
    drawn first so actors are on top. Everything follows from `seed`.
    """
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown or not actions:
        raise ConfigError(f"unknown or no actions {list(actions)}; known: {ACTIONS}")
    rng = np.random.default_rng(seed)
    bg = sample_background(rng, domain)
    windows = _windows(rng, actions, (render.n_frames - 1) / render.fps)
    used: set[tuple[str, str]] = set()
    actors, events, paths = [], [], []
    for i, (name, window) in enumerate(zip(actions, windows)):
        obj, ev, p = _place_actor(rng, name, i, window, domain, used, paths)
        used.update({obj.combo} | ({(obj.shape, ev.colours[1])} if ev.colours else set()))
        actors.append(obj)
        events.append(ev)
        paths.append(p)
    room = max(0, 3 - len(actors))
    n = int(rng.integers(0, room + 1)) if n_distractors is None else min(n_distractors, room)
    distract = _distractors(rng, n, domain, used, paths)
    events = [replace(e, obj=e.obj + len(distract)) for e in events]
    return ClipSpec(
        seed, compose_label(actions), render.width, render.height, render.fps, render.n_frames,
        bg, tuple(distract + actors), tuple(events), domain.name,
    )


def sample_clip(seed: int, action: str, *, domain: Domain = TRAIN, render: RenderConfig = RenderConfig(), n_distractors: int | None = None) -> ClipSpec:
    """A clip of one action (plus static distractors): see sample_composition."""
    return sample_composition(seed, (action,), domain=domain, render=render, n_distractors=n_distractors)


def _stream_event(rng: np.random.Generator, objects: list[ObjectState], actions: Sequence[str], start: float, domain: Domain) -> Event | None:
    """One feasible action by one object from its current state; None after 30 failed tries."""
    for _ in range(30):
        name = actions[int(rng.integers(len(actions)))]
        dur = float(rng.uniform(0.5, 1.2) if name in INSTANT_ACTIONS else rng.uniform(1.5, 3.5))
        i = int(rng.integers(len(objects)))
        avoid = frozenset(o.combo for j, o in enumerate(objects) if j != i)
        found = sample_event(name, objects[i], i, start, start + dur, rng, anchored=True, domain=domain, avoid=avoid)
        if found is None:
            continue
        others = [np.array([[o.x, o.y, o.size]]) for j, o in enumerate(objects) if j != i and o.alpha > 0]
        if _clear(path(*found), others):
            return found[1]
    return None


def sample_stream(
    seed: int,
    duration: float = 120.0,
    *,
    domain: Domain = TRAIN,
    width: int = 112,
    height: int = 112,
    fps: float = 8.0,
    gap: tuple[float, float] = (2.0, 6.0),
    actions: Sequence[str] = ACTIONS,
    n_objects: int | None = None,
) -> ClipSpec:
    """A long stream: 1-3 persistent objects act one at a time, separated by idle gaps of `gap` seconds.

    Each event starts from the object's current state, so the stream is continuous; some objects
    start hidden so `appear` can happen. Ground truth comes from `segments(spec)`.
    """
    rng = np.random.default_rng(seed)
    bg = sample_background(rng, domain)
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    objects: list[ObjectState] = []
    used: set[tuple[str, str]] = set()
    for _ in range(n):
        for _ in range(20):
            obj = _free_object(rng, _combo_for(rng, "", domain.actor_combos, used))
            if _clear(np.array([[obj.x, obj.y, obj.size]]), [np.array([[o.x, o.y, o.size]]) for o in objects]):
                break
        used.add(obj.combo)
        objects.append(replace(obj, alpha=0.0) if rng.uniform() < 0.25 else obj)
    initial = tuple(objects)
    n_frames = int(round(duration * fps))
    last = (n_frames - 1) / fps
    events: list[Event] = []
    tau = float(rng.uniform(*gap))
    while tau < last:
        ev = _stream_event(rng, objects, actions, tau, domain)
        if ev is None:
            tau += float(rng.uniform(*gap))
            continue
        if ev.end > last - gap[0]:
            break
        events.append(ev)
        objects[ev.obj] = apply_event(objects[ev.obj], ev, 1.0)
        tau = ev.end + float(rng.uniform(*gap))
    return ClipSpec(seed, "stream", width, height, fps, n_frames, bg, initial, tuple(events), domain.name)


def clip_captions(spec: ClipSpec, n: int = 4) -> tuple[str, ...]:
    """n phrasings of a clip's events in time order; the first is canonical ("a red circle moves left")."""
    tl = Timeline(spec)
    steps = [(tl.before(e), e) for e in sorted(spec.events, key=lambda e: e.start)]
    if not steps:
        return ()
    return sequence_captions(steps, spec.background.family, np.random.default_rng([spec.seed, 1]), n)


def segments(spec: ClipSpec, n_captions: int = 3) -> tuple[GTSegment, ...]:
    """Ground-truth (start, end, label, captions) of every event, in time order."""
    tl = Timeline(spec)
    rng = np.random.default_rng([spec.seed, 2])
    out = []
    for e in sorted(spec.events, key=lambda e: e.start):
        caps = sequence_captions([(tl.before(e), e)], spec.background.family, rng, n_captions)
        out.append(GTSegment(e.start, e.end, e.action, caps))
    return tuple(out)


def sample_still(rng: np.random.Generator, size: int | tuple[int, int] = 64, domain: Domain = TRAIN) -> tuple[np.ndarray, str, dict[str, object]]:
    """A still for image pretraining: (uint8 [H, W, 3], static caption, attributes).

    attributes: {"background": family, "objects": [{"shape", "colour", "size", "position", "x", "y"}]}.
    """
    w, h = (size, size) if isinstance(size, int) else size
    scene = sample_still_scene(rng, domain)
    image = render_frame(scene, w, h)
    objs = [
        {"shape": o.shape, "colour": o.colour, "size": size_name(o.size), "position": position_name(o.x, o.y), "x": o.x, "y": o.y}
        for o in scene.objects
    ]
    return image, static_caption(scene, rng), {"background": scene.background.family, "objects": objs}
