"""Skipping what carries no new information: static-frame repeats and keyframe-only decoding.

No Ray; the encode-stage tests use the tiny random model. Videos are generated with PyAV.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from streamvl.config import DEFAULT_STATIC_THRESHOLD, IndexConfig, SamplingConfig
from streamvl.pipeline.encode import EncodeStage
from streamvl.sources import open_source
from streamvl.sources.decode import keyframe_gap
from streamvl.sources.sampling import sample_times
from streamvl.sources.static import RepeatDetector, thumb_difference, thumbnail
from streamvl.types import FrameBatch, StreamInfo
from tests.videos import LEVEL_PERIOD, index_mod_period, make_video

MODEL = "streamvl-tiny@random:0"
NO_SCENECUT = {"sc_threshold": "0"}  # keyframes exactly every `gop` frames


def read(path, **sampling) -> tuple[list[FrameBatch], dict]:
    config = SamplingConfig(**({"fps": 1.0, "size": 224, "batch_frames": 4} | sampling))
    with open_source(StreamInfo("s", str(path)), config) as src:
        batches = list(src)
    return batches, src.stats


def repeats_of(batches: list[FrameBatch]) -> np.ndarray:
    return np.concatenate([b.repeat if b.repeat is not None else np.zeros(len(b), bool) for b in batches])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("skip")
    return {name: make_video(root / f"{name}.mp4", pattern=name, seconds=10.0) for name in ("static", "moving")}


# -- the thumbnail test ----------------------------------------------------------------------


def test_difference_ignores_noise_but_not_objects_or_whole_picture_changes():
    rng = np.random.default_rng(0)
    base = rng.uniform(40, 200, (224, 224, 3))
    frame = lambda img: np.clip(img, 0, 255).astype(np.uint8)  # noqa: E731
    a = thumbnail(frame(base + rng.normal(0, 4, base.shape)))
    noisy = thumbnail(frame(base + rng.normal(0, 4, base.shape)))
    assert a.shape == (32, 32, 3)
    assert thumb_difference(a, a) == 0.0
    assert thumb_difference(a, noisy) < 0.5 * DEFAULT_STATIC_THRESHOLD
    moved = base.copy()
    moved[100:116, 100:116] = (250, 20, 20)  # a 16x16 object appears
    assert thumb_difference(a, thumbnail(frame(moved))) > DEFAULT_STATIC_THRESHOLD
    assert thumb_difference(a, thumbnail(frame(base + 6))) > DEFAULT_STATIC_THRESHOLD  # lights up a little
    assert thumbnail(np.zeros((8, 12, 3), np.uint8)).shape == (8, 8, 3)  # smaller than 32: per pixel


def test_detector_compares_with_the_last_encoded_frame_not_the_last_sample():
    """A slow uniform drift of 1 level per sample never beats the threshold sample to sample, but it
    adds up against the last encoded frame, which is re-encoded once the drift counts."""
    base = np.full((64, 64, 3), 100, np.uint8)
    detector = RepeatDetector(DEFAULT_STATIC_THRESHOLD)
    marks = [detector.is_repeat(base + k) for k in range(12)]
    assert marks[0] is False and marks[1] is True
    fresh = [k for k, m in enumerate(marks) if not m]
    assert len(fresh) >= 4 and all(b - a <= 3 for a, b in zip(fresh, fresh[1:]))  # every ~3 levels (cap 2 + 0.3)
    assert not any(RepeatDetector(0).is_repeat(base) for _ in range(3))
    assert not RepeatDetector(None).enabled


# -- sources: repeat marks -------------------------------------------------------------------


def test_static_scene_repeats_every_frame_after_the_first(videos):
    batches, stats = read(videos["static"].path)
    repeat = repeats_of(batches)
    assert len(repeat) == 10 and not repeat[0] and repeat[1:].all()
    assert stats["frames_skipped"] == 9 and stats["frames_sampled"] == 10
    assert all(len(b.frames) == len(b) for b in batches)  # sources keep every frame's pixels ...
    packed = [b.without_repeat_pixels() for b in batches]  # ... what crosses Ray drops the repeats'
    assert [len(b.frames) for b in packed] == [len(b) - b.repeats for b in batches] == [1, 0, 0]
    assert [len(b) for b in packed] == [4, 4, 2] and np.array_equal(packed[0].frames, batches[0].frames[:1])


def test_moving_object_repeats_nothing(videos):
    batches, stats = read(videos["moving"].path)
    assert len(repeats_of(batches)) == 10 and not repeats_of(batches).any() and stats["frames_skipped"] == 0


def test_threshold_zero_turns_the_skip_off(videos):
    batches, stats = read(videos["static"].path, static_threshold=0)
    assert all(b.repeat is None for b in batches) and stats["frames_skipped"] == 0
    assert read(videos["static"].path, static_threshold=None)[1]["frames_skipped"] == 0


def test_resumed_decoder_never_starts_with_a_repeat(videos):
    info = StreamInfo("s", str(videos["static"].path))
    sampling = SamplingConfig(fps=1.0, size=224, batch_frames=4)
    batches = list(open_source(info, sampling, start_after=4.0, first_index=5))
    assert np.concatenate([b.pts for b in batches]).tolist() == pytest.approx([5.0, 6.0, 7.0, 8.0, 9.0])
    assert repeats_of(batches).tolist() == [False, True, True, True, True]


def test_frame_batch_checks_repeat_shapes():
    pts, frames = np.arange(3, dtype=np.float64), np.zeros((3, 4, 4, 3), np.uint8)
    repeat = np.array([False, True, True])
    assert len(FrameBatch("s", "u", pts, frames[:1], repeat=repeat)) == 3  # packed: only the fresh pixels
    with pytest.raises(ValueError, match="does not match"):
        FrameBatch("s", "u", pts, frames[:2], repeat=repeat)
    with pytest.raises(ValueError, match="repeat must be bool"):
        FrameBatch("s", "u", pts, frames, repeat=np.array([0, 1, 1]))


def _counting(encode_images, counts: list[int]):
    """encode_images that also records how many images each call got (whatever tower/precision runs)."""

    def wrapped(frames):
        counts.append(len(frames))
        return encode_images(frames)

    return wrapped


# -- encode stage: only fresh frames reach the model ------------------------------------------


@pytest.fixture(scope="module")
def stage_parts():
    config = IndexConfig(model=MODEL, sampling={"fps": 1.0, "batch_frames": 4}, clips={"window": 4, "stride": 2})
    stage = EncodeStage(config)
    images: list[int] = []  # images handed to the model, per call
    stage.model.encode_images = _counting(stage.model.encode_images, images)
    return config, stage, images


def _batches(video, config, model, **sampling) -> list[FrameBatch]:
    size = {"size": model.image_size} | sampling
    with open_source(StreamInfo("cam", str(video.path)), config.sampling.model_copy(update=size)) as src:
        return list(src)


@pytest.mark.parametrize("packed", [True, False])
def test_stage_embeds_only_fresh_frames_and_fills_repeats_with_the_last(videos, stage_parts, packed):
    config, shared, images = stage_parts
    stage = EncodeStage(config, model=shared.model)
    batches = _batches(videos["static"], config, stage.model)
    assert repeats_of(batches).sum() == 9
    sent = [b.without_repeat_pixels() if packed else b for b in batches]
    images.clear()
    results = [stage.process([b]) for b in sent]
    assert sum(images) == 1  # one fresh frame in 10: the model saw one image
    assert sum(p.skipped for _, _, progress in results for p in progress) == 9
    frames = [f for f, _, _ in results]
    emb = np.concatenate([np.stack(f["embedding"].to_numpy(zero_copy_only=False)) for f in frames])
    pts = np.concatenate([f["pts"].to_numpy() for f in frames])
    assert pts.tolist() == pytest.approx(list(range(10)))  # every frame keeps its row and pts
    direct = stage.model.encode_images(batches[0].frames[:1]).numpy()[0]
    assert np.allclose(emb[0], direct, atol=1e-5)
    assert np.array_equal(emb, np.repeat(emb[:1], 10, axis=0))  # repeats (in later batches too) = the last encoded
    assert sum(c.num_rows for _, c, _ in results) == 4  # windows at 0, 2, 4, 6 (+ tail at 8): complete as usual


def test_stage_runs_the_model_on_every_frame_of_a_moving_scene(videos, stage_parts):
    config, shared, images = stage_parts
    stage = EncodeStage(config, model=shared.model)
    images.clear()
    for batch in _batches(videos["moving"], config, stage.model):
        stage.process([batch.without_repeat_pixels()])
    assert sum(images) == 10


def test_stage_fills_repeat_pixels_for_adapters_that_need_frames(videos, stage_parts):
    """Adapters with needs_frames get a picture for every window frame: a repeat's is the last encoded
    frame's, whether or not its own pixels were shipped."""
    config, shared, _ = stage_parts
    windows = {}
    for packed in (True, False):
        stage = EncodeStage(config, model=shared.model)
        stage.keep_frames = True
        got = windows.setdefault(packed, [])
        stage._clip_rows = lambda ws, got=got: got.extend(ws) or stage.clips_schema.empty_table()
        for batch in _batches(videos["static"], config, stage.model):
            stage.process([batch.without_repeat_pixels() if packed else batch])
    first = _batches(videos["static"], config, shared.model)[0].frames[0]
    for ws in windows.values():
        assert [w.frames.shape[0] for w in ws] == [4, 4, 4, 4]
        assert all(np.array_equal(f, first) for w in ws for f in w.frames)


