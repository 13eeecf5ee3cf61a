"""The shapes world: shapes, colours, sizes, backgrounds, object and scene state, frame rendering.

Conventions (everything else in `streamvl.lab.synthetic` relies on them):
- x, y: object centre, normalised to [0, 1] of width / height, y pointing down (image rows).
- size: radius as a fraction of min(width, height); names via `size_name`.
- angle: radians; a growing angle turns the object clockwise on screen (because y points down).
- alpha: 0 invisible .. 1 opaque; colour_to / mix: a colour change in progress (mix 0 -> 1).

Rendering is numpy plus PIL ImageDraw masks, supersampled for antialiasing, drawn only inside
each object's bounding box so it stays cheap at 64x64 (contrastive pretraining) and at 224x224.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import product

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 20),
    "purple": (135, 40, 190),
    "orange": (255, 135, 0),
    "white": (248, 248, 248),
    "black": (15, 15, 15),
    "pink": (255, 110, 190),
    "cyan": (0, 215, 225),
}
SIZES: dict[str, float] = {"small": 0.08, "medium": 0.12, "large": 0.17}
BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "stripes", "gradient", "checker")
BACKGROUND_WORDS: dict[str, str] = {
    "plain": "plain",
    "noise": "noisy",
    "stripes": "striped",
    "gradient": "gradient",
    "checker": "checkered",
}

# Held out of every training sample (stills, clips, streams, including distractors and the
# target colour of change_colour): one colour per shape, each colour held out at most once, so
# every shape and every colour is still seen in training, only these pairings are new at test.
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {("circle", "green"), ("square", "orange"), ("triangle", "blue"), ("star", "purple"), ("cross", "red"), ("heart", "yellow")}
)
HELD_OUT_BACKGROUND = "checker"

_QUANT = float(2**20)  # state values snap to this grid so time-reversed clips render bit-identically


@dataclass(frozen=True, repr=False)
class Domain:
    """Which objects and backgrounds a sampler may use: train and test differ (see module constants).

    actor_combos: (shape, colour) of the objects that act (and the first object of a still);
    other_combos: distractors and extra still objects; backgrounds with sampling weights.
    """

    name: str
    actor_combos: tuple[tuple[str, str], ...]
    other_combos: tuple[tuple[str, str], ...]
    backgrounds: tuple[str, ...]
    background_p: tuple[float, ...]

    def __repr__(self) -> str:  # the combo lists are long; the name says which domain it is
        return f"Domain({self.name!r})"

    def allows(self, shape: str, colour: str) -> bool:
        """Whether an object of this shape may wear this colour in this domain."""
        return (shape, colour) in self.actor_combos or (shape, colour) in self.other_combos


_ALL_COMBOS = tuple(product(SHAPES, COLOURS))
_TRAIN_COMBOS = tuple(c for c in _ALL_COMBOS if c not in HELD_OUT_COMBOS)
_TEST_ACTOR_COMBOS = tuple(c for c in _ALL_COMBOS if c in HELD_OUT_COMBOS)
_TRAIN_BACKGROUNDS = tuple(b for b in BACKGROUNDS if b != HELD_OUT_BACKGROUND)

TRAIN = Domain("train", _TRAIN_COMBOS, _TRAIN_COMBOS, _TRAIN_BACKGROUNDS, (0.25, 0.25, 0.25, 0.25))
# Test: acting objects always wear a held-out combo; half the backgrounds are the held-out family.
TEST = Domain("test", _TEST_ACTOR_COMBOS, _ALL_COMBOS, BACKGROUNDS, (0.125, 0.125, 0.125, 0.125, 0.5))
# Backbone pretraining (stills only): every shape-colour combo, training backgrounds only. Real
# CLIP has seen every colour of every shape before it meets video; held-out combos are held out of
# the video splits (adapter training). Pretraining on TRAIN instead (combos held out too) is the
# strict variant: the tiny model then fails on the unseen combos (see the README model card).
PRETRAIN = Domain("pretrain", _ALL_COMBOS, _ALL_COMBOS, _TRAIN_BACKGROUNDS, (0.25, 0.25, 0.25, 0.25))
DOMAINS: dict[str, Domain] = {"train": TRAIN, "test": TEST, "pretrain": PRETRAIN}


@dataclass(frozen=True)
class Background:
    """A background family plus the seed that fixes its tones and texture (static over a clip)."""

    family: str
    seed: int


@dataclass(frozen=True)
class ObjectState:
    """One object at one instant (see the module doc for units)."""

    shape: str
    colour: str
    size: float
    x: float
    y: float
    angle: float = 0.0
    alpha: float = 1.0
    colour_to: str | None = None
    mix: float = 0.0

    @property
    def shown_colour(self) -> str:
        """The colour name a viewer would report (the dominant one during a change)."""
        return self.colour_to if self.colour_to is not None and self.mix >= 0.5 else self.colour

    @property
    def combo(self) -> tuple[str, str]:
        return (self.shape, self.shown_colour)


@dataclass(frozen=True)
class SceneState:
    """A whole frame's content: background plus objects, drawn in order (last on top)."""

    background: Background
    objects: tuple[ObjectState, ...]


