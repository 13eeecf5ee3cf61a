"""The shapes world: determinism, rendering, order pairs, captions, held-out splits, streams, mp4."""

from __future__ import annotations

import json
from dataclasses import replace
import re

import av
import numpy as np
import pytest

from streamvl.errors import ConfigError
from streamvl.lab.synthetic import (
    ACTIONS,
    HELD_OUT_BACKGROUND,
    HELD_OUT_COMBOS,
    MOTION_WORDS,
    ORDER_PAIRS,
    POSE_BOUNDS,
    ObjectState,
    SPLITS,
    TEST,
    RenderConfig,
    Timeline,
    clip_captions,
    clip_states,
    exposure,
    iter_frames,
    make_split,
    open_set_classes,
    render_clip,
    render_frame,
    reverse_clip,
    sample_clip,
    sample_composition,
    sample_still,
    sample_still_scene,
    sample_stream,
    pose_name,
    segments,
    short_static_caption,
    static_caption,
    tilt,
    with_tilt,
    write_clip,
    write_video,
)

SMALL = RenderConfig(width=32, height=32, fps=8.0, n_frames=12)
_ATTR = {"move_left": "x", "move_up": "y", "rotate_cw": "angle", "grow": "size", "appear": "alpha"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z-]+", text.lower()))


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)  # noqa: E731
    return float(np.max(np.abs(cdf(a) - cdf(b))))


def _actor_track(spec, attr: str) -> np.ndarray:
    """The acting object's attribute over the frames."""
    i = spec.events[0].obj
    return np.array([getattr(s.objects[i], attr) for s in clip_states(spec)])


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_clip_and_frames():
    a, b = sample_clip(42, "move_left", render=SMALL), sample_clip(42, "move_left", render=SMALL)
    assert a == b
    assert np.array_equal(render_clip(a), render_clip(b))
    assert clip_captions(a) == clip_captions(b)
    assert sample_clip(43, "move_left", render=SMALL) != a


def test_same_seed_same_stills_and_splits():
    one = [sample_still(np.random.default_rng(5), 32) for _ in range(2)]
    assert np.array_equal(one[0][0], one[1][0]) and one[0][1:] == one[1][1:]
    assert make_split("closed_set", 3, train_per_class=2, test_per_class=1, render=SMALL) == make_split(
        "closed_set", 3, train_per_class=2, test_per_class=1, render=SMALL
    )


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_renders_and_changes_the_picture(action):
    spec = sample_clip(7, action, render=SMALL)
    frames = render_clip(spec)
    assert frames.shape == (SMALL.n_frames, 32, 32, 3) and frames.dtype == np.uint8
    assert spec.label == action and spec.events[0].action == action
    assert any(not np.array_equal(frames[0], f) for f in frames[1:]), "the action must be visible"
    assert 1 <= len(spec.objects) <= 3


def test_still_sampler_outputs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        img, caption, attrs = sample_still(rng, 64)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        for obj in attrs["objects"]:
            assert f"{obj['size']} {obj['colour']} {obj['shape']} {obj['position']}" in caption
        assert attrs["background"] != HELD_OUT_BACKGROUND


def test_composition_orders_events_and_captions():
    spec = sample_composition(3, ("appear", "move_left"), render=SMALL)
    first, second = sorted(spec.events, key=lambda e: e.start)
    assert (first.action, second.action) == ("appear", "move_left") and first.end <= second.start
    assert first.obj != second.obj
    caps = clip_captions(spec)
    assert len(caps) >= 3 and re.fullmatch(r"an? \w+ \w+ appears, then an? \w+ \w+ moves left", caps[0])
    assert "then" in caps[1] or "after" in caps[1]


# --- order pairs -----------------------------------------------------------------------------