def test_stage_refuses_a_decoder_run_that_starts_with_a_repeat(stage_parts):
    config, shared, _ = stage_parts
    stage = EncodeStage(config, model=shared.model)
    size = stage.model.image_size
    batch = FrameBatch("cam", "u", np.array([0.0, 1.0]), np.zeros((1, size, size, 3), np.uint8),
                       repeat=np.array([True, False]), fps=1.0)
    frames, clips, progress = stage.process([batch])
    assert frames.num_rows == 0 and "starts with a repeat" in progress[0].error


# -- keyframe-only decoding ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("gop")
    return {gop: make_video(root / f"gop{gop}.mp4", size=(160, 120), seconds=8.0, gop=gop, options=NO_SCENECUT)
            for gop in (25, 50)}


def test_keyframes_mode_yields_one_frame_per_slot_and_decodes_far_fewer(gop_videos):
    spec = gop_videos[25]  # a keyframe every second, at every 1 frame/s slot start
    full, full_stats = read(spec.path, size=32, static_threshold=0)
    keys, key_stats = read(spec.path, size=32, static_threshold=0, decode="keyframes")
    pts = np.concatenate([b.pts for b in keys])
    assert pts.tolist() == pytest.approx([float(k) for k in range(8)])
    assert pts.tolist() == np.concatenate([b.pts for b in full]).tolist()
    frames = np.concatenate([b.frames for b in keys])
    assert [index_mod_period(f) for f in frames] == [(25 * k) % LEVEL_PERIOD for k in range(8)]
    assert full_stats["frames_decoded"] == 200 and key_stats["frames_decoded"] == 8
    assert key_stats["keyframes_only"] and not full_stats["keyframes_only"]


