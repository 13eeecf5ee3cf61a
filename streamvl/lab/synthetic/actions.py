"""Actions: how one object's state changes over an event's normalised time t in [0, 1].

Ramp actions animate one attribute linearly from `a` to `b` (moves: x or y, rotations: angle,
grow/shrink: size, appear/disappear: alpha). Each order pair (left/right, up/down, cw/ccw,
grow/shrink, appear/disappear) is one ramp in two directions, and the samplers draw the
unordered interval first and the direction last. So a clip of A played backwards is exactly a
clip of its pair B (`reverse_event`), and the two have the same distribution of frames: no
single frame and no unordered set of frames tells them apart, only the order does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from streamvl.lab.synthetic.world import COLOURS, TRAIN, Domain, ObjectState

ACTIONS: tuple[str, ...] = (
    "move_left", "move_right", "move_up", "move_down",
    "rotate_cw", "rotate_ccw", "grow", "shrink",
    "appear", "disappear", "blink", "bounce", "change_colour",
)
ORDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("move_left", "move_right"),
    ("move_up", "move_down"),
    ("rotate_cw", "rotate_ccw"),
    ("grow", "shrink"),
    ("appear", "disappear"),
)
# Short events: the change itself is brief (a fade, a colour switch); others fill their window.
INSTANT_ACTIONS: frozenset[str] = frozenset({"appear", "disappear", "change_colour"})

_REVERSE = {a: b for a, b in ORDER_PAIRS} | {b: a for a, b in ORDER_PAIRS}
_RAMP_ATTR = {
    "move_left": "x", "move_right": "x", "move_up": "y", "move_down": "y",
    "rotate_cw": "angle", "rotate_ccw": "angle", "grow": "size", "shrink": "size",
    "appear": "alpha", "disappear": "alpha",
}
_INCREASING = frozenset({"move_right", "move_down", "rotate_cw", "grow", "appear"})  # b > a (y points down)

POS_RANGE = (0.2, 0.8)  # where object centres may go: the largest object stays inside the frame
MOVE_RANGE = (0.25, 0.5)  # travel, fraction of the frame
TURN_RANGE = (math.pi / 4, math.pi / 2)  # small enough per frame that 4-fold shapes do not alias
SMALL_RANGE = (0.06, 0.09)  # start radius of grow (end radius of shrink)
GROW_RANGE = (1.6, 2.1)  # size factor
SIZE_MAX = 0.2
BOUNCE_RANGE = (0.12, 0.25)  # hop height


@dataclass(frozen=True)
class Event:
    """One action of object `obj` between `start` and `end` (seconds).

    a, b: start and end value of the ramped attribute (bounce: a = hop height);
    count: repetitions (blink, bounce); colours: (from, to) for change_colour.
    """

    action: str
    obj: int
    start: float
    end: float
    a: float = 0.0
    b: float = 0.0
    count: int = 0
    colours: tuple[str, str] | None = None


def reverse_action(name: str) -> str:
    """The order pair of an action (itself for blink, bounce, change_colour)."""
    return _REVERSE.get(name, name)


def compose_label(actions: Sequence[str]) -> str:
    """Label of an ordered composition: ('appear', 'move_left') -> 'appear_then_move_left'."""
    return "_then_".join(actions)


def local_time(ev: Event, tau: float) -> float:
    """Normalised time of `tau` (seconds) inside the event, clipped to [0, 1]."""
    span = ev.end - ev.start
    return 1.0 if span <= 0 else min(max((tau - ev.start) / span, 0.0), 1.0)


def _blink(t: float, count: int) -> float:
    """1 at both ends of each period, 0 in its middle half: `count` off-flashes."""
    phase = (t * count) % 1.0
    return 0.0 if 0.25 <= phase < 0.75 else 1.0


def apply_event(obj: ObjectState, ev: Event, t: float) -> ObjectState:
    """The object's state at normalised time t of the event, given its state when the event starts."""
    attr = _RAMP_ATTR.get(ev.action)
    if attr is not None:
        return replace(obj, **{attr: ev.a + (ev.b - ev.a) * t})
    if ev.action == "blink":
        return replace(obj, alpha=obj.alpha * _blink(t, ev.count))
    if ev.action == "bounce":
        return replace(obj, y=obj.y - ev.a * abs(math.sin(math.pi * ev.count * t)))
    if ev.action == "change_colour":
        assert ev.colours is not None
        return replace(obj, colour=ev.colours[0], colour_to=ev.colours[1], mix=t)
    raise ValueError(f"unknown action {ev.action!r}; known: {ACTIONS}")


def reverse_event(ev: Event, total: float) -> Event:
    """The event seen in a clip of length `total` seconds played backwards."""
    colours = None if ev.colours is None else (ev.colours[1], ev.colours[0])
    if ev.action in _RAMP_ATTR:
        a, b = ev.b, ev.a
    else:
        a, b = ev.a, ev.b
    return replace(ev, action=reverse_action(ev.action), start=total - ev.end, end=total - ev.start, a=a, b=b, colours=colours)