@pytest.mark.parametrize("pair", ORDER_PAIRS)
def test_reversed_clip_is_its_pair_frame_for_frame(pair):
    a, b = pair
    for seed in (0, 1, 2):
        spec = sample_clip(seed, a, render=SMALL)
        back = reverse_clip(spec)
        assert back.label == b and back.events[0].action == b
        # the pair starts where A ended (the mirrored start) and ends where A started
        assert back.events[0].a == spec.events[0].b and back.events[0].b == spec.events[0].a
        assert np.array_equal(render_clip(spec)[::-1], render_clip(back))


def test_move_left_reversed_equals_move_right_from_the_mirrored_start():
    left = sample_clip(11, "move_left", render=SMALL)
    right = reverse_clip(left)
    ev_l, ev_r = left.events[0], right.events[0]
    assert ev_r.action == "move_right" and ev_r.a < ev_r.b
    assert right.objects[ev_r.obj].x == pytest.approx(ev_l.b)  # starts at left's end position
    assert np.array_equal(render_clip(left)[::-1], render_clip(right))


@pytest.mark.parametrize("pair", ORDER_PAIRS)
def test_order_pair_frames_have_one_distribution(pair):
    """Independent samples of A and B: per-clip unordered statistics match, ordered ones do not."""
    a, b = pair
    attr = _ATTR[a]
    tracks = {name: [_actor_track(sample_clip(1000 + s, name, render=SMALL), attr) for s in range(150)] for name in pair}
    for stat in (np.min, np.max, np.mean, np.median):
        va, vb = (np.array([stat(t) for t in tracks[n]]) for n in pair)
        assert _ks(va, vb) < 0.2, f"{stat.__name__} of {attr} differs between {a} and {b}"
    change_a, change_b = (np.array([t[-1] - t[0] for t in tracks[n]]) for n in pair)
    assert np.all(change_a * change_b.mean() < 0), "in order, A and B change the attribute oppositely"
    first_b, rev_first_a = np.array([t[0] for t in tracks[b]]), np.array([t[-1] for t in tracks[a]])
    assert _ks(rev_first_a, first_b) < 0.2, "A played backwards starts like B"
    assert _ks(-change_a, change_b) < 0.2, "and changes like B"


# --- captions ----------------------------------------------------------------------------------


def test_static_captions_have_no_motion_or_order_words():
    rng = np.random.default_rng(1)
    for _ in range(300):
        _, caption, _ = sample_still(rng, 32)
        assert not _words(caption) & MOTION_WORDS, caption
    for action in ACTIONS:
        for state in clip_states(sample_clip(2, action, render=SMALL)):
            caption = static_caption(state, rng)
            assert not _words(caption) & MOTION_WORDS, caption


def test_pose_is_tilt_from_upright_within_the_symmetry_period():
    square = ObjectState("square", "red", 0.1, 0.5, 0.5)
    assert tilt(square) == 0.0 and pose_name(square) == "upright"
    assert pose_name(replace(square, angle=0.3)) == "tilted slightly to the right"  # 0.3 / (pi/4) = 0.38, clockwise
    assert pose_name(replace(square, angle=-0.6)) == "tilted to the left"  # -0.76
    assert pose_name(replace(square, angle=np.pi / 4)) == "inverted"  # half a period: a diamond
    assert pose_name(replace(square, angle=np.pi / 2 + 0.3)) == "tilted slightly to the right"  # a quarter turn looks the same
    heart = ObjectState("heart", "red", 0.1, 0.5, 0.5, angle=np.pi / 2)
    assert tilt(heart) == pytest.approx(0.5) and pose_name(replace(heart, angle=np.pi)) == "inverted"
    circle = ObjectState("circle", "red", 0.1, 0.5, 0.5, angle=1.0)
    assert tilt(circle) is None and pose_name(circle) is None and with_tilt(circle, 0.5) == circle
    for shape in ("square", "triangle", "star", "cross", "heart"):
        for t in (-0.9, -POSE_BOUNDS[1], 0.0, 0.3, 0.7):
            assert tilt(with_tilt(replace(square, shape=shape), t)) == pytest.approx(t)


