"""streamvl.sources: discovery, presentation-time sampling, FFmpeg resize, typed errors, live input."""

from __future__ import annotations

import functools
import http.server
import math
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streamvl.config import SamplingConfig
from streamvl.errors import ConfigError, DecodeError, SourceError
from streamvl.sources import expand_sources, open_source, stream_id_for
from streamvl.sources.resize import rotation_filters, scaled_dims
from streamvl.sources.sampling import SlotSampler, sample_times
from streamvl.types import FrameBatch, StreamInfo
from tests.videos import LEVEL_PERIOD, VideoSpec, index_mod_period, make_video

# -- helpers ---------------------------------------------------------------------------------


def info_for(path: Path | str) -> StreamInfo:
    return StreamInfo(stream_id=stream_id_for(str(path)), uri=str(path))


def read_all(
    source: Path | str | StreamInfo,
    *,
    fps: float = 1.0,
    size: int = 32,
    batch: int = 16,
    start_after: float | None = None,
) -> tuple[list[FrameBatch], dict]:
    info = source if isinstance(source, StreamInfo) else info_for(source)
    with open_source(info, SamplingConfig(fps=fps, size=size, batch_frames=batch), start_after=start_after) as src:
        batches = list(src)
    return batches, src.stats


def joined(batches: list[FrameBatch]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([b.pts for b in batches]), np.concatenate([b.frames for b in batches])


def expected_samples(times: tuple[float, ...] | list[float], fps: float) -> list[float]:
    """Spec, stated independently of SlotSampler: for every slot k, the first frame with
    t >= k/fps; a frame that is first for several slots (a gap) counts once."""
    last_slot = math.floor(max(times) * fps + 1e-9)
    firsts = {min(t for t in times if t >= k / fps - 1e-9) for k in range(last_slot + 1)}
    return sorted(firsts)


def assert_content_matches_pts(spec: VideoSpec, pts: np.ndarray, frames: np.ndarray) -> None:
    """Each frame's painted index equals the index of the written frame at that pts."""
    for t, frame in zip(pts, frames):
        expected = spec.index_at(float(t)) % LEVEL_PERIOD
        assert index_mod_period(frame) == expected, f"frame at t={t:.3f} is not the one written there"


# -- sampling.py: slot logic without video --------------------------------------------------


def test_slots_take_first_frame_at_or_after_each_tick() -> None:
    times = [i / 25 for i in range(100)]
    assert sample_times(times, 1.0) == [0.0, 1.0, 2.0, 3.0]
    assert sample_times(times, 2.0) == pytest.approx([0.0, 0.52, 1.0, 1.52, 2.0, 2.52, 3.0, 3.52])
    assert sample_times(times, 0.5) == [0.0, 2.0]


def test_slots_are_float_safe_at_the_source_rate() -> None:
    times = [i * 0.04 for i in range(250)]  # 0.04 * 25 is a hair under 1.0 in binary
    assert sample_times(times, 25.0) == times
    assert sample_times(times, 12.5) == times[::2]


def test_slots_vfr_gap_yields_one_frame_and_no_duplicates() -> None:
    times = [0.0, 0.3, 0.9, 1.1, 4.6, 4.7, 5.2]
    assert sample_times(times, 1.0) == [0.0, 1.1, 4.6, 5.2]
    assert sample_times(times, 1.0) == expected_samples(times, 1.0)


def test_slots_faster_than_source_take_each_frame_once() -> None:
    times = [i / 10 for i in range(30)]
    assert sample_times(times, 30.0) == times


def test_slots_resume_keeps_exactly_the_later_samples_of_a_full_run() -> None:
    rng = np.random.default_rng(3)
    times = [round(float(t), 3) for t in np.cumsum(rng.uniform(0.01, 0.7, 200))]
    for fps in (0.5, 1.0, 3.0):
        full = sample_times(times, fps)
        assert full == expected_samples(times, fps)
        for start_after in [*full[::7], *rng.uniform(0, times[-1], 20)]:
            later = [t for t in full if t > start_after]
            assert sample_times(times, fps, start_after=start_after) == later
            # feeding may begin at any frame at or before start_after (where a seek lands)
            at_or_before = int(np.searchsorted(times, start_after, side="right"))
            for first in rng.integers(0, max(1, at_or_before), 3):
                assert sample_times(times[first:], fps, start_after=start_after) == later


def test_slots_resume_point_between_tick_and_sample() -> None:
    times = [i / 25 for i in range(250)]
    # At 2 fps, slot 1 (t >= 0.5) is taken by the frame at 0.52: resuming after 0.5 must keep it.
    assert sample_times(times, 2.0, start_after=0.5)[:2] == pytest.approx([0.52, 1.0])
    assert sample_times(times, 1.0, start_after=2.5)[:2] == [3.0, 4.0]
    assert sample_times(times, 1.0, start_after=-1.0) == sample_times(times, 1.0)


def test_slots_reject_non_positive_fps() -> None:
    with pytest.raises(ValueError):
        SlotSampler(0.0)


def test_scaled_dims_shorter_side_becomes_size() -> None:
    assert scaled_dims(640, 360, 224) == (399, 224)
    assert scaled_dims(360, 640, 224) == (224, 399)
    assert scaled_dims(224, 224, 224) == (224, 224)
    assert scaled_dims(720, 576, 64, sar=Fraction(16, 11)) == (117, 64)  # anamorphic PAL: shown 1047x576


def test_rotation_filters_undo_display_rotation() -> None:
    assert rotation_filters(0) == []
    assert rotation_filters(90) == [("transpose", "cclock")]
    assert rotation_filters(-90) == [("transpose", "clock")]
    assert rotation_filters(270) == [("transpose", "clock")]
    assert rotation_filters(180) == rotation_filters(-180) == [("hflip", ""), ("vflip", "")]


# -- pts-correct sampling on real decodes ----------------------------------------------------


@pytest.mark.parametrize("name", ["h264_mp4", "mpeg4_avi", "vp9_webm", "mjpeg_mkv"])
def test_samples_on_pts_grid_with_matching_content(corpus, name: str) -> None:
    spec: VideoSpec = getattr(corpus, name)
    batches, stats = read_all(spec.path, fps=1.0, size=32)
    pts, frames = joined(batches)
    assert pts.dtype == np.float64 and frames.dtype == np.uint8
    assert frames.shape == (len(pts), 32, 32, 3)
    assert pts.tolist() == pytest.approx(expected_samples(spec.times, 1.0), abs=1e-6)
    offsets = pts - np.arange(len(pts))  # within one frame interval after k/fps
    assert np.all(offsets >= -1e-9) and np.all(offsets < 1 / spec.fps)
    assert_content_matches_pts(spec, pts, frames)
    assert stats["frames_decoded"] == len(spec.times)
    assert stats["frames_sampled"] == len(pts) and stats["last_pts"] == pts[-1]


@pytest.mark.parametrize("fps", [2.0, 0.5])
def test_other_sampling_rates(corpus, fps: float) -> None:
    spec = corpus.h264_mp4
    pts, frames = joined(read_all(spec.path, fps=fps)[0])
    assert pts.tolist() == pytest.approx(expected_samples(spec.times, fps), abs=1e-6)
    assert len(pts) == math.ceil(spec.duration * fps)
    assert_content_matches_pts(spec, pts, frames)


def test_vfr_samples_follow_presentation_time(corpus) -> None:
    spec = corpus.vfr_mp4
    pts, frames = joined(read_all(spec.path, fps=1.0)[0])
    expected = expected_samples(spec.times, 1.0)
    assert pts.tolist() == pytest.approx(expected, abs=1e-6)
    assert len(expected) < math.floor(spec.times[-1]) + 1, "fixture should have a gap that skips slots"
    assert len(set(pts.tolist())) == len(pts)  # no frame taken twice across the gap
    assert_content_matches_pts(spec, pts, frames)
    # Frame-index sampling would differ: the 25th frame is nowhere near t=1 in this file.
    assert abs(spec.times[25] - 1.0) > 0.04


# -- batches --------------------------------------------------------------------------------


def test_batches_cap_seq_and_final(corpus) -> None:
    batches, _ = read_all(corpus.h264_mp4.path, fps=2.0, batch=3)
    assert [len(b) for b in batches] == [3, 3, 2]
    assert [b.seq for b in batches] == [0, 1, 2]
    assert [b.final for b in batches] == [False, False, True]
    assert all(b.wallclock is None for b in batches)  # files carry no wall clock
    assert all(b.stream_id == stream_id_for(str(corpus.h264_mp4.path)) for b in batches)


def test_stream_ending_on_batch_boundary_gets_empty_final_batch(corpus) -> None:
    batches, _ = read_all(corpus.h264_mp4.path, fps=1.0, batch=4)
    assert [len(b) for b in batches] == [4, 0]
    last = batches[-1]
    assert last.final and last.frames.shape == (0, 32, 32, 3) and last.pts.shape == (0,)
    assert last.frames.dtype == np.uint8 and last.pts.dtype == np.float64


def test_clip_sized_output_is_centre_crop(tmp_path) -> None:
    spec = make_video(tmp_path / "wide.mp4", size=(320, 160), seconds=1.0, pattern="centre")
    batches, _ = read_all(spec.path, size=224)
    frames = batches[0].frames
    assert frames.shape == (1, 224, 224, 3)
    assert frames.mean() > 225  # only the bright centre square survives the crop
    tall = make_video(tmp_path / "tall.mp4", size=(120, 240), seconds=1.0, pattern="centre")
    assert read_all(tall.path, size=64)[0][0].frames.mean() > 225


@pytest.mark.parametrize("rotation, bright", [(90, "top"), (-90, "bottom")])
def test_display_rotation_is_applied(tmp_path, rotation: int, bright: str) -> None:
    path = tmp_path / f"rot{rotation}.mp4"
    spec = make_video(path, size=(320, 240), seconds=1.0, pattern="halves", rotation=rotation)
    frame = read_all(spec.path, size=64)[0][0].frames[0].astype(float)
    top, bottom = frame[:32].mean(), frame[32:].mean()
    assert (top - bottom > 150) if bright == "top" else (bottom - top > 150)


# -- resume ----------------------------------------------------------------------------------


def test_start_after_resumes_exactly_where_the_full_run_would(corpus) -> None:
    spec = corpus.vfr_mp4
    full_pts, full_frames = joined(read_all(spec.path, fps=2.0)[0])
    for k in (0, 3, len(full_pts) - 2):
        pts, frames = joined(read_all(spec.path, fps=2.0, start_after=float(full_pts[k]))[0])
        assert pts.tolist() == full_pts[k + 1 :].tolist()
        assert np.array_equal(frames, full_frames[k + 1 :])


@pytest.mark.parametrize("suffix, seeks", [(".mp4", True), (".mkv", True), (".avi", True), (".ts", False)])
def test_start_after_seeks_when_the_index_allows(tmp_path, suffix: str, seeks: bool) -> None:
    codec = "mpeg4" if suffix == ".avi" else "h264"
    spec = make_video(tmp_path / f"gop{suffix}", codec=codec, size=(160, 120), seconds=6.0, gop=25)
    full_pts, _ = joined(read_all(spec.path, fps=2.0)[0])
    for start_after in (0.5, 4.2):
        batches, stats = read_all(spec.path, fps=2.0, start_after=start_after)
        pts, frames = joined(batches)
        assert pts.tolist() == full_pts[full_pts > start_after].tolist()
        assert_content_matches_pts(spec, pts, frames)
    # mp4/mkv/avi seek to the keyframe at 4 s; mpegts lands off keyframes, so it reopens and decodes all
    assert (stats["frames_decoded"] <= 50) if seeks else (stats["frames_decoded"] == 150)


def test_start_after_past_the_end_yields_only_an_empty_final_batch(corpus) -> None:
    batches, _ = read_all(corpus.h264_mp4.path, start_after=100.0)
    assert [(len(b), b.final) for b in batches] == [(0, True)]


# -- discovery -------------------------------------------------------------------------------


def test_stream_ids_are_deterministic_and_readable(corpus, tmp_path, monkeypatch) -> None:
    path = corpus.h264_mp4.path
    sid = stream_id_for(str(path))
    assert re.fullmatch(r"h264-[0-9a-f]{8}", sid)
    assert stream_id_for(str(path)) == sid
    monkeypatch.chdir(path.parent)
    assert stream_id_for("h264.mp4") == sid == stream_id_for(f"./sub/../h264.mp4")
    assert stream_id_for(str(tmp_path / "h264.mp4")) != sid  # same name, other file
    url = "rtsp://cam.local:554/live/Front Door.sdp"
    assert re.fullmatch(r"front_door-[0-9a-f]{8}", stream_id_for(url))
    assert re.fullmatch(r"cam_local-[0-9a-f]{8}", stream_id_for("rtsp://cam.local"))
    assert stream_id_for("rtsp://cam.local/a") != stream_id_for("rtsp://cam.local/a?x=1")


def test_expand_directory_recursive_sorted_videos_only(corpus) -> None:
    infos = expand_sources([str(corpus.good)])
    names = [Path(i.uri).relative_to(corpus.good).as_posix() for i in infos]
    assert names == ["h264.mp4", "mpeg4.avi", "nested/mjpeg.mkv", "vfr.mp4", "vp9.webm"]
    assert all(Path(i.uri).is_absolute() for i in infos)
    assert [i.stream_id for i in infos] == [stream_id_for(i.uri) for i in infos]
    durations = {Path(i.uri).name: i.duration for i in infos}
    assert durations["h264.mp4"] == pytest.approx(4.0, abs=0.05)
    assert durations["mjpeg.mkv"] == pytest.approx(3.0, abs=0.05)


def test_expand_glob_file_url_ids_and_dedup(corpus) -> None:
    infos = expand_sources([str(corpus.good / "*.mp4")])
    assert [Path(i.uri).name for i in infos] == ["h264.mp4", "vfr.mp4"]
    assert [Path(i.uri).name for i in expand_sources([str(corpus.good / "**" / "*")])][2] == "mjpeg.mkv"
    url = "rtsp://127.0.0.1:8554/cam"
    infos = expand_sources([str(corpus.good / "h264.mp4"), url, str(corpus.good)], ids=["front", "cam-1", None])
    assert [i.stream_id for i in infos[:2]] == ["front", "cam-1"]
    assert infos[1] == StreamInfo("cam-1", url, None)
    assert len(infos) == 6  # h264.mp4 from the directory is not listed twice
    bad = expand_sources([str(corpus.text_mp4), str(corpus.zero_byte)])
    assert [i.duration for i in bad] == [None, None]  # listed; errors surface when read


def test_expand_rejects_bad_inputs(corpus) -> None:
    missing = str(corpus.root / "nope.mp4")
    with pytest.raises(SourceError, match="nope.mp4") as err:
        expand_sources([missing])
    assert err.value.uri == missing and err.value.stream_id == stream_id_for(missing)
    empty = corpus.root / "empty_dir"
    empty.mkdir(exist_ok=True)
    with pytest.raises(SourceError, match="empty_dir"):
        expand_sources([str(empty)])
    with pytest.raises(SourceError, match=r"\*\.flv"):
        expand_sources([str(corpus.good / "*.flv")])
    with pytest.raises(ConfigError):
        expand_sources([str(corpus.good / "h264.mp4")], ids=["a", "b"])
    with pytest.raises(ConfigError):
        expand_sources([str(corpus.good)], ids=["one-id-for-many"])
    with pytest.raises(ConfigError):
        expand_sources([str(corpus.good / "h264.mp4"), str(corpus.good / "vfr.mp4")], ids=["same", "same"])


# -- errors ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "which, reason",
    [
        ("missing", "no such file"),
        ("zero_byte", "empty file"),
        ("text_mp4", "not a readable media file"),
        ("audio_only", "no video stream"),
        ("unreachable", "cannot connect"),
    ],
)
def test_bad_inputs_raise_source_error_with_context(corpus, which: str, reason: str) -> None:
    uri = {
        "missing": str(corpus.root / "missing.mp4"),
        "unreachable": f"tcp://127.0.0.1:{_free_port()}",
    }.get(which) or str(getattr(corpus, which))
    info = info_for(uri)
    with pytest.raises(SourceError, match=reason) as err:
        list(open_source(info, SamplingConfig(size=32), open_timeout=2.0))
    assert type(err.value) is SourceError  # not a raw av error, not a DecodeError
    assert err.value.stream_id == info.stream_id and err.value.uri == uri


