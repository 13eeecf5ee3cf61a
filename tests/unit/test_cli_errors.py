"""Error paths of the CLI: one line per error, the exit code of its kind, checks before any work
(no database created, no Ray started), search input rules, inputs that fail alone. No Ray here:
every case is decided before Ray would start."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from streamvl import api
from streamvl.cli import main
from streamvl.cli.errors import exit_code
from streamvl.config import IndexConfig
from streamvl.errors import (ClusterError, ConfigError, DecodeError, ModelLoadError, PluginError, SourceError,
                             StoreDamagedError, StoreError, StreamvlError)
from streamvl.inputs import fit_context
from streamvl.pipeline.encode import EncodeStage
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import FrameBatch
from tests.videos import make_text_as_mp4, make_video, make_zero_byte

MODEL = "streamvl-tiny@random:0"
ODD_URI = "/videos/new\nline.mp4"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Two streams indexed by the real encode stage; one file name holds a newline."""
    path = str(tmp_path_factory.mktemp("cli-errors") / "db")
    stage = EncodeStage(IndexConfig(db=path, model=MODEL))
    store = Store(path)
    rng = np.random.default_rng(1)
    for sid, uri in (("cam-a", "/videos/cam-a.mp4"), ("odd", ODD_URI)):
        frames = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
        f, c, _ = stage.process([FrameBatch(sid, uri, np.arange(12, dtype=np.float64), frames, final=True)])
        store.upsert(FRAMES, f)
        store.upsert(CLIPS, c)
        store.record_stream(sid, uri, "error" if sid == "odd" else "done", frames_indexed=12, last_committed_pts=11.0,
                            model=stage.model.name, error="DecodeError: broken\nright here" if sid == "odd" else None)
    return path


