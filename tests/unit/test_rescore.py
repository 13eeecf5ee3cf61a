"""Re-scoring an index from its frames table (no decoding), and the train / evaluate / rescore jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from streamvl.plugins.contract import AdapterSpec
from streamvl.cli import main
from streamvl.config import IndexConfig
from streamvl.pipeline.encode import EncodeStage
from streamvl.errors import PluginError
from streamvl.plugins.hookspecs import hookimpl
from streamvl.models.loading import load_model
from streamvl.plugins.manager import Plugins, build_plugin_manager
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import FrameBatch, Status, StreamState

SPEC = "streamvl-tiny@random:0"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def frames_batch(stream_id, n, seed):
    frames = np.random.default_rng(seed).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return FrameBatch(stream_id, f"file:///{stream_id}", np.arange(n, dtype=np.float64) * 0.5, frames, final=True)


@pytest.fixture()
def meanpool_db(model, tmp_path):
    """An index built with meanpool only (window 4, stride 2, 2 fps): frames + clips + streams."""
    config = IndexConfig(model=SPEC, clips={"window": 4, "stride": 2}, sampling={"fps": 2.0})
    stage = EncodeStage(config, Plugins(), model)
    db = str(tmp_path / "db")
    store = Store(db)
    for i, (sid, n) in enumerate([("a", 9), ("b", 5)]):
        frames, clips, _ = stage.process([frames_batch(sid, n, i)])
        store.upsert(FRAMES, frames)
        store.upsert(CLIPS, clips)
        store.record_state(StreamState(sid, f"file:///{sid}", Status.DONE, model=model.name))
    return db


def checkpoint(model, tmp_path, seed) -> str:
    torch.manual_seed(seed)
    adapter = Plugins().adapter("prompt").build(model, {})
    return str(adapter.save(tmp_path / f"prompt{seed}.safetensors"))


def test_rescore_adds_an_adapter_from_the_frames_table_then_replaces_it(model, meanpool_db, tmp_path, monkeypatch):
    import streamvl.sources

    monkeypatch.setattr(streamvl.sources, "open_source", lambda *a, **k: pytest.fail("rescore must not decode"))
    from streamvl.pipeline.rescore import rescore

    store = Store(meanpool_db)
    windows = [(r["stream_id"], r["start"], r["end"]) for r in store.clip_windows("meanpool")]
    first = checkpoint(model, tmp_path, 1)
    report = rescore(meanpool_db, "prompt", {"checkpoint": first}, log=lambda m: None)
    rows = {(r["stream_id"], r["start"]): r for r in store.read(CLIPS).to_pylist() if r["adapter"] == "prompt"}
    assert sorted((s, a, e) for (s, a), r in rows.items() for e in [r["end"]]) == sorted(windows)
    assert report.clips == len(windows) and report.deleted == 0
    # each row is the adapter applied to exactly the window's frames from the frames table
    adapter = Plugins().adapter("prompt").build(model, {"checkpoint": first})
    pts, feats = store.frames_of("a")
    sid, start, end = next(w for w in windows if w[0] == "a" and w[1] == 1.0)
    take = feats[(pts >= start) & (pts < end)]
    assert len(take) == 4
    want = adapter.encode_video(torch.from_numpy(take[None])).numpy()[0]
    np.testing.assert_allclose(rows[("a", 1.0)]["embedding"], want, atol=1e-5)
    # a retrained adapter replaces its rows; meanpool's stay
    second = checkpoint(model, tmp_path, 2)
    again = rescore(meanpool_db, "prompt", {"checkpoint": second}, log=lambda m: None)
    after = [r for r in store.read(CLIPS).to_pylist() if r["adapter"] == "prompt"]
    assert again.deleted == len(windows) and len(after) == len(windows)
    assert not np.allclose(next(r for r in after if (r["stream_id"], r["start"]) == ("a", 1.0))["embedding"], want)
    assert len(store.clip_windows("meanpool")) == len(windows)


def test_rescore_refuses_adapters_that_need_frames(meanpool_db):
    class NeedsFrames:
        @hookimpl
        def streamvl_adapters(self):
            return [AdapterSpec("pixels", lambda m, o: None, "re-runs the vision tower", needs_frames=True)]

    from streamvl.pipeline.rescore import rescore

    with pytest.raises(PluginError, match="re-index"):
        rescore(meanpool_db, "pixels", plugins=Plugins(build_plugin_manager(extra=[NeedsFrames()])), log=lambda m: None)


def test_rescore_command(model, meanpool_db, tmp_path):
    out = CliRunner().invoke(main, ["rescore", "--db", meanpool_db, "--adapter", "prompt", "--checkpoint", checkpoint(model, tmp_path, 3)])
    assert out.exit_code == 0, out.output
    assert "no decoding" in out.stdout and len(Store(meanpool_db).clip_windows("prompt")) == len(Store(meanpool_db).clip_windows("meanpool"))


def test_train_then_evaluate_commands(tmp_path):
    ckpt = tmp_path / "ckpt" / "prompt.safetensors"
    common = ["--model", SPEC, "--train-per-class", "2", "--test-per-class", "1", "--cache", str(tmp_path / "cache"), "--threads", "1"]
    out = CliRunner().invoke(main, ["train", "--adapter", "prompt", "--data", "shapes:closed_set", "--out", str(ckpt),
                                    "--steps", "4", "--batch-size", "8", *common])
    assert out.exit_code == 0, out.output
    assert "trainable parameters" in out.stdout and "backbone weights unchanged: True" in out.stdout
    config = json.loads(ckpt.with_suffix(".json").read_text())
    assert config["adapter"] == "prompt" and config["train"]["backbone_unchanged"] and len(config["classes"]) == 13
    out = CliRunner().invoke(main, ["evaluate", "--adapter", "prompt", "--data", "shapes:closed_set", "--checkpoint", str(ckpt),
                                    "--out", str(tmp_path / "m.json"), *common])
    assert out.exit_code == 0, out.output
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert {"top1", "top5", "order_pair_top1"} <= set(metrics) and metrics["clips"] == 13
    per_class = metrics["per_class_top1"]  # one test clip per class: the classes' mean is top-1
    assert len(per_class) == 13 and sum(per_class.values()) / 13 == pytest.approx(metrics["top1"])
    assert sum(n for _, _, n in metrics["confusions"]) <= round(13 * (1 - metrics["top1"]))
    out = CliRunner().invoke(main, ["evaluate", "--adapter", "meanpool", "--data", "shapes:retrieval", *common])
    assert out.exit_code == 0, out.output
    assert {"R@1", "R@5", "R@10", "MedR"} <= set(json.loads(out.stdout)["metrics"])


@pytest.mark.parametrize("job", ["train", "evaluate", "rescore"])
def test_job_entry_points_forward_to_the_cli(job):
    out = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and f"jobs/{job}.py" in out.stdout
