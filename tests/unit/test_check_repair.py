"""`streamvl check` / `repair` on a real LanceDB database with damage made by hand: a lost latest
manifest, a truncated and a deleted data file, a lost index. Check names the table and file;
repair restores the newest readable version and re-queues exactly the streams whose rows were
lost, whose next run (the ledger check) redoes only the missing windows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamvl.cli import main
from streamvl.errors import StoreDamagedError, StoreError
from streamvl.storage.check import check
from streamvl.storage.ledger import from_state, grid_key
from streamvl.storage.repair import repair
from streamvl.storage.schema import CLIPS, FRAMES
from streamvl.storage.store import Store
from streamvl.types import Status, StreamState
from tests.rows import clips, frames, unit

GRID = grid_key(1.0, 4, 2, ["meanpool"])
N = 11  # frames 0..10 s; windows 0, 2, 4, 6 and the tail 8


def done_state(sid: str) -> StreamState:
    return StreamState(sid, f"/v/{sid}.mp4", Status.DONE, frames_indexed=N, last_committed_pts=N - 1.0,
                       model="tiny", next_window=N, resume_after=N - 1.0, grid=GRID)


@pytest.fixture
def db(tmp_path) -> str:
    """Two streams as an index run leaves them: frames, clips in two commits each, done rows."""
    store = Store(str(tmp_path / "db"))
    for k, sid in enumerate(["a", "b"]):
        store.upsert(FRAMES, frames(sid, [float(i) for i in range(N)], unit(N, seed=k)))
        store.upsert(CLIPS, clips(sid, [0.0, 2.0, 4.0], unit(3, seed=10 + k)))
    store.upsert(CLIPS, clips("a", [6.0, 8.0], unit(2, seed=20)))  # a's last commit: the latest version
    store.conn.db.open_table(CLIPS).create_scalar_index("stream_id")
    store.upsert(CLIPS, clips("b", [6.0, 8.0], unit(2, seed=21)))
    for sid in ("a", "b"):
        store.record_state(done_state(sid))
    return str(tmp_path / "db")


def clips_dir(db: str) -> Path:
    return Path(db) / f"{CLIPS}.lance"


def latest_data_file(db: str) -> Path:
    import lance

    ds = lance.dataset(str(clips_dir(db)))
    return clips_dir(db) / "data" / ds.get_fragments()[-1].metadata.files[0].path


def starts(db: str, sid: str) -> list[float]:
    got = Store(db).read(CLIPS, f"stream_id = '{sid}'", ["start"])
    return sorted(got["start"].to_pylist())


def test_a_sound_database_checks_ok(db):
    report = check(db)
    assert report.ok, report.lines()
    assert {t.table for t in report.tables} >= {FRAMES, CLIPS, "streams"}
    assert all(t.line().split()[2] == "ok" for t in report.tables)
    assert repair(db).lines() == ["nothing to repair"]


def test_a_lost_latest_manifest_is_found_and_its_stream_requeued(db):
    manifests = sorted((clips_dir(db) / "_versions").glob("*.manifest"), key=lambda p: p.stat().st_mtime)
    manifests[-1].unlink()  # b's last commit (clips 6, 8) is gone
    assert starts(db, "b") == [0.0, 2.0, 4.0]
    report = check(db)
    assert not report.ok
    verdict = {t.table: t for t in report.tables}[CLIPS]
    assert not verdict.ok and "latest manifest lost" in verdict.line()
    assert [(v.stream_id, v.held_window) for v in report.ledger] == [("b", 6)]
    fixed = repair(db)
    assert fixed.ok and fixed.requeued == ["b"], fixed.lines()
    state = Store(db).stream_state("b")
    assert state.status is Status.QUEUED and state.next_window == 6 and state.resume_after == 5.0
    assert Store(db).stream_state("a").status is Status.DONE  # untouched
    assert check(db).ok, check(db).lines()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_data_file_fails_reads_in_one_line_and_repair_restores(db, damage):
    bad = latest_data_file(db)
    if damage == "truncate":
        with open(bad, "r+b") as f:
            f.truncate(10)
    else:
        bad.unlink()
    with pytest.raises(StoreDamagedError) as err:
        Store(db).read(CLIPS)
    assert err.value.table == CLIPS and "streamvl check" in str(err.value) and "\n" not in str(err.value)
    assert "/rustc/" not in str(err.value)
    report = check(db)
    verdict = {t.table: t for t in report.tables}[CLIPS]
    assert not verdict.ok and verdict.bad_path == str(bad)
    assert report.ledger_error is not None  # the ledger cannot be read against a broken table
    fixed = repair(db)
    assert fixed.ok, fixed.lines()
    assert any("restored version" in a for a in fixed.actions)
    assert fixed.requeued == ["b"]
    assert starts(db, "a") == [0.0, 2.0, 4.0, 6.0, 8.0]  # committed before the damage: kept
    assert starts(db, "b") == [0.0, 2.0, 4.0]
    assert from_state(Store(db).stream_state("b"), GRID).next_window == 6
    assert check(db).ok, check(db).lines()


def test_a_lost_index_is_reported_and_rebuilt(db):
    import lance

    ds = lance.dataset(str(clips_dir(db)))
    uuid = ds.list_indices()[0]["uuid"]
    for f in (clips_dir(db) / "_indices" / uuid).iterdir():
        f.unlink()
    verdict = {t.table: t for t in check(db).tables}[CLIPS]
    assert "index stream_id_idx" in verdict.line()
    fixed = repair(db)
    assert any("rebuilt index stream_id_idx" in a for a in fixed.actions), fixed.lines()
    assert check(db).ok


def test_repair_refuses_while_a_writer_is_live(db):
    Store(db).record_state(dataclasses.replace(done_state("a"), status=Status.RUNNING))
    with pytest.raises(StoreError, match="being written right now"):
        repair(db)
    assert repair(db, force=True).ok


def test_cli_check_and_repair(db):
    latest_data_file(db).unlink()
    runner = CliRunner()
    got = runner.invoke(main, ["check", "--db", db])
    assert got.exit_code == 4, got.output
    lines = got.output.strip().splitlines()
    assert any(line.startswith(CLIPS) and "DAMAGED" in line for line in lines)
    assert lines[-1].startswith("damaged: run `streamvl repair")
    got = runner.invoke(main, ["repair", "--db", db])
    assert got.exit_code == 0 and "restored version" in got.output and "re-queued 1 stream" in got.output
    got = runner.invoke(main, ["check", "--db", db])
    assert got.exit_code == 0 and got.output.strip().splitlines()[-1] == "ok"
    got = runner.invoke(main, ["check", "--db", db + "-missing"])
    assert got.exit_code == 2


def test_a_garbled_latest_manifest_is_moved_aside_and_its_stream_requeued(db):
    from streamvl.storage.tablefiles import MOVED, manifest_version

    newest = max((clips_dir(db) / "_versions").glob("*.manifest"), key=lambda p: manifest_version(p.name))
    newest.write_bytes(b"\x00not a manifest" * 8)
    verdict = {t.table: t for t in check(db).tables}[CLIPS]
    assert "cannot open" in verdict.line() and verdict.bad_path.endswith(newest.name)
    fixed = repair(db)
    assert fixed.ok and fixed.requeued == ["b"], fixed.lines()
    assert not newest.exists() and any((clips_dir(db) / MOVED).iterdir())
    assert starts(db, "a") == [0.0, 2.0, 4.0, 6.0, 8.0] and starts(db, "b") == [0.0, 2.0, 4.0]
    assert check(db).ok, check(db).lines()
