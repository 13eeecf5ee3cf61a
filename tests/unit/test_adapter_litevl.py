"""The litevl adapter (Chen et al. 2022): scale-at-zero equivalence, temporal attention, text-dependent
pooling, training mechanics, indexing with frames, search and the re-reading reranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamvl.adapters.blocks import TrainBatch, module_digest
from streamvl.config import IndexConfig
from tests.conftest import index_file, patches

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tower_model):
    return tower_model


def build(model, plugins, **options):
    return plugins.adapter("litevl").build(model, options)


def pixels(model, b, t, seed=0):
    raw = np.random.default_rng(seed).integers(0, 255, (b * t, 64, 64, 3), dtype=np.uint8)
    return raw, model.preprocess(raw).reshape(b, t, 3, 64, 64)


def test_at_scale_zero_it_is_exactly_the_image_model(model, plugins):
    a = build(model, plugins)
    assert plugins.adapter("litevl").needs_frames and torch.equal(a.temporal_scale, torch.zeros(4))
    raw, frames = pixels(model, 2, 6)
    with torch.no_grad():
        frame, patch = a.tower(frames)
        image = F.normalize(model.model.visual(model.preprocess(raw)), dim=-1).reshape(2, 6, -1)
    assert torch.equal(frame, image)  # bit-identical, not merely close
    assert patch.shape == (2, 6, patches(model), model.embed_dim)
    meanpool = plugins.adapter("meanpool").build(model, {})
    torch.testing.assert_close(a.encode_video(None, frames), meanpool.encode_video(model.encode_images(raw).reshape(2, 6, -1)))


def test_the_frame_difference_joins_every_pooling(model, plugins):
    a = build(model, plugins, difference=3.0)
    _, frames = pixels(model, 2, 6)
    text = a.text_embed(["moves left", "grows"])
    with torch.no_grad():
        frame, patch = a.tower(frames)
        change = 3.0 * (frame[:, -1] - frame[:, 0])
        torch.testing.assert_close(a.encode_video(None, frames), F.normalize(frame.mean(1) + change, dim=-1))
        expected = F.normalize(_unnormalised_pool(a, frame, patch, text) + change[:, None], dim=-1)
        torch.testing.assert_close(a.pooled(frame, patch, text), expected)


def _unnormalised_pool(a, frame, patch, text):
    """litevl's three poolings summed, before normalising (for the difference test)."""
    w = (frame @ text.t() / a.options["tau_frame"]).softmax(dim=1)  # [B, T, N] over frames
    tokens = patch.flatten(1, 2)
    v = (tokens @ text.t() / a.options["tau_patch"]).softmax(dim=1)
    return frame.mean(1)[:, None] + torch.einsum("btn,btd->bnd", w, frame) + torch.einsum("bkn,bkd->bnd", v, tokens)


def test_a_nonzero_scale_mixes_frames_in_time_order(model, plugins):
    a = build(model, plugins)
    with torch.no_grad():
        a.temporal_scale.fill_(1.0)
    _, frames = pixels(model, 1, 6)
    with torch.no_grad():
        forward, _ = a.tower(frames)
        alone, _ = a.tower(frames[:, :3])
        reverse, _ = a.tower(frames.flip(1))
    assert not torch.allclose(forward[:, :3], alone, atol=1e-4)  # later frames change earlier ones
    assert not torch.allclose(forward, reverse.flip(1), atol=1e-4)  # temporal positions: order matters


def test_gradients_start_at_the_scales_then_reach_the_temporal_attention(model, plugins):
    a = build(model, plugins)
    a.train()
    _, frames = pixels(model, 2, 4)
    loss = a.scale() * a.scores(None, frames, ["moves left", "grows"])
    loss.logsumexp(-1).sum().backward()
    assert a.temporal_scale.grad.abs().min() > 0
    assert all(float(p.grad.abs().sum()) == 0 for n, p in a.named_parameters() if n.startswith("temporal."))
    assert all(p.grad is None and not p.requires_grad for p in model.model.parameters())
    a.zero_grad()
    with torch.no_grad():
        a.temporal_scale.fill_(0.5)
    (a.scale() * a.scores(None, frames, ["moves left", "grows"])).logsumexp(-1).sum().backward()
    assert a.temporal[0].attn.in_proj_weight.grad.abs().sum() > 0


