"""Video for the page: which files browsers play as they are, and cuts of segments (PyAV)."""

import threading

import av
import pytest

from streamvl.service.media import MediaLibrary, cut_clip
from tests.videos import make_video


def frame_times(path):
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)], c.streams.video[0].codec_context.name


def test_which_files_a_browser_plays_as_they_are(tmp_path):
    lib = MediaLibrary(str(tmp_path / "cache"))
    mp4 = make_video(tmp_path / "a.mp4", seconds=1.0)
    webm = make_video(tmp_path / "b.webm", codec="libvpx-vp9", seconds=1.0)
    avi = make_video(tmp_path / "c.avi", codec="mpeg4", seconds=1.0)
    (tmp_path / "d.mp4").write_text("not a video")
    assert lib.file_of({"uri": str(mp4.path)}).mime == "video/mp4"
    assert lib.file_of({"uri": f"file://{webm.path}"}).mime == "video/webm"
    assert lib.file_of({"uri": str(avi.path)}).mime is None  # a video, but not one browsers play
    assert lib.file_of({"uri": str(tmp_path / "d.mp4")}) is None  # never served: not a video
    assert lib.file_of({"uri": str(tmp_path / "moved.mp4")}) is None
    assert lib.file_of({"uri": "rtsp://127.0.0.1/cam"}) is None and lib.file_of(None) is None


@pytest.mark.parametrize("start,end,how", [(0.0, 2.0, "remux"), (4.0, 6.0, "remux"), (1.3, 3.1, "transcode")])
def test_cuts_start_at_zero_and_last_as_asked(tmp_path, start, end, how):
    spec = make_video(tmp_path / "a.mp4", size=(320, 240), fps=25, seconds=8.0, gop=100)  # keyframes at 0 s and 4 s
    out = tmp_path / "cut.mp4"
    assert cut_clip(spec.path, start, end, out) == how
    times, codec = frame_times(out)
    assert codec == "h264" and times[0] == pytest.approx(0.0, abs=1e-6)
    assert len(times) == pytest.approx((end - start) * 25, abs=1)


def test_the_library_cuts_once_per_segment(tmp_path):
    spec = make_video(tmp_path / "a.avi", codec="mpeg4", seconds=4.0)
    lib = MediaLibrary(str(tmp_path / "cache"))
    video = lib.file_of({"uri": str(spec.path)})
    results = []
    threads = [threading.Thread(target=lambda: results.append(lib.clip(video, 1.0, 2.5))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({path for path, _ in results}) == 1 and {how for _, how in results} == {"transcode"}
    assert len(list((tmp_path / "cache").glob("*.mp4"))) == 1
    times, _ = frame_times(results[0][0])
    assert len(times) == pytest.approx(1.5 * 25, abs=1)
