"""prompt-exposure: prompt plus the frozen embedding of each clip's exposure (a recency blend of its frames)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from streamvl.adapters.blocks import exposure_stills
from streamvl.config import IndexConfig
from streamvl.training.datasets import ShapesOptions, load_task
from streamvl.pipeline.encode import EncodeStage
from streamvl.errors import PluginError
from streamvl.pipeline.features import FeatureStore
from streamvl.models.loading import load_model
from streamvl.training.train import TrainConfig, prepare, train
from streamvl.types import FrameBatch, Status, StreamState
from streamvl.lab.zeroshot import clip_exposure

from tests.clips import adapter_inputs, moving_square

SPEC = "streamvl-tiny@random:0"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def build(model, plugins, name="prompt-exposure", **options):
    return plugins.adapter(name).build(model, options)


def test_exposure_stills_are_the_preprocessed_blend_zero_shot_reads(model):
    raws = [moving_square(8, 0), moving_square(8, 1)[::-1]]
    _, frames = adapter_inputs(model, raws)
    want = model.preprocess(np.stack([clip_exposure(r) for r in raws]))
    got = exposure_stills(frames)
    assert got.shape == want.shape == (2, 3, 64, 64)
    # equal up to the uint8 rounding of the raw blend (half a grey level over the smallest std)
    torch.testing.assert_close(got, want, atol=0.5 / 255 / min(model.std) + 1e-5, rtol=0)


def test_registered_as_a_frames_adapter_that_refuses_features_alone(model, plugins):
    assert plugins.adapter("prompt-exposure").needs_frames is True
    assert plugins.adapter("prompt").needs_frames is False
    with pytest.raises(ValueError, match="needs frames"):
        build(model, plugins).encode_video(torch.randn(1, 8, model.embed_dim))


def test_at_the_start_it_is_prompt_plus_the_frozen_exposure_embedding(model, plugins):
    torch.manual_seed(0)
    a = build(model, plugins)
    raws = [moving_square(8, 0), moving_square(8, 3)]
    feats, frames = adapter_inputs(model, raws)
    plain = build(model, plugins, name="prompt")
    plain.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("exposure_")})
    still = model.encode_images(np.stack([clip_exposure(r) for r in raws]))
    want = F.normalize(plain.encode_video(feats) + still, dim=-1)
    torch.testing.assert_close(a.encode_video(feats, frames), want, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.encode_text(["moves left"]), plain.encode_text(["moves left"]))


def test_the_exposure_alone_tells_a_clip_from_its_reverse(model, plugins):
    """With no prompts, no temporal layers and zero positions the feature path is the frame mean
    (order-blind); the exposure weighs the end of the clip most, so order still shows."""
    a = build(model, plugins, prefix=0, postfix=0, depth=0)
    with torch.no_grad():
        a.temporal.positions.zero_()
    feats, frames = adapter_inputs(model, [moving_square(8, 0)])
    forward, backward = a.encode_video(feats, frames), a.encode_video(feats.flip(1), frames.flip(1))
    torch.testing.assert_close(a.temporal.pool(feats, True), a.temporal.pool(feats.flip(1), True))
    assert float((forward - backward).norm()) > 1e-3


def test_gradients_reach_its_own_parts_and_never_the_tower(model, plugins):
    a = build(model, plugins)
    a.train()
    feats, frames = adapter_inputs(model, [moving_square(8, 0), moving_square(8, 2)])
    (a.scale() * a.scores(feats, frames, ["moves left", "grows"])).logsumexp(-1).sum().backward()
    grads = {n: p.grad for n, p in a.named_parameters()}
    for name in ("exposure_weight", "exposure_proj.weight", "prefix", "postfix"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in model.model.parameters())


def test_trains_on_frames_and_leaves_the_backbone_alone(model, plugins):
    torch.manual_seed(0)
    a = build(model, plugins)
    task = load_task("shapes:closed_set", image_size=model.image_size, shapes=ShapesOptions(train_per_class=2, test_per_class=1))
    data = prepare(model, task.train, FeatureStore(None, model), needs_frames=True)
    report = train(plugins.adapter("prompt-exposure"), a, task, data, TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=5, log_every=0), log=lambda m: None)
    assert np.mean(report.losses[-6:]) < np.mean(report.losses[:6]) - 0.1
    assert report.backbone_unchanged
    assert report.parameters["trainable"] == sum(p.numel() for p in build(model, plugins, name="prompt").parameters()) \
        + 1 + model.embed_dim * (model.embed_dim + 1)


def test_indexes_from_frames_and_refuses_rescoring_and_localisation_from_the_index(model, plugins, tmp_path):
    from streamvl.search.localisation import localise_index
    from streamvl.pipeline.rescore import rescore
    from streamvl.storage.store import CLIPS, FRAMES, Store

    raws = moving_square(8, 5)
    config = IndexConfig(adapters=["prompt-exposure"], model=SPEC, clips={"window": 8, "stride": 8})
    stage = EncodeStage(config, plugins, model)
    frames, clips, _ = stage.process([FrameBatch("s", "file:///s", np.arange(8, dtype=np.float64), raws, final=True)])
    assert clips.num_rows == 1
    feats, pre = adapter_inputs(model, [raws])
    want = stage.adapters["prompt-exposure"].encode_video(feats, pre).numpy()[0]
    np.testing.assert_allclose(clips["embedding"].to_pylist()[0], want, atol=1e-5)
    store = Store(str(tmp_path / "db"))
    store.upsert(FRAMES, frames)
    store.upsert(CLIPS, clips)
    store.record_state(StreamState("s", "file:///s", Status.DONE, model=model.name))
    with pytest.raises(PluginError, match="prompt-exposure"):
        rescore(str(tmp_path / "db"), "prompt-exposure", plugins=plugins)
    with pytest.raises(PluginError, match="localisation runs on the `frames` table"):
        localise_index(str(tmp_path / "db"), "prompt-exposure", labels=["grow"])
    assert store.count(CLIPS) == 1  # the refusals left the committed rows alone