def test_truncated_file_yields_good_batches_then_decode_error(corpus) -> None:
    spec = corpus.truncated
    info = info_for(spec.path)
    got: list[FrameBatch] = []
    with pytest.raises(DecodeError) as err:
        with open_source(info, SamplingConfig(fps=1.0, size=32, batch_frames=2)) as src:
            for batch in src:
                got.append(batch)
    e = err.value
    assert e.stream_id == info.stream_id and e.uri == str(spec.path)
    assert "truncated" in e.message and "6.000s" in e.message  # names the declared duration
    assert e.pts is not None and 1.0 < e.pts < 0.9 * spec.duration
    pts = np.concatenate([b.pts for b in got])
    assert len(pts) >= 2 and pts.tolist() == expected_samples([t for t in spec.times if t <= e.pts], 1.0)
    assert not any(b.final for b in got)  # the stream did not end cleanly


def test_corrupt_mid_stream_raises_decode_error_at_last_good_sample(corpus) -> None:
    info = info_for(corpus.corrupt.path)
    got: list[FrameBatch] = []
    with pytest.raises(DecodeError, match="corrupt") as err:
        for batch in open_source(info, SamplingConfig(fps=2.0, size=32, batch_frames=4)):
            got.append(batch)
    pts = np.concatenate([b.pts for b in got])
    assert len(pts) > 0 and err.value.pts == pts[-1]
    assert err.value.stream_id == info.stream_id and not any(b.final for b in got)


