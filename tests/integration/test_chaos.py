"""Chaos on the stored tables, end to end through index runs on a local Ray: a lost latest
manifest, a truncated and a deleted data file, a disk that fills up during a run. Each time,
nothing committed before the damage is lost for good and nothing is stored twice: `check` finds
the damage, `repair` restores the table, and indexing the same files again fills the gap."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import lance
import lancedb
import pytest

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.errors import StoreDamagedError
from streamvl.sources.sampling import sample_times
from streamvl.storage.check import check
from streamvl.storage.repair import repair
from streamvl.storage.store import CLIPS, FRAMES
from tests.integration.test_resume import expected_window_starts
from tests.videos import make_video

pytestmark = pytest.mark.integration
MODEL = "streamvl-tiny@random:0"
FPS, WINDOW, STRIDE, BATCH = 1.0, 4, 2, 2


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("chaos")
    return [make_video(root / f"{name}.mp4", seconds=9.0, fps=4, size=(64, 48), gop=4) for name in ("a", "b")]


def config(db: Path) -> IndexConfig:
    return IndexConfig(db=str(db), model=MODEL, sampling={"fps": FPS, "batch_frames": BATCH},
                       clips={"window": WINDOW, "stride": STRIDE}, runtime={"checkpoint_interval_s": 0.0})


def index(db: Path, videos):
    from streamvl.runtime.driver import run_index

    return {s.stream_id: s for s in run_index(api.discover([str(v.path) for v in videos]), config(db)).streams}


def assert_exactly_once(db: Path, videos) -> None:
    conn = lancedb.connect(str(db))
    clips = conn.open_table(CLIPS).to_arrow().to_pylist()
    frames = conn.open_table(FRAMES).to_arrow().to_pylist()
    keys = [(r["stream_id"], r["adapter"], r["start"]) for r in clips]
    assert len(keys) == len(set(keys)), "duplicate clip rows"
    assert len(frames) == len({(r["stream_id"], r["pts"]) for r in frames}), "duplicate frame rows"
    for stream, spec in zip(api.discover([str(v.path) for v in videos]), videos):
        pts = sample_times(list(spec.times), FPS)
        starts = [pts[i] for i in expected_window_starts(len(pts), WINDOW, STRIDE)]
        assert sorted(r["start"] for r in clips if r["stream_id"] == stream.stream_id) == pytest.approx(starts)
        assert sorted(r["pts"] for r in frames if r["stream_id"] == stream.stream_id) == pytest.approx(pts)


def latest_manifest(db: Path, table: str) -> Path:
    """The manifest of the table's newest version (the last one written)."""
    return max((db / f"{table}.lance" / "_versions").glob("*.manifest"), key=lambda p: p.stat().st_mtime_ns)


def test_a_lost_latest_manifest_is_reindexed_not_skipped(ray_local, videos, tmp_path):
    """The issue's scenario: the clips table's latest manifest is lost; indexing the same files
    again re-indexes the lost clips instead of printing clips=0 and skipping the stream."""
    db = tmp_path / "db"
    index(db, videos)
    assert_exactly_once(db, videos)
    latest_manifest(db, CLIPS).unlink()
    assert not check(str(db)).ok
    again = index(db, videos)
    assert sum(s.clips for s in again.values()) > 0  # the lost windows were indexed again
    assert all(s.status == "done" for s in again.values())
    assert_exactly_once(db, videos)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_data_file_check_repair_reindex(ray_local, videos, tmp_path, damage):
    db = tmp_path / "db"
    index(db, videos)
    ds = lance.dataset(str(db / f"{CLIPS}.lance"))
    bad = db / f"{CLIPS}.lance" / "data" / ds.get_fragments()[-1].metadata.files[0].path
    if damage == "truncate":
        os.truncate(bad, 16)
    else:
        bad.unlink()
    with pytest.raises(StoreDamagedError) as err:
        index(db, videos)
    assert err.value.table == CLIPS and "streamvl repair" in str(err.value) and "\n" not in str(err.value)
    found = check(str(db))
    assert [t.table for t in found.tables if not t.ok] == [CLIPS]
    fixed = repair(str(db))
    assert fixed.ok, fixed.lines()
    assert check(str(db)).ok
    index(db, videos)
    assert_exactly_once(db, videos)


def test_a_full_disk_during_a_run_loses_nothing_committed(ray_local, videos, tmp_path):
    """A real full disk: the database is on a small tmpfs (mounted here, so the test needs root,
    as CI runs it); a filler file takes the free space after the first file is indexed, so the
    second run's writes fail with ENOSPC. The first file's rows survive, the tables stay readable,
    and once space is back the second file is indexed exactly once."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and must run as root (CI does)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        db = mnt / "db"
        index(db, videos[:1])
        free = shutil.disk_usage(mnt).free
        with open(mnt / "filler", "wb") as f:
            f.write(b"\0" * (free - 4096))
        try:
            report = index(db, videos)
            assert any(s.status == "error" for s in report.values())
        except Exception as exc:  # a run whose store refuses every write may end with its store error
            assert "No space left" in str(exc) or "ENOSPC" in str(exc) or "space" in str(exc).lower(), exc
        (mnt / "filler").unlink()
        assert_exactly_once(db, videos[:1])  # committed before the disk filled: all still there
        index(db, videos)
        assert_exactly_once(db, videos)
        assert check(str(db)).ok
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