def test_pose_words_are_named_only_when_asked_and_are_not_motion_words():
    scene = sample_still_scene(np.random.default_rng(3))
    for caption_of in (static_caption, short_static_caption):
        plain = caption_of(scene, np.random.default_rng(5))
        assert plain == caption_of(scene, np.random.default_rng(5), pose_p=0.0)  # no pose draw at pose_p 0
        posed = caption_of(scene, np.random.default_rng(5), pose_p=1.0)
        poses = [pose_name(o) for o in scene.objects if o.alpha >= 0.5 and pose_name(o)]
        assert all(p in posed for p in poses) and not _words(posed) & MOTION_WORDS, posed
        assert (posed != plain) == bool(poses)


def test_clip_captions_name_the_action():
    spec = sample_clip(4, "move_left", render=SMALL)
    obj = Timeline(spec).before(spec.events[0])
    caps = clip_captions(spec)
    assert caps[0] == f"a {obj.colour} {obj.shape} moves left".replace("a orange", "an orange")
    assert len(set(caps)) == len(caps) >= 3
    assert all("left" in c for c in caps)


# --- splits -------------------------------------------------------------------------------------


def _combos_seen(spec) -> set[tuple[str, str]]:
    seen = {(o.shape, o.colour) for o in spec.objects}
    seen |= {(spec.objects[e.obj].shape, e.colours[1]) for e in spec.events if e.colours}
    return seen


@pytest.fixture(scope="module")
def splits():
    kw = dict(train_per_class=3, test_per_class=2, render=SMALL, streams=(2, 2), stream_seconds=40.0)
    out = {name: make_split(name, 0, **kw) for name in SPLITS if name != "few_shot"}
    out["few_shot"] = make_split("few_shot", 0, k=4, **kw)
    return out


def test_held_out_combos_and_background_never_in_train(splits):
    for split in splits.values():
        for item in split.train:
            assert not _combos_seen(item.spec) & HELD_OUT_COMBOS, (split.name, item.label)
            assert item.spec.background.family != HELD_OUT_BACKGROUND
            assert item.spec.domain == "train"
        for item in split.test:
            actors = {(item.spec.objects[e.obj].shape, item.spec.objects[e.obj].colour) for e in item.spec.events}
            assert actors <= HELD_OUT_COMBOS, (split.name, item.label)
        assert not {i.seed for i in split.train} & {i.seed for i in split.test}
    held_out_bg = [i for s in splits.values() for i in s.test if i.spec.background.family == HELD_OUT_BACKGROUND]
    assert held_out_bg, "the held-out background family must be used at test"
    rng = np.random.default_rng(2)
    for _ in range(300):
        _, _, attrs = sample_still(rng, 16)
        assert not {(o["shape"], o["colour"]) for o in attrs["objects"]} & HELD_OUT_COMBOS


def test_split_shapes(splits):
    closed = splits["closed_set"]
    assert len(closed.train) == 3 * len(ACTIONS) and len(closed.test) == 2 * len(ACTIONS)
    base, novel = open_set_classes(0)
    assert not set(base) & set(novel) and set(base) | set(novel) == set(ACTIONS)
    assert {i.label for i in splits["open_set"].train} == set(base)
    assert {i.label for i in splits["open_set"].test} == set(novel)
    assert any("_then_" in i.label for i in splits["retrieval"].train + splits["retrieval"].test)
    assert all(i.captions for i in splits["retrieval"].test)
    assert all(i.segments for i in splits["localisation"].test)


def test_few_shot_sets_are_nested():
    two = make_split("few_shot", 1, k=2, test_per_class=1, render=SMALL)
    four = make_split("few_shot", 1, k=4, test_per_class=1, render=SMALL)
    assert set(two.train) < set(four.train) and two.test == four.test
    with pytest.raises(ConfigError):
        make_split("few_shot", 1, k=3)
    with pytest.raises(ConfigError):
        make_split("nope")


# --- long streams -------------------------------------------------------------------------------