def test_close_mid_stream(corpus) -> None:
    src = open_source(info_for(corpus.h264_mp4.path), SamplingConfig(size=32, batch_frames=1))
    with src:
        first = next(iter(src))
    assert first.seq == 0 and not first.final
    src.close()  # idempotent


# -- URLs: live TCP, HTTP, timeouts ----------------------------------------------------------


def _serve_tcp(payload: bytes, *, stall_after: int | None = None, hold: float = 5.0) -> tuple[str, threading.Event]:
    """One-connection TCP server sending payload (or its first stall_after bytes, then silence)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(payload if stall_after is None else payload[:stall_after])
            if stall_after is not None:
                done.wait(hold)
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return f"tcp://127.0.0.1:{srv.getsockname()[1]}", done


@pytest.fixture(scope="module")
def mpegts(tmp_path_factory) -> VideoSpec:
    return make_video(tmp_path_factory.mktemp("live") / "live.ts", size=(160, 120), seconds=3.0)


def test_live_tcp_stream_fills_wallclock(mpegts: VideoSpec) -> None:
    url, _ = _serve_tcp(mpegts.path.read_bytes())
    before = time.time()
    with open_source(info_for(url), SamplingConfig(fps=2.0, size=32, batch_frames=4), open_timeout=3.0) as src:
        assert src.live
        batches = list(src)
    pts, frames = joined(batches)
    assert pts.tolist() == pytest.approx(expected_samples(mpegts.times, 2.0), abs=1e-3)
    assert_content_matches_pts(mpegts, pts, frames)
    clocks = np.concatenate([b.wallclock for b in batches])
    assert clocks.shape == pts.shape and np.all(np.diff(clocks) >= 0)
    assert before - 1 <= clocks[0] <= time.time() + 1
    assert batches[-1].final


def test_live_stall_times_out_after_good_batches(mpegts: VideoSpec) -> None:
    payload = mpegts.path.read_bytes()
    url, done = _serve_tcp(payload, stall_after=len(payload) // 2)
    got: list[FrameBatch] = []
    start = time.monotonic()
    try:
        with pytest.raises(DecodeError, match="timed out") as err:
            for batch in open_source(info_for(url), SamplingConfig(fps=2.0, size=32, batch_frames=2), open_timeout=1.0):
                got.append(batch)
    finally:
        done.set()
    assert time.monotonic() - start < 4.0
    assert got and err.value.pts == got[-1].pts[-1]


def test_silent_server_open_times_out(mpegts: VideoSpec) -> None:
    url, done = _serve_tcp(b"", stall_after=0)
    start = time.monotonic()
    try:
        with pytest.raises(SourceError) as err:
            open_source(info_for(url), SamplingConfig(size=32), open_timeout=1.0)
    finally:
        done.set()
    assert time.monotonic() - start < 4.0
    assert err.value.uri == url


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def http_root(corpus) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(corpus.good))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_file_reads_like_a_local_file(corpus, http_root: str) -> None:
    url = f"{http_root}/h264.mp4"
    with open_source(info_for(url), SamplingConfig(size=32), open_timeout=3.0) as src:
        assert not src.live and src.duration == pytest.approx(4.0, abs=0.05)
        batches = list(src)
    pts, frames = joined(batches)
    local_pts, local_frames = joined(read_all(corpus.h264_mp4.path)[0])
    assert pts.tolist() == local_pts.tolist() and np.array_equal(frames, local_frames)
    assert batches[-1].wallclock is None
    with pytest.raises(SourceError, match="cannot connect"):
        open_source(info_for(f"{http_root}/missing.mp4"), SamplingConfig(size=32), open_timeout=3.0)


# -- real clips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, codec",
    [
        ("arm_wrestling.mp4", "h264"),
        ("cleaning_pool_1s.mp4", "h264"),
        ("apply_eye_makeup.avi", "mpeg4"),
        ("flipping_pancake.mkv", None),
    ],
)
def test_real_clips(shared_videos: Path, name: str, codec: str | None) -> None:
    path = shared_videos / name
    if not path.exists():
        pytest.skip(f"{name} not in {shared_videos}")
    import av

    with av.open(str(path)) as c:
        if codec:
            assert c.streams.video[0].codec_context.name == codec
    (info,) = expand_sources([str(path)])
    assert info.duration and info.duration > 0.5
    batches, stats = read_all(info, fps=1.0, size=224, batch=4)
    pts, frames = joined(batches)
    assert frames.shape == (len(pts), 224, 224, 3) and frames.dtype == np.uint8
    assert abs(len(pts) - info.duration * 1.0) <= 1.0
    assert np.all(np.diff(pts) > 0.5) and pts[0] < 0.1
    assert frames.std() > 5  # real pictures, not blank output
    assert batches[-1].final and all(not b.final for b in batches[:-1])
    assert stats["frames_decoded"] >= info.duration * 20


def test_no_ray_or_torch_import() -> None:
    code = "import sys, streamvl.sources; bad = {'ray', 'torch'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
