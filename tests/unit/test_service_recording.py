"""Live recording (--record): packets -> keyframe-aligned segments named by their UTC span,
retention by age and size, which segments cover a range, cuts across segments that show the
frames of the asked time, and a recorder that survives a camera that drops."""

import time

import av
import pytest

from streamvl.service.recorder import Recorder, SegmentWriter, StreamRecorder, container_for
from streamvl.service.recordings import NotRecorded, Recordings, segment_name, stream_key
from tests.videos import index_mod_period, make_video

T0 = 1_800_000_000.0  # a UTC instant (2027), so names have 13 digits of milliseconds
FPS = 25


def record(spec_path, rec: Recordings, stream_id: str, segment_s: float, *, delay=lambda i: 0.0, at=T0,
           skip: int = 0) -> list:
    """Feed a file's packets to a SegmentWriter as if they arrived live: packet i at at + its time + delay(i)."""
    closed = []
    writer = SegmentWriter(rec.folder(stream_id), segment_s, closed.append)
    with av.open(str(spec_path)) as c:
        stream = c.streams.video[0]
        first = None
        for i, p in enumerate(c.demux(stream)):
            if p.pts is None:
                continue
            first = p.pts if first is None else first
            if i < skip:
                continue
            writer.write(p, at + float((p.pts - first) * p.time_base) + delay(i))
    writer.close()
    return closed


def decoded(path):
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return frames, c.streams.video[0].codec_context.name


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """12 s of 25 fps h264 in MPEG-TS (what a camera sends), a keyframe every second."""
    return make_video(tmp_path_factory.mktemp("cam") / "cam.ts", fps=FPS, seconds=12.0, gop=FPS)


def test_segments_start_on_keyframes_and_are_named_by_their_utc_span(tmp_path, camera):
    rec = Recordings(tmp_path / "rec")
    # packets arrive late by varying amounts (never early): the least-delayed one places the segment
    closed = record(camera.path, rec, "cam", 4.0, delay=lambda i: 0.05 + 0.2 * (i % 7 != 3))
    segs = rec.segments("cam")
    assert segs == sorted(closed, key=lambda s: s.start) and len(segs) == 3
    for k, seg in enumerate(segs):
        assert seg.start == pytest.approx(T0 + 4 * k + 0.05, abs=2e-3)
        assert seg.end == pytest.approx(T0 + 4 * (k + 1) + 0.05, abs=2e-3)
        assert seg.path.name == segment_name(seg.start, seg.end, "mp4")
        frames, codec = decoded(seg.path)
        assert codec == "h264" and len(frames) == 4 * FPS  # stream copy: every frame, none re-encoded away
        assert frames[0].key_frame and float(frames[0].time) == pytest.approx(0.0)
        assert index_mod_period(frames[0].to_ndarray(format="rgb24")) == (4 * k * FPS) % 50
    assert not list(rec.folder("cam").glob("*.part.*"))  # nothing half-written is left or listed


def test_a_recording_joined_mid_gop_starts_at_the_next_keyframe(tmp_path, camera):
    rec = Recordings(tmp_path / "rec")
    record(camera.path, rec, "cam", 100.0, skip=10)  # packets 0-9 missed: the first keyframe after is at 1 s
    (seg,) = rec.segments("cam")
    assert seg.start == pytest.approx(T0 + 1.0, abs=2e-3) and seg.end == pytest.approx(T0 + 12.0, abs=2e-3)
    frames, _ = decoded(seg.path)
    assert len(frames) == 11 * FPS and index_mod_period(frames[0].to_ndarray(format="rgb24")) == FPS % 50


def test_folders_are_hashes_of_the_stream_id_never_its_text(tmp_path):
    rec = Recordings(tmp_path / "rec")
    for sid in ("../../etc", "/abs/path", "cam 1", "a/b"):
        folder = rec.folder(sid)
        assert folder.parent == tmp_path / "rec" and folder.name == stream_key(sid)
        assert all(c in "0123456789abcdef" for c in folder.name)
    assert stream_key("cam1") != stream_key("cam2")