def path(obj: ObjectState, ev: Event, steps: int = 9) -> np.ndarray:
    """(x, y, size) [steps, 3] of the object through the event: used to keep objects apart."""
    states = [apply_event(obj, ev, t) for t in np.linspace(0.0, 1.0, steps)]
    return np.array([(s.x, s.y, s.size) for s in states])


def _interval(rng: np.random.Generator, lo: float, hi: float, length: tuple[float, float]) -> tuple[float, float]:
    """An unordered interval of random length inside [lo, hi]."""
    d = float(rng.uniform(*length))
    start = float(rng.uniform(lo, hi - d))
    return start, start + d


def _anchored(rng: np.random.Generator, cur: float, room: float, length: tuple[float, float], sign: int) -> float | None:
    """End value of a ramp that starts at `cur` with `room` left in the ramp's direction."""
    if room < length[0]:
        return None
    return cur + sign * float(rng.uniform(length[0], min(length[1], room)))


def _ramp_values(name: str, obj: ObjectState, rng: np.random.Generator, anchored: bool) -> tuple[float, float] | None:
    """(a, b) of a ramp action: a free interval in its direction, or one that starts at the current value."""
    attr, inc = _RAMP_ATTR[name], name in _INCREASING
    sign = 1 if inc else -1
    cur = getattr(obj, attr)
    if attr in ("x", "y"):
        if not anchored:
            lo, hi = _interval(rng, *POS_RANGE, MOVE_RANGE)
            return (lo, hi) if inc else (hi, lo)
        room = POS_RANGE[1] - cur if inc else cur - POS_RANGE[0]
        end = _anchored(rng, cur, room, MOVE_RANGE, sign)
        return None if end is None else (cur, end)
    if attr == "angle":
        lo = float(rng.uniform(0, 2 * math.pi)) if not anchored else cur
        d = float(rng.uniform(*TURN_RANGE))
        if anchored:
            return cur, cur + sign * d
        return (lo, lo + d) if inc else (lo + d, lo)
    if attr == "size":
        if not anchored:
            lo = float(rng.uniform(*SMALL_RANGE))
            hi = lo * float(rng.uniform(*GROW_RANGE))
            return (lo, hi) if inc else (hi, lo)
        limit = SIZE_MAX / cur if inc else cur / SMALL_RANGE[0]
        if limit < GROW_RANGE[0]:
            return None
        f = float(rng.uniform(GROW_RANGE[0], min(GROW_RANGE[1], limit)))
        return cur, (cur * f if inc else cur / f)
    # alpha: appear needs a hidden object, disappear a visible one
    if anchored and cur != (0.0 if inc else 1.0):
        return None
    return (0.0, 1.0) if inc else (1.0, 0.0)


def sample_event(
    name: str,
    obj: ObjectState,
    index: int,
    start: float,
    end: float,
    rng: np.random.Generator,
    *,
    anchored: bool = False,
    domain: Domain = TRAIN,
    avoid: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[ObjectState, Event] | None:
    """Parameters of action `name` for object `index` over [start, end] seconds.

    Free (anchored=False, single clips): the start state is drawn too (position, angle, size...)
    so order pairs share one distribution; returns the adjusted start state and the event.
    Anchored (long streams): the event starts from `obj` as it is; None when infeasible
    (no room to move, hidden object asked to move, circle asked to rotate, ...).
    avoid: (shape, colour) combos change_colour must not produce (other objects wear them).
    """
    if name == "appear" and not anchored:
        obj = replace(obj, alpha=0.0)
    if anchored and obj.alpha != 1.0 and name != "appear":
        return None
    if name in ("rotate_cw", "rotate_ccw") and obj.shape == "circle":
        return None
    if name in _RAMP_ATTR:
        vals = _ramp_values(name, obj, rng, anchored)
        if vals is None:
            return None
        a, b = vals
        obj = replace(obj, **{_RAMP_ATTR[name]: a})
        return obj, Event(name, index, start, end, a=a, b=b)
    if name == "blink":
        return obj, Event(name, index, start, end, count=int(rng.integers(2, 4)))
    if name == "bounce":
        lo, hi = BOUNCE_RANGE
        if not anchored:
            h = float(rng.uniform(lo, hi))
            obj = replace(obj, y=float(rng.uniform(POS_RANGE[0] + h, POS_RANGE[1])))
        else:
            room = obj.y - POS_RANGE[0]
            if room < lo:
                return None
            h = float(rng.uniform(lo, min(hi, room)))
        return obj, Event(name, index, start, end, a=h, count=int(rng.integers(1, 4)))
    if name == "change_colour":
        colour = obj.shown_colour
        choices = [c for c in COLOURS if c != colour and domain.allows(obj.shape, c) and (obj.shape, c) not in avoid]
        if not choices:
            return None
        new = choices[int(rng.integers(len(choices)))]
        obj = replace(obj, colour=colour, colour_to=None, mix=0.0)
        return obj, Event(name, index, start, end, colours=(colour, new))
    raise ValueError(f"unknown action {name!r}; known: {ACTIONS}")
