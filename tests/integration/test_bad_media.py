"""Fuzz: 50+ broken media files beside good ones in one `streamvl index` run (a real process, its own
private Ray). Every good file is indexed; every bad one is a recorded one-line stream error; a
missing path fails alone, an empty folder is a warning; exit code 3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lancedb
import numpy as np
import pytest

from streamvl.storage.store import CLIPS, FRAMES, Store
from tests.videos import make_audio_only, make_corrupt, make_text_as_mp4, make_truncated, make_video, make_zero_byte

pytestmark = pytest.mark.integration
MODEL = "streamvl-tiny@random:0"
BIN = Path(sys.executable).parent
MEDIA = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".ts", ".mpg", ".flv", ".wmv", ".gif", ".png", ".jpg")
# Start bytes of real formats, followed by garbage: the demuxer or decoder recognises them, then fails.
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".gif": b"GIF89a", ".jpg": b"\xff\xd8\xff\xe0", ".mkv": b"\x1a\x45\xdf\xa3",
         ".mp4": b"\x00\x00\x00\x18ftypisom", ".webm": b"\x1a\x45\xdf\xa3", ".avi": b"RIFF\x00\x10\x00\x00AVI "}


def write_image(path: Path, frames: int = 1) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(frames)]
    images[0].save(path, save_all=frames > 1, append_images=images[1:], duration=250, loop=0)
    return path


def make_bad_media(folder: Path) -> list[Path]:
    """Broken files of many kinds, all with media extensions (so the folder walk takes them)."""
    rng = np.random.default_rng(2024)
    bad: list[Path] = []
    for ext in MEDIA:
        bad.append(make_zero_byte(folder / f"zero{ext}"))
        bad.append(make_text_as_mp4(folder / f"text{ext}"))
        (folder / f"random{ext}").write_bytes(rng.integers(0, 256, int(rng.integers(1, 65536)), dtype=np.uint8).tobytes())
        bad.append(folder / f"random{ext}")
    for ext, magic in MAGIC.items():
        (folder / f"magic-garbage{ext}").write_bytes(magic + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        bad.append(folder / f"magic-garbage{ext}")
    for keep in (0.001, 0.02, 0.1, 0.3, 0.6):  # cut in the index (cannot be opened) or the data (frames, then an early end)
        bad.append(make_truncated(folder / f"truncated-{keep}.mp4", seconds=6.0, keep=keep).path)
    whole = make_video(folder / "moov-last.mp4", seconds=2.0, size=(96, 64)).path  # index at the end, cut off
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    bad.append(whole)
    bad.append(make_corrupt(folder / "corrupt.mp4", seconds=4.0).path)
    for ext in (".mp4", ".mkv", ".avi"):  # a valid container without video, under a video extension
        bad.append(make_audio_only(folder / f"audio{ext}"))
    png = write_image(folder / "cut.png")
    png.write_bytes(png.read_bytes()[:60])
    gif = write_image(folder / "cut.gif", frames=4)
    gif.write_bytes(gif.read_bytes()[:40])
    bad += [png, gif]
    for i in range(3):
        (folder / f"dangling-{i}.mp4").symlink_to(folder / f"gone-{i}.mp4")
        bad.append(folder / f"gone-{i}.mp4")  # a link is indexed as its target
    return bad


def test_fifty_bad_files_beside_good_ones_in_one_run(tmp_path):
    media = tmp_path / "media"
    (media / "good").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    good = [make_video(media / "good" / "a.mp4", seconds=3.0, size=(96, 64)).path,
            make_video(media / "good" / "b.mkv", codec="mjpeg", seconds=2.0, size=(96, 64)).path,
            write_image(media / "good" / "anim.gif", frames=8), write_image(media / "good" / "still.png")]
    bad = make_bad_media(media)
    assert len(bad) >= 50
    missing = tmp_path / "missing.mp4"
    db = tmp_path / "db"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[sampling]\nfps = 2.0\n[clips]\nwindow = 4\nstride = 2\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run([str(BIN / "streamvl"), "index", str(media), str(missing), str(tmp_path / "empty"), "--db", str(db),
                          "--model", MODEL, "--config", str(cfg), "--json"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 3, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    report = {s["uri"]: s for s in json.loads(run.stdout)["streams"]}
    expected_bad = {str(p) for p in bad} | {str(missing)}
    assert set(report) == {str(p) for p in good} | expected_bad
    for path in good:
        assert report[str(path)]["status"] == "done" and report[str(path)]["frames"] > 0, report[str(path)]
    wrong = {uri: s["status"] for uri, s in report.items() if uri in expected_bad and s["status"] != "error"}
    assert not wrong, f"bad files not failed: {wrong}"
    assert all(report[u]["error"] and "\n" not in report[u]["error"] for u in expected_bad)
    assert json.loads(run.stdout)["inputs"]["warnings"] == [f"directory contains no video or image files: {tmp_path / 'empty'}"]

    rows = {s.uri: s for s in Store(str(db)).stream_states()}  # the record agrees with the report
    assert set(rows) == set(report)
    assert {u: (r.status.value, r.error) for u, r in rows.items()} == {u: (s["status"], s["error"]) for u, s in report.items()}
    conn = lancedb.connect(str(db))
    frames = conn.open_table(FRAMES).to_arrow().to_pylist()
    clips = conn.open_table(CLIPS).to_arrow().to_pylist()
    for path in good:  # every good file is in the tables, with the frames the report counts
        sid = report[str(path)]["stream_id"]
        assert sum(r["stream_id"] == sid for r in frames) == report[str(path)]["frames"]
        assert any(r["stream_id"] == sid for r in clips)
    text = subprocess.run([str(BIN / "streamvl"), "streams", "--db", str(db)], env=env, capture_output=True, text=True)
    assert text.returncode == 0 and text.stdout.count("\n") == len(report) + len(expected_bad)  # a line, plus one per error


def test_an_error_inside_an_actor_is_one_line(tmp_path):
    """An unknown adapter is found only in the encode actor (the driver does not import plugins):
    Ray's actor-death traceback is reduced to the PluginError line, exit 5."""
    clip = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48)).path
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run([str(BIN / "streamvl"), "index", str(clip), "--db", str(tmp_path / "db"), "--model", MODEL,
                          "--adapter", "no-such-adapter"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 5, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("PluginError: ")]
    assert errors == [errors[0]] and "no adapter 'no-such-adapter'" in errors[0]
    assert "Traceback" not in run.stderr and "ActorDiedError" not in run.stderr


def test_a_model_that_fails_to_load_inside_the_encoder_is_one_line(tmp_path):
    """Weights that cannot be fetched are found only in the encode actor: the user sees the ModelLoadError
    line, exit 5, and no traceback of the actor (Ray prints one for an actor that dies in __init__)."""
    clip = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48)).path
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_USAGE_STATS_ENABLED": "0",
                                                                      "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([str(BIN / "streamvl"), "index", str(clip), "--db", str(tmp_path / "db"),
                          "--model", "ViT-B-32@openai"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 5, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("ModelLoadError: ")]
    assert len(errors) == 1 and "ViT-B-32@openai" in errors[0], run.stderr[-3000:]
    assert 'File "' not in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
