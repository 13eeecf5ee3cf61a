"""exposure: the zero-shot adapter that embeds each clip's exposure (a recency blend of its frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvl.config import IndexConfig
from streamvl.pipeline.encode import EncodeStage
from streamvl.models.loading import load_model
from streamvl.types import FrameBatch
from streamvl.lab.zeroshot import EvalConfig, clip_exposure, heldout_clips

from tests.clips import adapter_inputs, moving_square

SPEC = "streamvl-tiny@random:0"
TEMPLATE = "a video of a shape {}"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def test_registered_as_a_zero_shot_frames_adapter_that_refuses_features_alone(model, plugins):
    spec = plugins.adapter("exposure")
    assert spec.needs_frames is True
    adapter = spec.build(model, {})
    assert not spec.capabilities  # nothing trained: no Trainable, no Scoring
    with pytest.raises(ValueError, match="needs frames"):
        adapter.encode_video(torch.randn(1, 8, model.embed_dim))


def test_options_are_checked(model, plugins):
    factory = plugins.adapter("exposure").factory
    with pytest.raises(ValueError, match="unknown exposure option"):
        factory(model, {"decy": 0.5})
    with pytest.raises(ValueError, match="decay in"):
        factory(model, {"decay": 0.0})
    with pytest.raises(ValueError, match="frames >= 1"):
        factory(model, {"frames": 0})


def test_embeds_the_still_that_zero_shot_evaluation_blends(model, plugins):
    raws = [moving_square(8, 0), moving_square(8, 1)[::-1]]
    feats, frames = adapter_inputs(model, raws)
    got = plugins.adapter("exposure").factory(model, {}).encode_video(feats, frames)
    want = model.encode_images(np.stack([clip_exposure(r) for r in raws]))
    assert got.shape == (2, model.embed_dim)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))
    # the same still up to the uint8 rounding of the raw blend
    assert float((got * want).sum(dim=-1).min()) > 0.999
    # a still clip's exposure is its frame
    still = np.repeat(moving_square(1, 3), 8, axis=0)
    feats, frames = adapter_inputs(model, [still])
    torch.testing.assert_close(plugins.adapter("exposure").factory(model, {}).encode_video(feats, frames),
                               model.encode_images(still[:1]), atol=1e-4, rtol=0)


def order_pair_accuracy(adapter, feats, frames, texts):
    """Share of right calls between an action and its time reverse over clips and the same clips played backwards."""
    t = adapter.encode_text(list(texts))
    forward = adapter.encode_video(feats, frames) @ t.T
    backward = adapter.encode_video(feats.flip(1), frames.flip(1)) @ t.T
    return float(((forward[:, 0] > forward[:, 1]).float().mean() + (backward[:, 1] > backward[:, 0]).float().mean()) / 2)


def test_the_shipped_v3_reads_order_pairs_zero_shot_where_the_frame_mean_cannot(plugins):
    """A clip and its reverse have the same frame mean, so meanpool calls exactly half of them right;
    v3 learned action words from exposures, so the exposure adapter reads most of them with
    nothing trained (measured 0.69-0.88 per pair on these clips; rotations are left out: a turn
    leaves little trace at 64 px)."""
    from streamvl.lab.synthetic import render_clip

    model = load_model("streamvl-shapes@v3")
    exposure = plugins.adapter("exposure").factory(model, {"template": TEMPLATE})
    meanpool = plugins.adapter("meanpool").factory(model, {"template": TEMPLATE})
    pairs = {"move_left": ("moves left", "moves right"), "move_up": ("moves up", "moves down"),
             "grow": ("grows", "shrinks"), "appear": ("appears", "disappears")}
    got, base = [], []
    for action, texts in pairs.items():
        raws = [render_clip(s)[::2] for s in heldout_clips([action], 8, model.image_size, EvalConfig())]
        feats, frames = adapter_inputs(model, raws)
        got.append(order_pair_accuracy(exposure, feats, frames, texts))
        base.append(order_pair_accuracy(meanpool, feats, frames, texts))
    assert np.mean(base) == pytest.approx(0.5)
    assert np.mean(got) >= 0.70, got


def test_indexes_windows_from_their_frames(model, plugins):
    raws = moving_square(8, 5)
    config = IndexConfig(adapters=["meanpool", "exposure"], model=SPEC, clips={"window": 8, "stride": 8})
    stage = EncodeStage(config, plugins, model)
    _, clips, _ = stage.process([FrameBatch("s", "file:///s", np.arange(8, dtype=np.float64), raws, final=True)])
    rows = {a: e for a, e in zip(clips["adapter"].to_pylist(), clips["embedding"].to_pylist())}
    assert set(rows) == {"meanpool", "exposure"}
    feats, frames = adapter_inputs(model, [raws])
    want = plugins.adapter("exposure").factory(model, {}).encode_video(feats, frames).numpy()[0]
    np.testing.assert_allclose(rows["exposure"], want, atol=1e-5)
    assert not np.allclose(rows["exposure"], rows["meanpool"], atol=1e-3)
