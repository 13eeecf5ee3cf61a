"""Captions: static ones for single frames (no motion, no order) and several phrasings per clip.

Static captions name only shape, colour, size, position, background and (optionally) pose, so an
image model pretrained on them learns nothing about motion or order: that is left to the video adapters.
Clip captions keep the order of events ("X appears, then Y moves left") in every phrasing.
The first phrasing of a clip is canonical and plain ("a red circle moves left"): use it as the
retrieval query when one text per clip is wanted.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from streamvl.lab.synthetic.actions import Event
from streamvl.lab.synthetic.world import BACKGROUND_WORDS, ObjectState, SceneState, pose_name, position_name, size_name

# Words no static caption may contain (tests check this; keep in sync with the phrases below).
MOTION_WORDS: frozenset[str] = frozenset(
    "move moves moving slides sliding travels travelling rises rising drops dropping up down upwards "
    "downwards rotate rotates rotating spins spinning turns turning clockwise counter-clockwise anticlockwise "
    "grow grows growing bigger larger smaller shrink shrinks shrinking appear appears appearing "
    "disappear disappears disappearing vanishes vanishing fades fading shows blink blinks blinking "
    "flashes flashing flickers flickering bounce bounces bouncing hops hopping change changes changing "
    "colour then after afterwards first before while".split()
)

# (present, participle) phrasings; {src} / {dst} are the colours of change_colour.
_VERBS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "move_left": (("moves left", "moves to the left", "slides to the left", "travels left"),
                  ("moving left", "moving to the left", "sliding to the left")),
    "move_right": (("moves right", "moves to the right", "slides to the right", "travels right"),
                   ("moving right", "moving to the right", "sliding to the right")),
    "move_up": (("moves up", "moves upwards", "rises"), ("moving up", "moving upwards", "rising")),
    "move_down": (("moves down", "moves downwards", "drops down"), ("moving down", "moving downwards", "dropping down")),
    "rotate_cw": (("rotates clockwise", "spins clockwise", "turns clockwise"),
                  ("rotating clockwise", "spinning clockwise", "turning clockwise")),
    "rotate_ccw": (("rotates counter-clockwise", "spins anticlockwise", "turns counter-clockwise"),
                   ("rotating counter-clockwise", "spinning anticlockwise", "turning counter-clockwise")),
    "grow": (("grows", "gets bigger", "grows larger"), ("growing", "getting bigger", "growing larger")),
    "shrink": (("shrinks", "gets smaller", "shrinks down"), ("shrinking", "getting smaller")),
    "appear": (("appears", "fades in", "shows up"), ("appearing", "fading in")),
    "disappear": (("disappears", "vanishes", "fades out"), ("disappearing", "vanishing", "fading out")),
    "blink": (("blinks", "flashes on and off", "flickers"), ("blinking", "flashing on and off", "flickering")),
    "bounce": (("bounces", "bounces up and down", "hops"), ("bouncing", "bouncing up and down", "hopping")),
    "change_colour": (("turns {dst}", "changes colour from {src} to {dst}", "changes from {src} to {dst}"),
                      ("turning {dst}", "changing colour from {src} to {dst}", "changing to {dst}")),
}


_SINGLE = (
    "a {colour} {shape} {vp}",
    "a {shape}, {colour}, {ing}",
    "a {size} {colour} {shape} {vp}",
    "the {colour} {shape} is {ing}",
    "a {colour} {shape} {vp} on a {bg} background",
    "a video of a {colour} {shape} {ing}",
)
_STATIC = ("{objs}", "{objs} on a {bg} background", "a {bg} background with {objs}", "a picture of {objs}")


_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiou])")


def _articles(text: str) -> str:
    """'a orange circle' -> 'an orange circle'."""
    return _BEFORE_VOWEL.sub(r"\1n ", text)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _verb(ev: Event, participle: bool, rng: np.random.Generator | None) -> str:
    """A verb phrase for the event: the first (plain) one without rng, a random one with it."""
    options = _VERBS[ev.action][1 if participle else 0]
    text = options[0] if rng is None else _pick(rng, options)
    if ev.colours is not None:
        text = text.format(src=ev.colours[0], dst=ev.colours[1])
    return text


def _fields(obj: ObjectState, ev: Event, bg: str, rng: np.random.Generator | None) -> dict[str, str]:
    return {
        "colour": obj.shown_colour, "shape": obj.shape, "size": size_name(obj.size), "bg": BACKGROUND_WORDS[bg],
        "vp": _verb(ev, False, rng), "ing": _verb(ev, True, rng),
    }


def event_captions(obj: ObjectState, ev: Event, background: str, rng: np.random.Generator, n: int = 4) -> tuple[str, ...]:
    """n phrasings of one action by one object (its state when the event starts); the first is canonical."""
    first = _SINGLE[0].format(**_fields(obj, ev, background, None))
    order = rng.permutation(len(_SINGLE) - 1) + 1
    rest = [_SINGLE[i].format(**_fields(obj, ev, background, rng)) for i in order]
    out = [first] + [c for c in rest if c != first]
    return tuple(dict.fromkeys(_articles(c) for c in out))[:n]


def action_phrase(action: str, participle: bool = True) -> str:
    """The plain (first) phrasing of an action: 'moving left' (participle) or 'moves left'.

    change_colour's phrases name colours, so it has no plain phrase and raises KeyError.
    """
    if action == "change_colour":
        raise KeyError("change_colour has no colour-free phrase")
    return _VERBS[action][1 if participle else 0][0]


def _clause(obj: ObjectState, ev: Event, rng: np.random.Generator | None) -> str:
    return f"a {obj.shown_colour} {obj.shape} {_verb(ev, False, rng)}"


def sequence_captions(steps: Sequence[tuple[ObjectState, Event]], background: str, rng: np.random.Generator, n: int = 4) -> tuple[str, ...]:
    """Phrasings of ordered steps (object state at step start, event); order is kept in every one."""
    if len(steps) == 1:
        return event_captions(*steps[0], background, rng, n)
    plain = [_clause(o, e, None) for o, e in steps]
    varied = [_clause(o, e, rng) for o, e in steps]
    out = [", then ".join(plain), "first " + ", then ".join(varied), " and then ".join(varied)]
    if len(steps) == 2:
        out.append(f"{varied[1]} after {varied[0]}")
    out.append(", then ".join(varied) + f", on a {BACKGROUND_WORDS[background]} background")
    return tuple(dict.fromkeys(_articles(c) for c in out))[:n]


def _pose(obj: ObjectState, rng: np.random.Generator, pose_p: float) -> str:
    """' tilted to the left' (with a leading space) with probability pose_p, else ''; no draw when pose_p is 0."""
    if not pose_p or rng.random() >= pose_p:
        return ""
    name = pose_name(obj)
    return f" {name}" if name else ""


def _object_static(obj: ObjectState, pose: str = "") -> str:
    return f"a {size_name(obj.size)} {obj.shown_colour} {obj.shape}{pose} {position_name(obj.x, obj.y)}"


def static_caption(scene: SceneState, rng: np.random.Generator, pose_p: float = 0.0) -> str:
    """One caption of a single frame from shape, colour, size, position and background only.

    Objects at least half visible are named, in random order; an empty frame names its background.
    With probability `pose_p` an object's pose is named too (world.pose_name: 'tilted to the left').
    """
    shown = [o for o in scene.objects if o.alpha >= 0.5]
    bg = BACKGROUND_WORDS[scene.background.family]
    if not shown:
        return f"an empty {bg} background"
    parts = [_object_static(shown[i], _pose(shown[i], rng, pose_p)) for i in rng.permutation(len(shown))]
    objs = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return _articles(_pick(rng, _STATIC).format(objs=objs, bg=bg))


def short_static_caption(scene: SceneState, rng: np.random.Generator, partial: float = 0.0, name_colours: bool = True,
                         pose_p: float = 0.0) -> str:
    """A terser static caption: every visible object by colour and shape, each keeping its size and
    its position with probability 1/2; the background named half of the time.

    With probability `partial` an object is named by one attribute only: its shape without its
    colour ("a large star") or its colour with the noun "shape" ("a red shape"), half each. Such
    captions tie each word to its own visual attribute rather than to colour-shape pairs.
    Same vocabulary as static_caption plus "shape" (no motion or order words); mixed with it in
    pretraining so short queries such as "a red star" sit close to full descriptions.
    name_colours=False names no colour at all (for greyscale stills); pose_p as in static_caption.
    """
    shown = [o for o in scene.objects if o.alpha >= 0.5]
    bg = BACKGROUND_WORDS[scene.background.family]
    if not shown:
        return f"an empty {bg} background"
    parts = []
    for i in rng.permutation(len(shown)):
        o = shown[i]
        size = f"{size_name(o.size)} " if rng.random() < 0.5 else ""
        where = f" {position_name(o.x, o.y)}" if rng.random() < 0.5 else ""
        colour, shape = (f"{o.shown_colour} " if name_colours else ""), o.shape
        if name_colours and partial and rng.random() < partial:
            colour, shape = ("", shape) if rng.random() < 0.5 else (colour, "shape")
        parts.append(f"a {size}{colour}{shape}{_pose(o, rng, pose_p)}{where}")
    objs = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    template = _pick(rng, _STATIC) if rng.random() < 0.5 else "{objs}"
    return _articles(template.format(objs=objs, bg=bg))