def test_keyframes_mode_with_a_sparser_gop_takes_the_first_keyframe_at_or_after_each_slot(gop_videos):
    """Slots without a keyframe of their own get no frame; the file still ends cleanly (no
    'truncated' error although the last decoded frame is 2 s before the end)."""
    keys, stats = read(gop_videos[50].path, size=32, static_threshold=0, decode="keyframes")
    assert np.concatenate([b.pts for b in keys]).tolist() == pytest.approx([0.0, 2.0, 4.0, 6.0])
    assert stats["frames_decoded"] == 4 and keys[-1].final


def test_auto_decodes_keyframes_only_when_every_slot_has_one(gop_videos):
    assert keyframe_gap(str(gop_videos[25].path)) == pytest.approx(1.0)
    assert keyframe_gap(str(gop_videos[50].path)) == pytest.approx(2.0)
    assert keyframe_gap("rtsp://127.0.0.1:1/x") is None
    assert read(gop_videos[25].path, size=32, decode="auto")[1]["frames_decoded"] == 8
    assert read(gop_videos[50].path, size=32, decode="auto")[1]["frames_decoded"] == 200
    assert read(gop_videos[50].path, size=32, decode="auto", fps=0.5)[1]["frames_decoded"] == 4


def test_keyframes_mode_resumes_exactly_where_the_full_run_would(gop_videos):
    spec = gop_videos[25]
    info = StreamInfo("s", str(spec.path))
    sampling = SamplingConfig(fps=1.0, size=32, batch_frames=4, static_threshold=0, decode="keyframes")
    full = np.concatenate([b.pts for b in open_source(info, sampling)])
    assert full.tolist() == sample_times([float(k) for k in range(8)], 1.0)
    for k in (0, 3, 6):
        with open_source(info, sampling, start_after=float(full[k]), first_index=k + 1) as src:
            batches = list(src)
        assert np.concatenate([b.pts for b in batches]).tolist() == full[k + 1 :].tolist()
        assert batches[0].first_index == k + 1
        assert src.stats["frames_decoded"] <= 8 - k  # seeks to the keyframe, then decodes keyframes only


def test_live_keyframes_come_out_as_their_packet_arrives_not_after_later_keyframes(gop_videos):
    """Decoding keyframes only, H.264's reorder buffer (has_b_frames) fills with keyframes alone:
    without draining, each live keyframe came out only after the next two had arrived (2 GOPs of
    latency). A live reader (here a file read as one: the same decoder path) yields each keyframe
    before it reads another packet, with the pixels full decoding gives it."""
    from streamvl.sources.decode import VideoReader

    spec = gop_videos[25]
    info = StreamInfo("cam", str(spec.path))
    reader = VideoReader(info, 10.0)
    assert reader.stream.codec_context.has_b_frames > 0 or _reorders(spec.path)  # a delay to remove exists
    reader.live = True  # what a URL gives; the file has no arrival times to stamp, only the order matters
    reader.decode_keyframes_only()
    read = [0]
    packets = reader._packets

    def counted(start_after):
        for packet in packets(start_after):
            read[0] += 1
            yield packet

    reader._packets = counted
    seen = [(round(f.t, 3), read[0], f.frame.to_ndarray(format="rgb24")) for f in reader.frames()]
    reader.close()
    assert [t for t, _, _ in seen] == [float(k) for k in range(8)]
    assert [n for _, n, _ in seen] == [25 * k + 1 for k in range(8)]  # keyframe k is packet 25k+1, read last
    with av.open(str(spec.path)) as full:
        stream = full.streams.video[0]
        keyframes = [f.to_ndarray(format="rgb24") for f in full.decode(stream) if f.key_frame]
    assert len(keyframes) == 8 and all(np.array_equal(a, b) for (_, _, a), b in zip(seen, keyframes))


def _reorders(path) -> bool:
    """Whether the decoder holds keyframes back in keyframes-only decoding (the bug's precondition)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        for i, packet in enumerate(container.demux(stream)):
            if list(packet.decode()):
                return i > 0
    return False