def test_text_dependent_pooling_is_parameter_free_and_follows_the_text(model, plugins):
    a = build(model, plugins, pool_weights=[0.0, 1.0, 0.0], tau_frame=0.01)
    frames = F.normalize(torch.eye(4, model.embed_dim)[None], dim=-1)  # 4 orthogonal frame features
    text = frames[0, 2:3]
    pooled = a.pooled(frames, frames[:, :, None], text)
    torch.testing.assert_close(pooled[0, 0], frames[0, 2], atol=1e-4, rtol=0)
    mean_only = build(model, plugins, pool_weights=[1.0, 0.0, 0.0])
    _, px = pixels(model, 2, 4)
    with torch.no_grad():
        plain = mean_only.encode_video(None, px) @ mean_only.encode_text(["moves left"]).t()
        torch.testing.assert_close(mean_only.scores(None, px, ["moves left"]), plain)
        assert not torch.allclose(a.scores(None, px, ["moves left"]), plain)
    assert not any("pool" in n for n, _ in a.named_parameters())


def test_training_steps_lower_the_loss_and_leave_the_backbone_alone(model, plugins):
    torch.manual_seed(0)
    a = build(model, plugins, layers=2)
    assert a.first == 2 and len(a.temporal) == 2 and a.temporal_scale.shape == (2,)
    _, frames = pixels(model, 4, 4)
    batch = TrainBatch(None, frames, ["a", "b", "c", "d"], torch.eye(4, dtype=torch.bool))
    before_digest = module_digest(model.model)
    opt = torch.optim.AdamW(a.param_groups(1e-2))
    a.train()
    first = float(a.training_loss(batch)[0].detach())
    for _ in range(12):
        opt.zero_grad()
        a.training_loss(batch)[0].backward()
        opt.step()
    assert float(a.training_loss(batch)[0].detach()) < first - 0.05
    assert a.temporal_scale.abs().min() > 0 and module_digest(model.model) == before_digest


def test_class_names_train_with_cross_entropy_over_the_classes_and_captions_with_nce(model, plugins):
    from streamvl.adapters.blocks import symmetric_nce, video_to_text_nce

    a = build(model, plugins)
    _, frames = pixels(model, 3, 4)
    pos = torch.tensor([[1, 0], [0, 1], [1, 0]], dtype=torch.bool)
    with torch.no_grad():
        logits = a.scale() * a.scores(None, frames, ["moves left", "grows"])
        classes, _ = a.training_loss(TrainBatch(None, frames, ["moves left", "grows"], pos, class_texts=True))
        captions, _ = a.training_loss(TrainBatch(None, frames, ["moves left", "grows"], pos))
    torch.testing.assert_close(classes, video_to_text_nce(logits, pos))
    torch.testing.assert_close(captions, symmetric_nce(logits, pos))


def test_indexing_search_and_the_frame_rereading_reranker(model, plugins, shapes_mp4, tmp_path):
    from streamvl.search import query
    db = str(tmp_path / "db")
    config = IndexConfig(model=model.spec.text, adapters=["litevl"], sampling={"fps": 4.0}, clips={"window": 4, "stride": 4})
    stage = index_file(shapes_mp4, db, config, plugins)
    hits = query.search("a red circle moves left", db, k=3, adapter="litevl", plugins=plugins)
    assert hits and all(h.adapter == "litevl" for h in hits)
    reranked = query.search("a red circle moves left", db, k=3, adapter="litevl", rerank="litevl-textpool", plugins=plugins)
    assert {(h.start, h.end) for h in reranked} == {(h.start, h.end) for h in hits}
    assert all(h.extra["rerank"] == "frames" for h in reranked)
    # the new score is litevl's text-dependent score of that range's frames, read again from the file
    from streamvl.search.rereading import read_range

    h = reranked[0]
    _, raw = read_range(h.uri, h.stream_id, h.start, h.end, 4.0, model.image_size)
    assert len(raw) == round((h.end - h.start) * 4)
    adapter = stage.adapters["litevl"]
    from streamvl.pipeline.features import segment_indices

    px = model.preprocess(raw[segment_indices(len(raw), 8)])[None]
    with torch.no_grad():
        want = float(adapter.scores(None, px, ["a red circle moves left"])[0, 0])
    assert h.score == pytest.approx(want, abs=1e-5)
