"""The resume ledger checked against the rows (streamvl.storage.ledger.held_checkpoint): a checkpoint that claims
more than the tables hold (rows lost underneath it) is pulled back to the first missing window,
and the next run re-indexes exactly from there, with nothing lost and nothing duplicated."""

from __future__ import annotations

import pytest

from streamvl.storage.ledger import held_checkpoint
from streamvl.storage.ledger import Checkpoint, grid_key
from streamvl.storage.store import CLIPS, FRAMES
from tests.unit.test_scheduler import FPS, STRIDE, WINDOW, Harness, expected_window_starts, frames

GRID = grid_key(FPS, WINDOW, STRIDE, ["meanpool"])


def check(cp: Checkpoint, pts, starts, done=False) -> Checkpoint:
    return held_checkpoint(cp, window=WINDOW, stride=STRIDE, done=done, adapters=["meanpool"],
                           frame_pts=pts, clip_starts={"meanpool": starts})


def test_a_checkpoint_the_rows_hold_is_kept():
    cp = Checkpoint(GRID, next_window=4, resume_after=3.0, frames=6, last_pts=5.0)
    assert check(cp, frames(6), [0.0, 2.0]) == cp
    done = Checkpoint(GRID, next_window=7, resume_after=6.0, frames=7, last_pts=6.0)
    assert check(done, frames(7), expected_window_starts(7), done=True) == done


def test_a_lost_window_pulls_the_checkpoint_back_to_it():
    cp = Checkpoint(GRID, next_window=4, resume_after=3.0, frames=6, last_pts=5.0)
    assert check(cp, frames(6), [0.0]) == Checkpoint(GRID, next_window=2, resume_after=1.0, frames=2, last_pts=1.0)
    assert check(cp, frames(6), []) == Checkpoint(GRID)
    done = Checkpoint(GRID, next_window=7, resume_after=6.0, frames=7, last_pts=6.0)
    pulled = check(done, frames(7), [0.0, 2.0], done=True)  # the tail window (4.0) is missing
    assert (pulled.next_window, pulled.resume_after) == (4, 3.0)


def test_lost_frames_restart_the_stream():
    cp = Checkpoint(GRID, next_window=4, resume_after=3.0, frames=6, last_pts=5.0)
    assert check(cp, [0.0, 1.0, 3.0, 4.0, 5.0], [0.0, 2.0]) == Checkpoint(GRID)
    assert check(cp, [0.0], {"other": [0.0]}) == Checkpoint(GRID)


@pytest.mark.parametrize("lost", ["all clips", "last clips", "all frames", "middle frames"])
def test_a_done_file_whose_rows_were_lost_is_indexed_again(lost):
    """The issue's scenario: a file indexed completely loses rows (a lost manifest, a restored
    version); re-indexing it fills the gap instead of printing clips=0 and skipping it."""
    h = Harness({"a": 11, "b": 9})
    h.run(seed=1).run()
    h.assert_exactly_once("a")
    clips, frame_rows = h.db.tables[CLIPS], h.db.tables[FRAMES]
    if lost == "all clips":
        gone = [k for k in clips if k[0] == "a"]
    elif lost == "last clips":
        gone = [k for k in clips if k[0] == "a" and k[2] >= 4.0]
    elif lost == "all frames":
        gone = [k for k in frame_rows if k[0] == "a"]
    else:
        gone = [k for k in frame_rows if k[0] == "a" and 3.0 <= k[1] <= 5.0]
    table = clips if lost.endswith("clips") else frame_rows
    for k in gone:
        del table[k]
    h.db.rewrites.clear()
    report = h.run(seed=2).run()
    h.assert_exactly_once("a")
    h.assert_exactly_once("b")
    h.assert_ledger_within_tables()
    by_id = {s.stream_id: s for s in report.streams}
    assert by_id["a"].status == "done" and by_id["a"].clips > 0
    assert by_id["b"].clips == 0  # b was untouched: still skipped
    if lost == "last clips":  # re-indexed from the first missing window, not from the start
        assert h.db.rewrites[CLIPS] == 0
        assert h.db.rewrites[FRAMES] <= 11 - 3
