"""The resume ledger (streamvl.storage.ledger): where each stream continues, moved only forwards."""

from streamvl.storage.ledger import Checkpoint, Ledger, grid_key, resume_point
from streamvl.types import Status, StreamState

GRID = grid_key(1.0, 4, 2, ["meanpool"])


def row(status: str = "running") -> StreamState:
    return StreamState("v", "/v.mp4", Status(status), **Checkpoint(GRID, 4, 3.0, 7, 6.0).as_row())


def test_resume_point_continues_a_stored_checkpoint_of_the_same_uri_and_grid():
    assert resume_point(row(), "/v.mp4", GRID, live=False) == (Checkpoint(GRID, 4, 3.0, 7, 6.0), False)
    assert resume_point(row(), "/other.mp4", GRID, live=False) == (Checkpoint(GRID), False)
    assert resume_point(row(), "/v.mp4", grid_key(2.0, 4, 2, ["meanpool"]), live=False)[0].at_start
    assert resume_point(None, "/v.mp4", GRID, live=False) == (Checkpoint(GRID), False)


def test_a_done_file_is_done_but_a_live_stream_never_is():
    assert resume_point(row(status="done"), "/v.mp4", GRID, live=False)[1] is True
    assert resume_point(row(status="done"), "/v.mp4", GRID, live=True)[1] is False
    assert resume_point(row(status="error"), "/v.mp4", GRID, live=False)[1] is False


def test_the_ledger_moves_forwards_only_and_says_when_a_window_completed():
    ledger = Ledger()
    ledger.open("s", Checkpoint(GRID))
    assert "s" in ledger and "t" not in ledger
    assert ledger.commit("s", 0, None, 3, 2.0, None) is False  # frames, but no window yet
    assert (ledger["s"].next_window, ledger["s"].frames, ledger["s"].last_pts) == (0, 3, 2.0)
    assert ledger.commit("s", 2, 1.0, 5, 4.0, 100.0) is True
    assert ledger.commit("s", 0, None, 2, 1.0, None) is False  # an older group: no step back
    assert ledger["s"] == Checkpoint(GRID, 2, 1.0, 5, 4.0, 100.0)
    ledger.open("s", Checkpoint(GRID))  # a stream added again starts from what it is given
    assert ledger["s"].at_start
