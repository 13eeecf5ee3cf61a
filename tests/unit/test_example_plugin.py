"""The third-party plugin example in docs/example-plugin works from its own folder.

It is pip-installed for real (offline: --no-index --no-build-isolation, into a target folder put on
sys.path), found through its `streamvl` entry point alone, and indexes and searches.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamvl.config import IndexConfig
from streamvl.errors import OptionError

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-plugin"
SPEC = "streamvl-tiny@random:0"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example installed with pip into its own folder (the source copied first: building writes into it)."""
    root = tmp_path_factory.mktemp("example")
    shutil.copytree(EXAMPLE, root / "src")
    target = root / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
                          "--disable-pip-version-check", "--quiet", "--target", str(target), str(root / "src")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    yield target
    sys.modules.pop("streamvl_recency", None)


@pytest.fixture
def plugins(installed, monkeypatch):
    """Every installed plugin, with the example's folder on sys.path (as a site-packages would be)."""
    from streamvl.plugins.manager import Plugins

    monkeypatch.syspath_prepend(str(installed))
    return Plugins()


def test_the_folder_holds_a_pyproject_with_only_the_entry_point_and_one_module():
    import tomllib

    assert sorted(p.name for p in EXAMPLE.iterdir() if p.name != "__pycache__") == ["pyproject.toml", "streamvl_recency.py"]
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"] == {"streamvl": {"recency": "streamvl_recency"}}


def test_installed_it_is_found_through_its_entry_point(installed, plugins):
    dist = next(installed.glob("streamvl_recency-*.dist-info"))
    assert "[streamvl]\nrecency = streamvl_recency" in (dist / "entry_points.txt").read_text()
    spec = plugins.adapter("recency")
    assert spec.description.startswith("recency-weighted") and not spec.capabilities and not spec.needs_frames
    assert {p["module"] for p in plugins.describe()["plugins"]} >= {"streamvl_recency", "streamvl.plugins.meanpool"}
    assert [o["name"] for o in plugins.describe()["adapter_details"]["recency"]["options"]] == ["decay", "template"]


def test_its_options_are_validated_from_its_declaration(plugins):
    from streamvl.models.loading import load_model

    spec, model = plugins.adapter("recency"), load_model(SPEC)
    assert spec.build(model, {"decay": 1}).options == {"decay": 1.0, "template": "{}"}
    with pytest.raises(OptionError, match="unknown recency option"):
        spec.build(model, {"decey": 0.5})
    with pytest.raises(OptionError, match="'decay' must be a number"):
        spec.build(model, {"decay": "fast"})


def test_it_indexes_and_searches_through_the_plugin_manager(plugins, shapes_mp4, tmp_path):
    from streamvl.pipeline.encode import EncodeStage
    from streamvl.pipeline.rescore import window_features
    from streamvl.search import query
    from streamvl.sources import open_source
    from streamvl.storage.store import CLIPS, FRAMES, Store
    from streamvl.types import StreamInfo

    config = IndexConfig(adapters=["meanpool", "recency"], model=SPEC, clips={"window": 4, "stride": 2}, sampling={"fps": 4.0},
                         adapter_options={"recency": {"decay": 0.5}})
    stage = EncodeStage(config, plugins)
    db = str(tmp_path / "db")
    store = Store(db)
    frames_tables, clips_tables = [], []
    sampling = config.sampling.model_copy(update={"size": stage.model.image_size})
    with open_source(StreamInfo("clip-1", str(shapes_mp4)), sampling) as source:
        for batch in source:
            frames, clips, _ = stage.process([batch])
            store.upsert(FRAMES, frames)
            store.upsert(CLIPS, clips)
            frames_tables.append(frames)
            clips_tables.append(clips)
    store.record_stream("clip-1", str(shapes_mp4), "done", model=stage.model.name)
    frames, clips = pa.concat_tables(frames_tables), pa.concat_tables(clips_tables)
    rows = [r for r in clips.to_pylist() if r["adapter"] == "recency"]
    assert len(rows) >= 3 and len(rows) == sum(r["adapter"] == "meanpool" for r in clips.to_pylist())
    # each clip row is what the example's docstring says: the recency-weighted mean of its frames
    pts, feats = np.array(frames["pts"].to_pylist()), np.array(frames["embedding"].to_pylist(), np.float32)
    for row, window in zip(rows, window_features(pts, feats, [(r["start"], r["end"]) for r in rows])):
        w = 0.5 ** np.arange(len(window) - 1, -1, -1)
        want = (w[:, None] * window).sum(0)
        np.testing.assert_allclose(row["embedding"], want / np.linalg.norm(want), atol=1e-5)
    meanpool = {(r["start"], r["end"]): np.array(r["embedding"]) for r in clips.to_pylist() if r["adapter"] == "meanpool"}
    assert any(not np.allclose(np.array(r["embedding"]), meanpool[(r["start"], r["end"])], atol=1e-4) for r in rows)
    hits = query.search("a red circle moves left", db, k=3, adapter="recency", plugins=plugins,
                        adapter_options={"decay": 0.5})
    assert hits and all(h.adapter == "recency" and h.stream_id == "clip-1" for h in hits)
    text = plugins.adapter("recency").build(stage.model, {"decay": 0.5}).encode_text(["a red circle moves left"])[0]
    best = max(float(np.dot(r["embedding"], text.numpy())) for r in rows)
    assert hits[0].score == pytest.approx(best, abs=1e-4)