def test_stream_segments_in_bounds_disjoint_with_idle_gaps():
    for seed in range(3):
        spec = sample_stream(seed, 180.0, gap=(2.0, 6.0))
        segs = segments(spec)
        assert len(segs) >= 15 and len({s.label for s in segs}) >= 8
        assert segs[0].start >= 2.0 and segs[-1].end <= spec.last_pts
        for s in segs:
            assert 0 < s.start < s.end and s.label in ACTIONS and s.captions
        for prev, nxt in zip(segs, segs[1:]):
            assert nxt.start - prev.end >= 2.0 - 1e-9


def test_stream_states_are_continuous_at_event_starts():
    spec = sample_stream(5, 90.0)
    tl = Timeline(spec)
    for ev in spec.events:
        before, at = tl.scene_at(ev.start - 1e-9).objects[ev.obj], tl.scene_at(ev.start).objects[ev.obj]
        assert (before.x, before.y, before.size, before.alpha) == pytest.approx((at.x, at.y, at.size, at.alpha), abs=1e-6)
        assert before.shown_colour == at.shown_colour


def test_stream_frames_stream_with_pts():
    spec = sample_stream(1, 20.0, width=32, height=32, fps=4.0)
    out = list(iter_frames(spec, start=5.0, stop=10.0))
    assert [t for t, _ in out] == pytest.approx([5 + i / 4 for i in range(20)])
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for _, f in out)


def test_test_domain_streams_use_held_out_actors():
    spec = sample_stream(2, 60.0, domain=TEST)
    assert {(o.shape, o.colour) for o in spec.objects} <= HELD_OUT_COMBOS


# --- video files ---------------------------------------------------------------------------------


def test_written_mp4_decodes_to_the_right_frames(tmp_path):
    spec = sample_clip(9, "move_right", render=RenderConfig(width=64, height=48, fps=8.0, n_frames=12))
    frames = render_clip(spec)
    path = write_video(tmp_path / "clip.mp4", iter(frames), spec.fps)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 12 and decoded[0].shape == (48, 64, 3)
    assert np.abs(np.stack(decoded).astype(int) - frames).mean() < 6


def test_write_clip_writes_metadata_and_rejects_odd_sizes(tmp_path):
    spec = sample_clip(9, "grow", render=SMALL)
    path = write_clip(spec, tmp_path / "grow.mp4")
    meta = json.loads((tmp_path / "grow.mp4.json").read_text())
    assert path.exists() and meta["label"] == "grow" and meta["captions"] and meta["n_frames"] == SMALL.n_frames
    with pytest.raises(ConfigError):
        write_video(tmp_path / "odd.mp4", [np.zeros((31, 32, 3), np.uint8)], 8.0)


def _x_centroid(image: np.ndarray, background: np.ndarray) -> float:
    """x centre of mass of where an image differs from its background."""
    mass = np.abs(image.astype(np.float32) - background.astype(np.float32)).sum(axis=(0, 2))
    return float((mass * np.arange(len(mass))).sum() / mass.sum())


@pytest.mark.parametrize("action", ["move_left", "move_right"])
def test_exposure_trails_behind_the_motion_and_shows_order_only_by_recency(action):
    spec = sample_clip(3, action, render=RenderConfig(width=64, height=64), n_distractors=0)
    back = reverse_clip(spec)
    empty = replace(spec, objects=(), events=())
    bg = render_clip(replace(empty, n_frames=1))[0]
    end = Timeline(spec).scene_at(max(e.end for e in spec.events))
    behind = _x_centroid(exposure(spec, 64, 64), bg) - _x_centroid(render_frame(end, 64, 64), bg)
    assert (behind > 1.0) if action == "move_left" else (behind < -1.0)  # the trace lies where it came from
    assert np.abs(exposure(spec, 64, 64).astype(int) - exposure(back, 64, 64)).mean() > 1.0
    flat = np.abs(exposure(spec, 64, 64, decay=1.0).astype(int) - exposure(back, 64, 64, decay=1.0))
    assert flat.max() <= 1  # an unweighted exposure is the same set of moments: order is invisible