def size_name(size: float) -> str:
    """Nearest size word on a log scale: small / medium / large."""
    return min(SIZES, key=lambda k: abs(math.log(size / SIZES[k])))


def position_name(x: float, y: float) -> str:
    """Static position phrase from the 3x3 grid: 'on the left', 'at the top right', 'in the centre'."""
    col = 0 if x < 1 / 3 else (2 if x > 2 / 3 else 1)
    row = 0 if y < 1 / 3 else (2 if y > 2 / 3 else 1)
    vert, horiz = ("top", "", "bottom")[row], ("left", "", "right")[col]
    if not vert and not horiz:
        return "in the centre"
    if not vert:
        return f"on the {horiz}"
    return f"at the {vert} {horiz}".rstrip()


# Rotational symmetry order: a shape looks the same every 2*pi/order radians (the circle has no pose).
SYMMETRY: dict[str, int] = {"square": 4, "triangle": 3, "star": 5, "cross": 4, "heart": 1}
# |tilt| bounds of the pose words below: upright, slightly tilted, tilted, inverted (half a period away).
POSE_BOUNDS: tuple[float, float, float] = (0.15, 0.45, 0.8)


def tilt(obj: ObjectState) -> float | None:
    """Signed turn away from upright as a fraction of half the shape's symmetry period, in [-1, 1).

    Upright is angle 0 (a point or a side on top). Positive means turned clockwise (the top leans
    right). None for the circle, whose look does not depend on its angle.
    """
    order = SYMMETRY.get(obj.shape)
    if order is None:
        return None
    half = math.pi / order
    return ((obj.angle + half) % (2 * half) - half) / half


def pose_name(obj: ObjectState) -> str | None:
    """Static pose phrase from `tilt`: 'upright', 'tilted slightly to the right', 'tilted to the left', 'inverted'.

    None for the circle. A sequence of poses is what a video model needs to tell a clockwise turn
    from a counter-clockwise one; the phrase itself names a still, not a motion.
    """
    t = tilt(obj)
    if t is None:
        return None
    upright, slight, tilted = POSE_BOUNDS
    side = "right" if t > 0 else "left"
    if abs(t) < upright:
        return "upright"
    if abs(t) < slight:
        return f"tilted slightly to the {side}"
    return f"tilted to the {side}" if abs(t) < tilted else "inverted"


def with_tilt(obj: ObjectState, t: float) -> ObjectState:
    """The object turned to tilt `t` (see `tilt`); the circle is returned unchanged."""
    order = SYMMETRY.get(obj.shape)
    return obj if order is None else replace(obj, angle=t * math.pi / order)


def object_rgb(obj: ObjectState) -> np.ndarray:
    """RGB float32 [3] of the object, blending during a colour change."""
    rgb = np.asarray(COLOURS[obj.colour], np.float32)
    mix = _q(obj.mix)
    if obj.colour_to is None or mix <= 0.0:
        return rgb
    other = np.asarray(COLOURS[obj.colour_to], np.float32)
    return rgb * np.float32(1.0 - mix) + other * np.float32(mix)


