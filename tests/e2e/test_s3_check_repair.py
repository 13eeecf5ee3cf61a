"""`streamvl check` / `repair` on an S3 database (moto's S3 server on 127.0.0.1): the damage is
made through boto3, object by object, as a failing disk or a half-finished upload would leave
it: a deleted and a truncated data file, a garbled and a deleted latest manifest. Check reports
the table and exits 4 (as on a local disk); repair brings back a table every reader accepts,
keeps every row committed before the damaged version and re-queues the stream that lost rows."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from streamvl.cli import main
from streamvl.storage.check import check
from streamvl.storage.ledger import from_state, grid_key
from streamvl.storage.repair import repair
from streamvl.storage.schema import CLIPS, FRAMES
from streamvl.storage.store import Store
from streamvl.storage.tablefiles import MOVED, manifest_version
from streamvl.types import Status, StreamState
from tests.e2e.s3_server import moto_s3, s3  # noqa: F401  (fixtures)
from tests.rows import clips, frames, unit

pytestmark = pytest.mark.e2e
GRID = grid_key(1.0, 4, 2, ["meanpool"])
N = 11


@pytest.fixture
def db(s3) -> str:
    """Streams a and b indexed into s3://.../db: b's clips 6, 8 are the clips table's latest version."""
    uri = s3.uri("db")
    store = Store(uri)
    for k, sid in enumerate(["a", "b"]):
        store.upsert(FRAMES, frames(sid, [float(i) for i in range(N)], unit(N, seed=k)))
        store.upsert(CLIPS, clips(sid, [0.0, 2.0, 4.0], unit(3, seed=10 + k)))
    store.upsert(CLIPS, clips("a", [6.0, 8.0], unit(2, seed=20)))
    store.upsert(CLIPS, clips("b", [6.0, 8.0], unit(2, seed=21)))
    for sid in ("a", "b"):
        store.record_state(StreamState(sid, f"/v/{sid}.mp4", Status.DONE, frames_indexed=N, last_committed_pts=N - 1.0,
                                       model="tiny", next_window=N, resume_after=N - 1.0, grid=GRID))
    return uri


def starts(db: str, sid: str) -> list[float]:
    return sorted(Store(db).read(CLIPS, f"stream_id = '{sid}'", ["start"])["start"].to_pylist())


def key_of(s3, db: str, rel: str) -> str:
    return f"{db.split('/', 3)[3]}/{CLIPS}.lance/{rel}"


def latest(s3, db: str, folder: str) -> str:
    """The key of the clips table's newest manifest, or of its newest data file."""
    prefix = key_of(s3, db, folder + "/")
    if folder == "_versions":
        return max((k for k in s3.keys(prefix) if k.endswith(".manifest")),
                   key=lambda k: manifest_version(k.rsplit("/", 1)[1]))
    import lance

    ds = lance.dataset(f"{db}/{CLIPS}.lance", storage_options=s3.storage_options)
    return prefix + ds.get_fragments()[-1].metadata.files[0].path


def assert_repaired(db: str, fixed) -> None:
    assert fixed.ok and fixed.requeued == ["b"], fixed.lines()
    assert starts(db, "a") == [0.0, 2.0, 4.0, 6.0, 8.0]  # committed before the damaged version: kept
    assert starts(db, "b") == [0.0, 2.0, 4.0]
    state = Store(db).stream_state("b")
    assert state.status is Status.QUEUED and from_state(state, GRID).next_window == 6
    assert Store(db).stream_state("a").status is Status.DONE
    assert check(db).ok, check(db).lines()
    Store(db).upsert(CLIPS, clips("b", [6.0, 8.0], unit(2, seed=21)))  # the table takes writes again
    assert starts(db, "b") == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_a_sound_s3_database_checks_ok(db):
    report = check(db)
    assert report.ok, report.lines()
    assert repair(db).lines() == ["nothing to repair"]


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_damaged_data_file_on_s3_is_found_and_repaired(s3, db, damage):
    client, key = s3.server.client(), latest(s3, db, "data")
    if damage == "delete":
        client.delete_object(Bucket=s3.name, Key=key)
    else:
        body = client.get_object(Bucket=s3.name, Key=key)["Body"].read()
        client.put_object(Bucket=s3.name, Key=key, Body=body[:10])
    report = check(db)
    verdict = {t.table: t for t in report.tables}[CLIPS]
    assert not report.ok and not verdict.ok and verdict.bad_path.endswith(key.rsplit("/", 1)[1])
    assert ("missing" if damage == "delete" else "10 bytes") in verdict.line()
    fixed = repair(db)
    assert any("restored version" in a for a in fixed.actions), fixed.lines()
    assert_repaired(db, fixed)


@pytest.mark.parametrize("damage", ["garble", "delete"])
def test_a_damaged_latest_manifest_on_s3_is_found_and_repaired(s3, db, damage):
    client, key = s3.server.client(), latest(s3, db, "_versions")
    if damage == "garble":
        client.put_object(Bucket=s3.name, Key=key, Body=b"\x00not a manifest" * 8)
    else:
        client.delete_object(Bucket=s3.name, Key=key)
    report = check(db)
    verdict = {t.table: t for t in report.tables}[CLIPS]
    assert not report.ok and not verdict.ok, report.lines()
    if damage == "garble":
        assert "cannot open" in verdict.line() and verdict.bad_path.endswith(key.rsplit("/", 1)[1])
    else:
        assert "latest manifest lost" in verdict.line() and [(v.stream_id, v.held_window) for v in report.ledger] == [("b", 6)]
    fixed = repair(db)
    assert_repaired(db, fixed)
    if damage == "garble":  # moved aside, not deleted
        assert any(MOVED in k for k in s3.keys(key_of(s3, db, "")))


def test_cli_check_and_repair_on_s3_exit_codes(s3, db):
    s3.server.client().delete_object(Bucket=s3.name, Key=latest(s3, db, "data"))
    runner = CliRunner()
    got = runner.invoke(main, ["check", "--db", db])
    assert got.exit_code == 4, got.output
    assert any(line.startswith(CLIPS) and "DAMAGED" in line for line in got.output.splitlines())
    got = runner.invoke(main, ["repair", "--db", db])
    assert got.exit_code == 0 and "restored version" in got.output and "re-queued 1 stream" in got.output, got.output
    got = runner.invoke(main, ["check", "--db", db])
    assert got.exit_code == 0 and got.output.strip().splitlines()[-1] == "ok", got.output
    got = runner.invoke(main, ["check", "--db", s3.uri("nothing/here")])
    assert got.exit_code == 2, got.output