@pytest.mark.parametrize("start,end", [(3.0, 6.0), (0.4, 1.4), (7.9, 11.0)])
def test_cuts_across_segments_show_the_frames_of_the_asked_time(tmp_path, camera, start, end):
    rec = Recordings(tmp_path / "rec")
    record(camera.path, rec, "cam", 4.0)
    out = tmp_path / "cut.mp4"
    how = rec.cut("cam", T0 + start, T0 + end, out)
    frames, codec = decoded(out)
    assert codec == "h264" and how == ("remux" if start == int(start) else "transcode")
    assert float(frames[0].time) == pytest.approx(0.0, abs=1e-6)
    assert len(frames) == pytest.approx((end - start) * FPS, abs=1)
    first = int(start * FPS + 1e-9)  # the frame on screen at `start`
    assert index_mod_period(frames[0].to_ndarray(format="rgb24")) == first % 50
    assert index_mod_period(frames[-1].to_ndarray(format="rgb24")) == (round(end * FPS) - 1) % 50


def test_what_the_recording_does_not_cover_is_refused_with_the_reason(tmp_path, camera):
    rec = Recordings(tmp_path / "rec")
    with pytest.raises(NotRecorded, match="no recording"):
        rec.covering("cam", T0, T0 + 1)
    record(camera.path, rec, "cam", 4.0)
    record(camera.path, rec, "cam", 4.0, at=T0 + 20.0)  # the camera was down for 8 s
    assert [round(s.start - T0) for s in rec.covering("cam", T0 + 3, T0 + 9)] == [0, 4, 8]
    with pytest.raises(NotRecorded, match="gap"):
        rec.covering("cam", T0 + 11, T0 + 21)
    with pytest.raises(NotRecorded, match="ends after the last closed segment"):
        rec.covering("cam", T0 + 40, T0 + 42)
    with pytest.raises(NotRecorded, match="starts before"):
        rec.covering("cam", T0 - 5, T0 + 2)
    with pytest.raises(NotRecorded, match="ends after"):
        rec.covering("cam", T0 + 30, T0 + 35)
    with pytest.raises(NotRecorded):
        rec.cut("cam", T0 + 11, T0 + 21, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_retention_deletes_the_oldest_first_by_age_then_by_size(tmp_path, camera):
    rec = Recordings(tmp_path / "rec")
    record(camera.path, rec, "a", 4.0)
    record(camera.path, rec, "b", 4.0, at=T0 + 2.0)
    every = sorted(rec.segments("a") + rec.segments("b"), key=lambda s: s.end)
    assert len(every) == 6
    rec.keep_s = 10.0
    gone = rec.enforce(now=T0 + 18.0)  # keeps what ended at or after T0 + 8: a's 0-4 s and b's 2-6 s go
    assert gone == [s.path for s in every if s.end < T0 + 8.0] and len(gone) == 2
    left = sorted(rec.segments("a") + rec.segments("b"), key=lambda s: s.end)
    assert left == every[2:]
    rec.keep_s, rec.max_bytes = None, left[-1].size + left[-2].size  # room for the newest two
    gone = rec.enforce(now=T0 + 1e6)
    assert gone == [left[0].path, left[1].path] and rec.total_bytes() == rec.max_bytes
    assert rec.enforce(now=T0 + 1e6) == []


def test_codecs_mp4_cannot_take_go_to_matroska():
    assert container_for("h264") == "mp4" and container_for("hevc") == "mp4"
    assert container_for("mpeg2video") == "mkv" and container_for("rawvideo") == "mkv"


def test_an_mpeg2_camera_is_recorded_as_it_is_in_matroska(tmp_path):
    spec = make_video(tmp_path / "cam.ts", codec="mpeg2video", fps=FPS, seconds=3.0, gop=FPS)
    rec = Recordings(tmp_path / "rec")
    (seg,) = record(spec.path, rec, "cam", 10.0)
    frames, codec = decoded(seg.path)
    assert seg.path.suffix == ".mkv" and codec == "mpeg2video" and len(frames) == 3 * FPS
    out = tmp_path / "cut.mp4"
    assert rec.cut("cam", T0 + 1.0, T0 + 2.0, out) == "transcode"  # browsers need H.264 for this one
    frames, codec = decoded(out)
    assert codec == "h264" and len(frames) == pytest.approx(FPS, abs=1)


def wait_for(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_camera_that_drops_does_not_stop_the_recorder(tmp_path, camera):
    """The source ends (a file: every read reaches its end, like a camera closing the connection):
    the recorder counts a one-line error, reconnects and records again, until stopped."""
    rec = Recordings(tmp_path / "rec")
    recorder = StreamRecorder("cam", str(camera.path), rec, 4.0, backoff_max_s=0.2).start()
    try:
        assert wait_for(lambda: recorder.status.errors >= 2 and recorder.status.segments >= 6)
        assert recorder.status.last_error == "the stream ended" and recorder.alive()
    finally:
        recorder.stop()
    assert not recorder.alive() and len(rec.segments("cam")) >= 6


def test_a_camera_that_never_answers_is_recorded_as_errors_not_raised(tmp_path):
    rec = Recordings(tmp_path / "rec")
    recorder = StreamRecorder("gone", str(tmp_path / "no-such.ts"), rec, 4.0, backoff_max_s=0.1).start()
    try:
        assert wait_for(lambda: recorder.status.errors >= 3)
        assert "no such file" in recorder.status.last_error and "\n" not in recorder.status.last_error
        assert recorder.alive()
    finally:
        recorder.stop()
    assert not recorder.alive() and rec.segments("gone") == []


def test_the_recorder_follows_the_live_streams_of_the_index(tmp_path, camera):
    live = {"cam": str(camera.path)}
    rec = Recordings(tmp_path / "rec", keep_s=3600.0)
    recorder = Recorder(rec, lambda: dict(live), 4.0, poll_s=0.05, backoff_max_s=0.2)
    try:
        recorder.sync()
        assert set(recorder.recorders) == {"cam"}
        first = recorder.recorders["cam"]
        recorder.sync()
        assert recorder.recorders["cam"] is first  # one recorder per stream, kept across polls
        live.pop("cam")  # removed from the index
        recorder.sync()
        assert recorder.recorders == {} and not first.alive()
        live["cam"] = str(camera.path)
        recorder.start()
        assert wait_for(lambda: recorder.status().get("cam", {}).get("segments", 0) >= 3)
    finally:
        recorder.stop()
    assert recorder.recorders == {}


def test_segments_whose_estimated_starts_overlap_a_little_still_join(tmp_path, camera):
    """Two segments' UTC starts are estimates: the later may start a little (here more than a frame) before the earlier ends."""
    rec = Recordings(tmp_path / "rec")
    record(camera.path, rec, "cam", 4.0)
    second = rec.segments("cam")[1]
    second.path.rename(second.path.with_name(segment_name(second.start - 0.06, second.end - 0.06, "mp4")))
    out = tmp_path / "cut.mp4"
    assert rec.cut("cam", T0 + 2.0, T0 + 6.0, out) == "remux"
    frames, _ = decoded(out)
    assert len(frames) == pytest.approx(4 * FPS, abs=1)
    assert index_mod_period(frames[0].to_ndarray(format="rgb24")) == (2 * FPS) % 50


def test_a_segment_never_replaces_one_with_the_same_span(tmp_path):
    """A source read faster than real time gives consecutive segments the same UTC span: the second
    one gets the next free name (its end a millisecond on) instead of overwriting the first."""
    from streamvl.service.recorder import unused_name
    from streamvl.service.recordings import segment_name

    first, end = unused_name(tmp_path, 100.0, 104.0, "mp4")
    assert (first.name, end) == (segment_name(100.0, 104.0, "mp4"), 104.0)
    first.write_bytes(b"x")
    second, end2 = unused_name(tmp_path, 100.0, 104.0, "mp4")
    assert second != first and not second.exists() and abs(end2 - 104.001) < 1e-9