@lru_cache(maxsize=None)
def unit_polygon(shape: str) -> np.ndarray | None:
    """Vertices [N, 2] of a shape of radius ~1 centred at 0 (y down); None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        s = 0.85
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        pts = [(1.15 * math.cos(a), 1.15 * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif shape == "star":
        pts = [
            ((1.15 if k % 2 == 0 else 0.47) * math.cos(-math.pi / 2 + k * math.pi / 5),
             (1.15 if k % 2 == 0 else 0.47) * math.sin(-math.pi / 2 + k * math.pi / 5))
            for k in range(10)
        ]
    elif shape == "cross":
        w, ln = 0.34, 1.0
        pts = [(-w, -ln), (w, -ln), (w, -w), (ln, -w), (ln, w), (w, w), (w, ln), (-w, ln), (-w, w), (-ln, w), (-ln, -w), (-w, -w)]
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        hx = 16 * np.sin(t) ** 3
        hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        hy = hy - (hy.max() + hy.min()) / 2
        scale = 1.05 / max(np.abs(hx).max(), np.abs(hy).max())
        pts = list(zip(hx * scale, hy * scale))
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    arr = np.asarray(pts, np.float64)
    arr.setflags(write=False)
    return arr


def _q(v: float) -> float:
    """Snap to a fine grid: values equal up to float rounding render identically."""
    return round(v * _QUANT) / _QUANT


def _object_mask(obj: ObjectState, width: int, height: int, ss: int) -> tuple[np.ndarray, int, int] | None:
    """Antialiased coverage [h, w] in [0, 1] of the object's bounding box, plus its top-left pixel."""
    r = _q(obj.size) * min(width, height)
    cx, cy = _q(obj.x) * width, _q(obj.y) * height
    ext = 1.2 * r + 1.0
    x0, x1 = max(int(math.floor(cx - ext)), 0), min(int(math.ceil(cx + ext)), width)
    y0, y1 = max(int(math.floor(cy - ext)), 0), min(int(math.ceil(cy + ext)), height)
    if x1 <= x0 or y1 <= y0 or r <= 0:
        return None
    img = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(img)
    ox, oy = (cx - x0) * ss, (cy - y0) * ss
    poly = unit_polygon(obj.shape)
    if poly is None:
        rs = r * ss
        draw.ellipse((ox - rs, oy - rs, ox + rs, oy + rs), fill=255)
    else:
        a = _q(obj.angle)
        c, s = math.cos(a), math.sin(a)
        rot = np.array([[c, s], [-s, c]]) * (r * ss)  # row vectors: p @ rot
        pts = poly @ rot + (ox, oy)
        draw.polygon(pts.ravel().tolist(), fill=255)
    if ss > 1:
        img = img.reduce(ss)
    return np.asarray(img, np.float32) * np.float32(1 / 255), x0, y0


