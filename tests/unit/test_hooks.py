"""One test per hookspec, each marked with the hook it exercises (tests/unit/test_contract.py fails
when a hookspec has no such test, datasette-style)."""

import functools

import numpy as np
import pyarrow as pa
import pytest
import torch

from streamvl.config import IndexConfig
from streamvl.models.loading import load_model
from streamvl.pipeline.encode import EncodeStage
from streamvl.plugins import AdapterSpec, ColumnProvider, RerankerSpec, hookimpl
from streamvl.plugins.manager import Plugins, build_plugin_manager
from streamvl.types import FrameBatch, Hit, Status, StreamState


class Reverse:
    """A feature-based adapter that is not meanpool: the last frame's features."""

    name = "lastframe"

    def __init__(self, model, options):
        self.model = model

    def encode_video(self, features, frames=None):
        return torch.nn.functional.normalize(features[:, -1], dim=-1)

    def encode_text(self, texts):
        return self.model.encode_text(texts)


class TestPlugin:
    @hookimpl
    def streamvl_adapters(self):
        return [AdapterSpec("lastframe", Reverse, "last frame")]

    @hookimpl
    def streamvl_clip_columns(self):
        def compute(batch):
            return {"n_frames_tag": [f"{batch.adapter_name}:{e - s:.0f}s" for s, e in zip(batch.starts, batch.ends)]}

        return [ColumnProvider("durations", [pa.field("n_frames_tag", pa.string())], compute)]

    @hookimpl
    def streamvl_rerankers(self):
        def rerank(context, hits):
            return [Hit(h.stream_id, h.uri, h.start, h.end, -h.score, h.adapter) for h in reversed(hits)]

        return [RerankerSpec("invert", rerank, "reverses the order")]


@pytest.fixture(scope="module")
def plugins():
    return Plugins(build_plugin_manager(extra=[TestPlugin()]))


def batch(stream_id, start, n, final=False):
    frames = np.random.default_rng(start).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return FrameBatch(stream_id, f"file:///{stream_id}", np.arange(start, start + n, dtype=np.float64), frames, final=final)


@pytest.mark.contract("streamvl_adapters")
def test_hook_streamvl_adapters(plugins):
    config = IndexConfig(adapters=["meanpool", "lastframe"], model="streamvl-tiny@random:0")
    stage = EncodeStage(config, plugins)
    frames, clips, progress = stage.process([batch("a", 0, 8), batch("b", 0, 3, final=True)])
    assert frames.num_rows == 11
    by_adapter = clips.group_by("adapter").aggregate([("stream_id", "count")]).to_pydict()
    assert dict(zip(by_adapter["adapter"], by_adapter["stream_id_count"])) == {"meanpool": 2, "lastframe": 2}
    # the adapter's own logic produced the rows: lastframe == the window's last frame embedding
    last = clips.filter(pa.compute.equal(clips["adapter"], "lastframe")).to_pylist()
    emb_a = np.array(frames.filter(pa.compute.equal(frames["stream_id"], "a"))["embedding"].to_pylist())
    row_a = next(r for r in last if r["stream_id"] == "a")
    np.testing.assert_allclose(row_a["embedding"], emb_a[-1], atol=1e-5)
    assert [p.final for p in progress] == [False, True]


@pytest.mark.contract("streamvl_clip_columns")
def test_hook_streamvl_clip_columns(plugins):
    stage = EncodeStage(IndexConfig(model="streamvl-tiny@random:0"), plugins)
    _, clips, _ = stage.process([batch("c", 0, 5, final=True)])
    assert "n_frames_tag" in clips.schema.names
    assert clips["n_frames_tag"].to_pylist() == ["meanpool:5s"]


@pytest.mark.contract("streamvl_rerankers")
def test_hook_streamvl_rerankers(plugins, tmp_path, monkeypatch):
    from streamvl.search import query
    from streamvl.storage.store import CLIPS, Store

    model = load_model("streamvl-tiny@random:0")
    stage = EncodeStage(IndexConfig(model="streamvl-tiny@random:0", clips={"window": 2, "stride": 2}), plugins)
    _, clips, _ = stage.process([batch("r", 0, 6, final=True)])
    store = Store(str(tmp_path / "db"))
    store.upsert(CLIPS, clips)
    store.record_state(StreamState("r", "file:///r", Status.DONE, model=model.name))
    # a reranked search runs on the whole fp32 model; the plain one on the text tower at fp32 too, so
    # the scores compare exactly (by default its Linear layers are int8: models.textprecision)
    text_fp32 = functools.partial(query.textonly.load_text_model, precision="fp32")
    monkeypatch.setattr(query.textonly, "load_text_model", text_fp32)
    monkeypatch.setattr(query, "_ENCODERS", type(query._ENCODERS)())
    plain = query.search("anything", str(tmp_path / "db"), k=3, plugins=plugins)
    inverted = query.search("anything", str(tmp_path / "db"), k=3, plugins=plugins, rerank="invert")
    assert len(plain) >= 1
    assert [h.score for h in inverted] == [-h.score for h in reversed(plain)]