@pytest.fixture(scope="module")
def good_mp4(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("good") / "good.mp4", seconds=1.0, size=(64, 48)).path


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def one_error_line(result, code: int, start: str) -> str:
    """The result failed with `code`; stderr holds one error line starting with `start`, followed by
    nothing but its hint, and no traceback. Returns the error line."""
    lines = result.stderr.splitlines()
    assert result.exit_code == code, result.stderr
    at = [i for i, line in enumerate(lines) if line.startswith(start)]
    assert len(at) == 1, result.stderr
    assert all(line.startswith("hint: ") for line in lines[at[0] + 1:]), result.stderr
    assert "Traceback" not in result.stderr
    return lines[at[0]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_exit_codes_by_kind():
    assert [exit_code(e) for e in (ConfigError("x"), ClusterError("x"), SourceError("x"), DecodeError("x"), StoreError("x"),
                                   StoreDamagedError("x"), ModelLoadError("x"), PluginError("x"), StreamvlError("x"),
                                   RuntimeError("x"))] == [2, 2, 3, 3, 4, 4, 5, 5, 1, 1]


# -- search input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", ["0", "-1"])
def test_k_below_one_is_a_usage_error(db, k):
    result = invoke("search", "anything", "--db", db, "--k", k)
    assert result.exit_code == 2 and "--k" in result.stderr and result.stdout == ""
    with pytest.raises(ConfigError, match="k"):
        api.search("anything", db, k=int(k))


@pytest.mark.parametrize("text", ["", "   ", " \t\n ", "\x00\x1b"])
def test_blank_query_is_rejected(db, text):
    one_error_line(invoke("search", text, "--db", db), 2, "ConfigError: the query is empty")


def test_control_characters_are_stripped(db):
    dirty = invoke("search", "red\x00 car\x1b[0m\tnow", "--db", db, "--json")
    clean = invoke("search", "red car [0m now", "--db", db, "--json")
    assert dirty.exit_code == clean.exit_code == 0
    assert json.loads(dirty.stdout) == json.loads(clean.stdout) and json.loads(dirty.stdout)


def test_long_query_is_cut_to_the_context_with_one_warning(db):
    from streamvl.models.loading import load_model

    words = [f"word{i}" for i in range(200)]
    tokenizer = load_model(MODEL).tokenizer
    kept, warning = fit_context(" ".join(words), tokenizer)
    n = len(kept.split(" "))
    assert warning and 0 < n < len(words) and kept == " ".join(words[:n])
    assert len(tokenizer.encode(kept)) <= tokenizer.context_length - 2 < len(tokenizer.encode(" ".join(words[: n + 1])))
    long = invoke("search", " ".join(words), "--db", db, "--json")
    assert long.exit_code == 0
    warned = [line for line in long.stderr.splitlines() if "query truncated" in line]
    assert len(warned) == 1 and warned[0].startswith("WARNING: ") and f"context of {tokenizer.context_length} tokens" in warned[0]
    assert json.loads(long.stdout) == json.loads(invoke("search", kept, "--db", db, "--json").stdout)
    assert "query truncated" not in invoke("search", kept, "--db", db).stderr


def test_missing_db_is_an_error_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo-db"
    for args in (["search", "x"], ["streams"], ["streams", "remove", "cam-a"], ["rescore", "--adapter", "meanpool"],
                 ["localise", "--adapter", "meanpool"]):
        line = one_error_line(invoke(*args, "--db", missing), 2, "ConfigError: no database at")
        assert str(missing) in line
        assert not missing.exists(), args
    with pytest.raises(ConfigError, match="no database"):
        api.streams(str(missing))


def test_empty_db_hint_names_an_option_the_cli_has(db, tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_error_line(invoke("search", "x", "--db", tmp_path / "empty"), 2, "ConfigError")
    assert "--model SPEC" in line and "model=" not in line.replace("Python: model=SPEC", "")
    for command in ("rescore", "localise"):  # no --model there: the way out is to index first
        line = one_error_line(invoke(command, "--adapter", "meanpool", "--db", tmp_path / "empty"), 2, "ConfigError")
        assert f"streamvl index SOURCES --db {tmp_path / 'empty'}" in line and "model=" not in line
    assert "--model" in invoke("search", "--help").stdout
    with_model = invoke("search", "anything", "--db", db, "--model", MODEL, "--json")
    assert with_model.exit_code == 0 and json.loads(with_model.stdout) == json.loads(invoke("search", "anything", "--db", db, "--json").stdout)


def test_newline_in_a_file_name_stays_on_one_line(db):
    hits = json.loads(invoke("search", "anything", "--db", db, "--json", "--k", "5").stdout)
    out = invoke("search", "anything", "--db", db, "--k", "5").stdout.splitlines()
    assert len(out) == len(hits) and any(h["uri"] == ODD_URI for h in hits)
    assert any(line.endswith("/videos/new\\nline.mp4") for line in out)
    listed = invoke("streams", "--db", db).stdout.splitlines()
    assert len(listed) == 3  # two streams, one error line
    assert listed[1].endswith("/videos/new\\nline.mp4") and listed[2].strip() == "DecodeError: broken\\nright here"


# -- model and plugin load failures ---------------------------------------------------------------


def test_model_load_failures_are_one_line_exit_5(db, good_mp4, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    for spec, why in ((f"streamvl-tiny@{tmp_path / 'missing.safetensors'}", "not found"),
                      (f"streamvl-tiny@{garbage}", "not a readable safetensors file")):
        line = one_error_line(invoke("search", "x", "--db", db, "--model", spec), 5, "ModelLoadError")
        assert why in line
        out = tmp_path / "new-db"
        indexed = invoke("index", good_mp4, "--db", out, "--model", spec)
        assert why in one_error_line(indexed, 5, "ModelLoadError") and indexed.stderr.splitlines()[1].startswith("hint: ")
        assert not out.exists()  # checked before anything is written
    one_error_line(invoke("search", "x", "--db", db, "--model", "no-at-sign"), 5, "ModelLoadError")


def _checkpoint(tmp_path, name: str, weights: bytes | None, config: object | None):
    path = tmp_path / f"{name}.safetensors"
    if weights is not None:
        path.write_bytes(weights)
    if config is not None:
        path.with_suffix(".json").write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def test_malformed_adapter_checkpoints_are_one_line_exit_5(db, good_mp4, tmp_path):
    from safetensors.numpy import save

    tensors = save({"w": np.zeros(3, np.float32)})
    wrong_backbone = {"format": "streamvl-adapter/1", "adapter": "prompt", "options": {},
                      "backbone": {"model": "other@x", "weights_sha256": "0" * 64}}
    cases = {
        "garbage": (_checkpoint(tmp_path, "garbage", b"not a safetensors file", wrong_backbone), "safetensors"),
        "no-json": (_checkpoint(tmp_path, "no-json", tensors, None), "cannot read its config"),
        "bad-json": (_checkpoint(tmp_path, "bad-json", tensors, "{oops"), "cannot read its config"),
        "not-ours": (_checkpoint(tmp_path, "not-ours", tensors, {"format": "something-else"}), "not a streamvl adapter config"),
        "other-backbone": (_checkpoint(tmp_path, "other-backbone", tensors, wrong_backbone), "building adapter 'prompt' failed"),
    }
    for name, (path, why) in cases.items():
        line = one_error_line(invoke("search", "x", "--db", db, "--adapter", "prompt", "--checkpoint", path), 5, "PluginError")
        assert why in line and "plugin=prompt" in line, name
        if name != "other-backbone":  # that one only shows once the model is loaded (in the encode actor for index)
            indexed = invoke("index", good_mp4, "--db", tmp_path / "db", "--adapter", "prompt",
                             "--adapter-option", f"prompt.checkpoint={path}")
            assert why in one_error_line(indexed, 5, "PluginError"), name
    assert not (tmp_path / "db").exists()


# -- how errors are shown -------------------------------------------------------------------------


def test_debug_shows_the_traceback_with_the_same_exit_code(tmp_path):
    for args, env in ((["--debug"], None), ([], {"STREAMVL_DEBUG": "1"})):
        result = invoke(*args, "search", "x", "--db", tmp_path / "missing", env=env)
        assert result.exit_code == 2 and "Traceback (most recent call last)" in result.stderr
        assert result.stderr.splitlines()[-1].startswith("ConfigError: no database at")
    assert "Traceback" not in invoke("search", "x", "--db", tmp_path / "missing", env={"STREAMVL_DEBUG": "0"}).stderr


def test_unexpected_error_is_one_line_exit_1_with_a_hint(db, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom\n  at some deep place")

    monkeypatch.setattr(api, "search", boom)
    result = invoke("search", "x", "--db", db)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "RuntimeError: boom at some deep place",
        "hint: this is a bug; run again as `streamvl --debug ...` (or STREAMVL_DEBUG=1) and report the traceback"]


def test_damaged_store_is_exit_4_naming_table_file_and_repair(db, monkeypatch):
    def damaged(*args, **kwargs):
        raise StoreDamagedError("table 'clips' cannot be read: data file missing", table="clips",
                                path=f"{db}/clips.lance/data/x.lance", version=7, db=db)

    monkeypatch.setattr(api, "search", damaged)
    result = invoke("search", "x", "--db", db)
    assert result.exit_code == 4
    error, hint = result.stderr.splitlines()
    assert error.startswith("StoreDamagedError: table 'clips'") and "version=7" in error and "x.lance" in error
    assert hint == f"hint: run `streamvl check --db {db}` to see what is damaged, then `streamvl repair --db {db}`"


# -- index: checks before Ray, inputs that fail alone ---------------------------------------------


def test_bad_db_is_reported_before_anything_runs(good_mp4, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_error_line(invoke("index", good_mp4, "--db", afile), 2, "ConfigError: --db")
    line = one_error_line(invoke("index", good_mp4, "--db", afile / "sub" / "db"), 2, "ConfigError: --db")
    assert "is a file" in line
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_inputs_fail_alone_and_are_recorded(tmp_path):
    """No input can be indexed here, so no Ray starts; each bad one is a stream error, the empty
    folder a warning, exit 3; `streamvl streams` shows them."""
    bad = tmp_path / "in"
    (bad / "empty").mkdir(parents=True)
    zero = make_zero_byte(bad / "zero.mp4")
    text = make_text_as_mp4(bad / "text.mp4")
    missing = bad / "missing\nname.mp4"
    db = tmp_path / "db"
    result = invoke("index", missing, zero, text, bad / "empty", "--db", db, "--model", MODEL, "--json")
    assert result.exit_code == 3, result.stderr
    report = json.loads(result.stdout)
    by_uri = {s["uri"]: s for s in report["streams"]}
    assert set(by_uri) == {str(missing), str(zero), str(text)}
    assert [by_uri[str(p)]["status"] for p in (missing, zero, text)] == ["error"] * 3
    assert "no such file or directory" in by_uri[str(missing)]["error"] and "\n" not in by_uri[str(missing)]["error"]
    assert "empty file" in by_uri[str(zero)]["error"] and "not a readable media file" in by_uri[str(text)]["error"]
    assert report["inputs"]["warnings"] == [f"directory contains no video or image files: {bad / 'empty'}"]
    assert any(line.startswith("WARNING: directory contains no video or image files") for line in result.stderr.splitlines())
    rows = {s.uri: s for s in Store(str(db)).stream_states()}
    assert {u: (r.status.value, r.error) for u, r in rows.items()} == {u: ("error", s["error"]) for u, s in by_uri.items()}
    listed = invoke("streams", "--db", db).stdout
    assert listed.count("\n") == 6 and "missing\\nname.mp4" in listed
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_missing_file_keeps_its_checkpoint(tmp_path):
    """A stream indexed before whose file is gone now: its row says error, but keeps its counts and
    checkpoint (the rows are still in the tables), so it resumes when the file is back."""
    db, gone = tmp_path / "db", tmp_path / "gone.mp4"
    from streamvl.sources import stream_id_for

    sid = stream_id_for(str(gone))
    Store(str(db)).record_stream(sid, str(gone), "done", frames_indexed=12, last_committed_pts=11.0, model=MODEL,
                                 next_window=3, resume_after=10.0, grid="g")
    assert invoke("index", gone, "--db", db, "--model", MODEL).exit_code == 3
    row = Store(str(db)).stream(sid)
    assert (row["status"], row["frames_indexed"], row["next_window"], row["resume_after"], row["grid"]) == (
        "error", 12, 3, 10.0, "g")
    assert "no such file or directory" in row["error"]


def test_ray_address_problems_are_one_line_before_ray(good_mp4, tmp_path):
    db = tmp_path / "db"
    port = free_port()
    line = one_error_line(invoke("index", good_mp4, "--db", db, "--ray-address", f"127.0.0.1:{port}"), 2, "ClusterError")
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in line
    nothing = tmp_path / "raytmp"
    nothing.mkdir()
    line = one_error_line(invoke("index", good_mp4, "--db", db, "--ray-address", "auto", env={"RAY_TMPDIR": str(nothing)}),
                          2, "ClusterError")
    assert "no cluster started with `ray start`" in line
    line = one_error_line(invoke("index", good_mp4, "--db", db, env={"RAY_ADDRESS": "not-an-address"}), 2, "ClusterError")
    assert "'not-an-address' is not HOST:PORT" in line
    assert not sys.modules["ray"].is_initialized()