@lru_cache(maxsize=16)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (xs, ys) float32 [H, W], normalised by min(width, height)."""
    scale = float(min(width, height))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs, ys = (xs + 0.5) / scale, (ys + 0.5) / scale
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def _tone(rng: np.random.Generator) -> np.ndarray:
    """A mid grey with a faint tint: every object colour, black and white included, stands out."""
    return (rng.uniform(95, 160) + rng.uniform(-12, 12, 3)).astype(np.float32)


def _two_tone(rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """Two nearby tones chosen by a 0/1 integer pattern [H, W] -> [H, W, 3]."""
    base, delta = _tone(rng), np.float32(rng.uniform(18, 32))
    return np.take(np.stack([base - delta, base + delta]), pattern, axis=0)


def render_background(bg: Background, width: int, height: int) -> np.ndarray:
    """The background as float32 [H, W, 3] in 0..255, fully determined by bg.seed.

    Built by palette lookups (np.take) rather than broadcasting over the colour axis: several
    times faster at 64x64, which matters for still sampling.
    """
    rng = np.random.default_rng(bg.seed)
    xs, ys = _grid(width, height)
    if bg.family == "plain":
        return np.take(_tone(rng)[None], np.zeros((height, width), np.intp), axis=0)
    if bg.family == "noise":  # uniform noise: grey levels by palette, plus a little colour
        sigma = rng.uniform(10, 22) * math.sqrt(12)
        levels = _tone(rng)[None] + (np.arange(256, dtype=np.float32)[:, None] / 255 - 0.5) * np.float32(sigma)
        out = np.take(levels, rng.integers(0, 256, (height, width), dtype=np.uint8).astype(np.intp), axis=0)
        colour = rng.integers(0, 256, (height, width, 3), dtype=np.uint8).astype(np.float32)
        out += (colour - np.float32(127.5)) * np.float32(0.3 * sigma / 255)
        return np.clip(out, 0, 255, out=out)
    if bg.family == "stripes":
        theta, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.2)
        proj = (xs * np.float32(math.cos(theta)) + ys * np.float32(math.sin(theta))) / np.float32(period)
        return _two_tone(rng, np.floor(proj + np.float32(rng.uniform())).astype(np.intp) & 1)
    if bg.family == "gradient":  # 256-step ramp between two tones along a random direction
        theta = rng.uniform(0, 2 * np.pi)
        proj = xs * np.float32(math.cos(theta)) + ys * np.float32(math.sin(theta))
        lo, hi = float(proj.min()), float(proj.max())
        idx = ((proj - np.float32(lo)) * np.float32(255.0 / max(hi - lo, 1e-6)) + np.float32(0.5)).astype(np.intp)
        a, b = _tone(rng), _tone(rng)
        ramp = a[None] + (b - a)[None] * (np.arange(256, dtype=np.float32)[:, None] / 255)
        return np.take(ramp, idx, axis=0)
    if bg.family == "checker":
        cell = np.float32(rng.uniform(0.08, 0.18))
        ox, oy = np.float32(rng.uniform()), np.float32(rng.uniform())
        cells = np.floor(xs / cell + ox).astype(np.intp) + np.floor(ys / cell + oy).astype(np.intp)
        return _two_tone(rng, cells & 1)
    raise ValueError(f"unknown background family {bg.family!r}; known: {BACKGROUNDS}")


def render_frame(
    scene: SceneState,
    width: int,
    height: int,
    *,
    background: np.ndarray | None = None,
    supersample: int = 2,
) -> np.ndarray:
    """Draw a scene -> uint8 [H, W, 3] RGB. Pass `background` (from render_background) to reuse it across frames."""
    canvas = (render_background(scene.background, width, height) if background is None else background).astype(
        np.float32, copy=True
    )
    for obj in scene.objects:
        alpha = _q(obj.alpha)
        if alpha <= 0.0:
            continue
        found = _object_mask(obj, width, height, supersample)
        if found is None:
            continue
        mask, x0, y0 = found
        region = canvas[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        cover = (mask * np.float32(alpha))[..., None]
        region += (object_rgb(obj) - region) * cover
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def sample_background(rng: np.random.Generator, domain: Domain = TRAIN) -> Background:
    """A background family drawn with the domain's weights, plus a fresh texture seed."""
    cum = np.cumsum(domain.background_p)
    family = domain.backgrounds[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(cum) - 1)]
    return Background(family, int(rng.integers(2**62)))


def sample_size(rng: np.random.Generator, name: str | None = None) -> float:
    """A radius near one of the size buckets (uniformly chosen unless named), jittered by +-8%."""
    name = name or tuple(SIZES)[int(rng.integers(len(SIZES)))]
    return SIZES[name] * float(rng.uniform(0.92, 1.08))


_CELL_CENTRES = (0.2, 0.5, 0.8)  # well inside the thirds, so still captions name positions unambiguously


def sample_still_scene(rng: np.random.Generator, domain: Domain = TRAIN, max_objects: int = 3) -> SceneState:
    """A random still: 1..max_objects objects in distinct 3x3 cells, distinct (shape, colour) combos.

    The first object comes from domain.actor_combos, the rest from domain.other_combos.
    Objects that would overlap are dropped rather than drawn on top of each other.
    """
    n = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(9, size=n, replace=False)
    objects: list[ObjectState] = []
    used: set[tuple[str, str]] = set()
    for i, cell in enumerate(cells):
        pool = domain.actor_combos if i == 0 else domain.other_combos
        shape, colour = pool[int(rng.integers(len(pool)))]
        if (shape, colour) in used:
            continue
        size = sample_size(rng)
        x = _CELL_CENTRES[int(cell) % 3] + float(rng.uniform(-0.07, 0.07))
        y = _CELL_CENTRES[int(cell) // 3] + float(rng.uniform(-0.07, 0.07))
        if any(math.hypot(x - o.x, y - o.y) < 1.15 * (size + o.size) for o in objects):
            continue
        used.add((shape, colour))
        objects.append(ObjectState(shape, colour, size, x, y, angle=float(rng.uniform(0, 2 * np.pi))))
    return SceneState(sample_background(rng, domain), tuple(objects))
