"""The xclip adapter (Ni et al. 2022): cross-frame communication, MIT, the alpha path of video-specific
prompts, where gradients go, indexing with frames, search and the prompt reranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvl.adapters.blocks import TrainBatch, module_digest
from streamvl.config import IndexConfig
from tests.conftest import index_file, patches

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tower_model):
    return tower_model


def build(model, plugins, **options):
    torch.manual_seed(0)
    return plugins.adapter("xclip").build(model, options)


def pixels(model, b, t, seed=0):
    raw = np.random.default_rng(seed).integers(0, 255, (b * t, 64, 64, 3), dtype=np.uint8)
    return model.preprocess(raw).reshape(b, t, 3, 64, 64)


def test_outputs_and_cross_frame_communication(model, plugins):
    a = build(model, plugins, tune_vision=False)
    assert plugins.adapter("xclip").needs_frames and not any(n.startswith("visual.") for n, _ in a.named_parameters())
    frames = pixels(model, 2, 6)
    with torch.no_grad():
        frame, visual = a.tower(frames)
        assert frame.shape == (2, 6, model.embed_dim) and visual.shape == (2, patches(model), model.embed_dim)
        assert a.encode_video(None, frames).shape == (2, model.embed_dim)
        # message tokens carry information across frames: frame 0's feature depends on frame 5
        changed = frames.clone()
        changed[:, 5] = pixels(model, 2, 1, seed=9)[:, 0]
        assert not torch.allclose(a.tower(changed)[0][:, 0], frame[:, 0], atol=1e-5)
        # ... which the image model never does
        alone = model.model.visual(frames[:, 0])
        assert torch.allclose(model.model.visual(changed[:, 0]), alone)


def test_alpha_path_of_the_video_specific_prompts(model, plugins):
    a = build(model, plugins, tune_vision=False)
    assert torch.allclose(a.prompts.alpha, torch.full_like(a.prompts.alpha, 0.1))
    frames = torch.cat([pixels(model, 1, 4, seed=1), pixels(model, 1, 4, seed=2)])
    texts = ["moves left", "grows"]
    with torch.no_grad():
        _, visual = a.tower(frames)
        prompted = a.prompted_text(texts, visual)
        assert not torch.allclose(prompted[0], prompted[1], atol=1e-5)  # text features depend on the video
        a.prompts.alpha.zero_()
        plain = a.video_embed(None, frames) @ a.text_embed(texts).t()
        torch.testing.assert_close(a.scores(None, frames, texts), plain)  # alpha 0: plain CLIP similarity
    a.prompts.alpha.data.fill_(0.1)
    a.train()
    (a.scale() * a.scores(None, frames, texts)).logsumexp(-1).sum().backward()
    assert a.prompts.alpha.grad.abs().sum() > 0
    assert a.prompts.decoder[0].cross_attn.in_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("prompt_on", ["unit", "raw"])
def test_prompts_are_added_to_unit_norm_or_raw_text_features(model, plugins, prompt_on):
    """prompt_on="raw" adds alpha * prompt to the text tower's projected output and normalises
    after, as the paper's code does; "unit" (default) adds it to unit-norm features, a ~20x
    larger change here."""
    a = build(model, plugins, tune_vision=False, prompt_on=prompt_on)
    frames = pixels(model, 2, 4, seed=3)
    texts = ["moves left", "grows"]
    with torch.no_grad():
        _, visual = a.tower(frames)
        raw = model.model.encode_text(model.tokenizer(texts)).float()
        assert raw.norm(dim=-1).min() > 2  # the backbone's raw text norm is not 1
        text = raw if prompt_on == "raw" else torch.nn.functional.normalize(raw, dim=-1)
        text = text.unsqueeze(0).expand(2, -1, -1)
        expected = torch.nn.functional.normalize(text + a.prompts(text, visual), dim=-1)
        torch.testing.assert_close(a.prompted_text(texts, visual), expected)
    with pytest.raises(ValueError, match="prompt_on"):
        build(model, plugins, prompt_on="scaled")


def test_the_mit_is_centred_by_default(model, plugins):
    """The MIT sees frames relative to the clip mean: a shift shared by every frame passes
    through it unchanged, and the order of the frames still matters."""
    a, plain = build(model, plugins, tune_vision=False), build(model, plugins, tune_vision=False, centre=False)
    x, shift = torch.randn(2, 6, model.embed_dim), torch.randn(2, 1, model.embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(a.video_from(x + shift), torch.nn.functional.normalize(
            a.mit.pool(x, centre=True) + shift[:, 0], dim=-1))
        assert not torch.allclose(a.video_from(x), a.video_from(x.flip(1)), atol=1e-4)
        assert not torch.allclose(plain.video_from(x + shift), a.video_from(x + shift), atol=1e-4)


def test_identity_initialised_mit_plus_the_frame_difference(model, plugins):
    a = build(model, plugins, tune_vision=False, identity_init=True, difference=4.0)
    x = torch.randn(2, 6, model.embed_dim)
    with torch.no_grad():
        expected = x.mean(1) + a.mit.positions[:6].mean(0) + 4.0 * (x[:, -1] - x[:, 0])
        torch.testing.assert_close(a.video_from(x), torch.nn.functional.normalize(expected, dim=-1))


@pytest.mark.contract("Trainable.param_groups")
def test_gradients_go_to_new_parts_and_the_tuned_tower_copy_never_the_backbone(model, plugins):
    a = build(model, plugins, layers=2)
    assert len(a.cct) == 2
    groups = a.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [pytest.approx(3e-4), pytest.approx(3e-5)]  # lr_scale 0.3, vision x 0.1
    frames = pixels(model, 4, 4)
    batch = TrainBatch(None, frames, ["a", "b", "c", "d"], torch.eye(4, dtype=torch.bool))
    before, copy_before = module_digest(model.model), module_digest(a.visual)
    assert copy_before == module_digest(model.model.visual)  # initialised from the pretrained tower
    opt = torch.optim.AdamW(groups)
    a.train()
    first = float(a.training_loss(batch)[0].detach())
    for _ in range(8):
        opt.zero_grad()
        a.training_loss(batch)[0].backward()
        opt.step()
    grads = {n: p.grad for n, p in a.named_parameters()}
    tower = "visual.transformer.resblocks.3.mlp.c_fc.weight" if patches(model) == 64 else "visual.attnpool.c_proj.weight"
    for name in ("cct.0.message_fc.weight", "cct.1.message_attn.in_proj_weight", "mit.positions", "prompts.alpha",
                 "prompts_visual_proj", tower):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert float(a.training_loss(batch)[0].detach()) < first - 0.05
    assert module_digest(model.model) == before and module_digest(a.visual) != copy_before
    assert all(p.grad is None and not p.requires_grad for p in model.model.parameters())


def test_checkpoint_holds_the_tuned_tower_copy(model, plugins, tmp_path):
    a = build(model, plugins, layers=1)
    with torch.no_grad():
        next(a.visual.parameters()).add_(0.01)
        a.prompts.alpha.fill_(0.3)
    path = a.save(tmp_path / "xclip.safetensors")
    b = plugins.adapter("xclip").build(model, {"checkpoint": str(path)})
    frames = pixels(model, 1, 4)
    torch.testing.assert_close(b.scores(None, frames, ["grows"]), a.scores(None, frames, ["grows"]))
    assert any(k.startswith("visual.") for k in b.state_dict()) and b.options["layers"] == 1


def test_indexing_search_and_the_prompt_reranker(model, plugins, shapes_mp4, tmp_path):
    from streamvl.search import query
    db = str(tmp_path / "db")
    config = IndexConfig(model=model.spec.text, adapters=["xclip"], sampling={"fps": 4.0}, clips={"window": 4, "stride": 4})
    stage = index_file(shapes_mp4, db, config, plugins)
    text = "a red circle moves left"
    hits = query.search(text, db, k=3, adapter="xclip", plugins=plugins)
    assert hits
    # the indexed embedding of a window is xclip's video embedding of that window's frames
    adapter = stage.adapters["xclip"]
    q = adapter.encode_text([text]).numpy()[0]
    from streamvl.storage.store import Store

    rows = [r for r in Store(db).read("clips").to_pylist() if r["adapter"] == "xclip"]
    assert hits[0].score == pytest.approx(max(float(np.dot(q, r["embedding"])) for r in rows), abs=1e-4)
    reranked = query.search(text, db, k=3, adapter="xclip", rerank="xclip-prompts", plugins=plugins)
    assert all(h.extra["rerank"] == "frames" for h in reranked)
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
