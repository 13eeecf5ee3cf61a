import numpy as np
import pytest

from streamvl.pipeline.windows import Windower


def run(n, window=8, stride=4, chunk=3, keep_frames=False):
    w = Windower("s", window, stride, 1.0, keep_frames)
    out = []
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        pts = np.arange(i, i + m, dtype=np.float64)
        frames = np.zeros((m, 2, 2, 3), np.uint8) + np.arange(i, i + m, dtype=np.uint8)[:, None, None, None]
        out += w.push(pts, np.tile(pts[:, None], (1, 4)).astype(np.float32), frames)
    return out + w.flush(), w


@pytest.mark.parametrize("n, expected", [
    (3, [(0, 3)]),
    (8, [(0, 8)]),
    (10, [(0, 8), (4, 10)]),
    (12, [(0, 8), (4, 12)]),
    (13, [(0, 8), (4, 12), (8, 13)]),
    (0, []),
])
def test_grid_and_tail(n, expected):
    windows, _ = run(n)
    assert [(w.start, w.end) for w in windows] == [(float(a), float(b)) for a, b in expected]
    for w in windows:  # features are exactly the frames inside the window, in order
        assert w.features[:, 0].tolist() == list(np.arange(w.start, w.end))


def test_chunking_does_not_change_windows():
    a, _ = run(29, chunk=1)
    b, _ = run(29, chunk=7)
    assert [(w.start, w.end) for w in a] == [(w.start, w.end) for w in b]


def test_every_frame_covered_and_buffer_bounded():
    windows, w = run(101, window=8, stride=8, chunk=5)
    covered = sorted({int(p) for win in windows for p in win.features[:, 0]})
    assert covered == list(range(101))
    assert len(w._pts) == 0  # nothing left after flush


def test_frames_kept_only_when_asked():
    with_frames, _ = run(9, keep_frames=True)
    without, _ = run(9)
    assert with_frames[0].frames.shape == (8, 2, 2, 3) and without[0].frames is None
