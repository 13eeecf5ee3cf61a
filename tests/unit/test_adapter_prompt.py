"""The prompt adapter (Ju et al. 2022): mechanics, training, checkpoints, localisation, index + search."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from streamvl.config import IndexConfig
from streamvl.training.datasets import ShapesOptions, load_task
from streamvl.pipeline.encode import EncodeStage
from streamvl.pipeline.features import FeatureStore
from streamvl.models.loading import load_model
from streamvl.training.train import TrainConfig, prepare, train
from streamvl.types import FrameBatch, Status, StreamState

SPEC = "streamvl-tiny@random:0"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def build(model, plugins, **options):
    return plugins.adapter("prompt").build(model, options)


@pytest.fixture(scope="module")
def trained(model, plugins, tmp_path_factory):
    """A prompt adapter trained for a few dozen steps on one shapes clip per class."""
    torch.manual_seed(0)
    adapter = build(model, plugins)
    task = load_task("shapes:closed_set", image_size=model.image_size, shapes=ShapesOptions(train_per_class=2, test_per_class=1))
    data = prepare(model, task.train, FeatureStore(None, model), needs_frames=False)
    report = train(plugins.adapter("prompt"), adapter, task, data, TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup=5, log_every=0), log=lambda m: None)
    path = adapter.save(tmp_path_factory.mktemp("ckpt") / "prompt.safetensors", {"classes": list(task.train_classes)})
    return adapter, report, path


def test_registered_through_its_entry_point(plugins):
    names = {p["name"]: p["module"] for p in plugins.describe()["plugins"]}
    assert names.get("prompt") == "streamvl_prompt"
    assert plugins.adapter("prompt").needs_frames is False


def test_shapes_and_normalised_outputs(model, plugins):
    a = build(model, plugins)
    v = a.video_embed(torch.randn(3, 8, model.embed_dim))
    t = a.text_embed(["moves left", "a red circle grows"])
    assert v.shape == (3, model.embed_dim) and t.shape == (2, model.embed_dim)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3))
    assert a.video_embed(torch.randn(2, 3, model.embed_dim)).shape == (2, model.embed_dim)  # short tail window


def test_without_prompts_or_temporal_layers_it_is_the_frame_mean_baseline(model, plugins):
    a = build(model, plugins, prefix=0, postfix=0, depth=0)
    with torch.no_grad():
        a.temporal.positions.zero_()
    feats = torch.nn.functional.normalize(torch.randn(2, 8, model.embed_dim), dim=-1)
    mean = plugins.adapter("meanpool").build(model, {})
    torch.testing.assert_close(a.encode_video(feats), mean.encode_video(feats))
    torch.testing.assert_close(a.encode_text(["moves left"]), model.encode_text(["moves left"]))


def test_temporal_positions_make_it_order_sensitive(model, plugins):
    a = build(model, plugins)
    feats = torch.randn(1, 8, model.embed_dim)
    forward, backward = a.encode_video(feats), a.encode_video(feats.flip(1))
    assert not torch.allclose(forward, backward, atol=1e-4)


@pytest.mark.contract("Scoring.scores", "Scoring.scale")
def test_gradients_reach_prompts_and_temporal_transformer_only(model, plugins):
    a = build(model, plugins)
    a.train()
    scores = a.scores(torch.randn(4, 8, model.embed_dim), None, ["moves left", "grows"])
    (a.scale() * scores).logsumexp(-1).sum().backward()
    grads = {n: p.grad for n, p in a.named_parameters()}
    assert grads["prefix"].abs().sum() > 0 and grads["postfix"].abs().sum() > 0
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("temporal."))
    assert all(not p.requires_grad and p.grad is None for p in model.model.parameters())
    assert a.parameter_counts()["trainable"] == sum(p.numel() for p in a.parameters())


def test_open_set_options_start_at_the_frozen_templated_difference_reading(model, plugins):
    """prefix_words + identity_init + difference: untrained, prompt is the frozen text tower on
    'words {name}' against the frame mean (plus the mean temporal position) plus difference x
    the change from the first frame to the last."""
    a = build(model, plugins, prefix_words="a video of a shape", postfix=0, identity_init=True, difference=8.0)
    assert a.prefix.shape == (5, model.model.token_embedding.weight.shape[1])  # one vector per word token
    feats = torch.nn.functional.normalize(torch.randn(3, 8, model.embed_dim), dim=-1)
    with torch.no_grad():
        expected = feats.mean(1) + a.temporal.positions[:8].mean(0) + 8.0 * (feats[:, -1] - feats[:, 0])
    torch.testing.assert_close(a.encode_video(feats), torch.nn.functional.normalize(expected, dim=-1))
    torch.testing.assert_close(a.encode_text(["moves left", "grows"]),
                               model.encode_text(["a video of a shape moves left", "a video of a shape grows"]))
    with pytest.raises(ValueError, match="no tokens"):
        build(model, plugins, prefix_words=" ")
    with pytest.raises(ValueError, match="prompt option 'difference' must be a number, got 'lots'"):
        build(model, plugins, difference="lots")


@pytest.mark.contract("Trainable.save")
def test_open_set_options_survive_a_checkpoint(model, plugins, tmp_path):
    torch.manual_seed(1)
    a = build(model, plugins, prefix_words="a video of a shape", identity_init=True, difference=8.0)
    with torch.no_grad():  # as if trained: the blocks and prompt vectors moved
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = a.save(tmp_path / "open.safetensors", {"classes": ["move_left", "grow"]})
    loaded = build(model, plugins, checkpoint=str(path))
    assert loaded.options["difference"] == 8.0 and loaded.options["prefix_words"] == "a video of a shape"
    feats = torch.randn(2, 8, model.embed_dim)
    torch.testing.assert_close(loaded.encode_video(feats), a.encode_video(feats))
    torch.testing.assert_close(loaded.encode_text(["grows"]), a.encode_text(["grows"]))


def test_identity_initialised_blocks_start_silent_and_still_learn(model, plugins):
    torch.manual_seed(0)
    plain, ident = build(model, plugins), build(model, plugins, identity_init=True)
    feats = torch.nn.functional.normalize(torch.randn(4, 8, model.embed_dim), dim=-1)
    with torch.no_grad():
        offset = {k: (a.temporal.pool(feats, True) - feats.mean(1) - a.temporal.positions[:8].mean(0)).norm(dim=-1)
                  for k, a in (("plain", plain.eval()), ("ident", ident.eval()))}
    assert float(offset["ident"].max()) < 1e-5 < float(offset["plain"].min())  # default init: blocks add a lot
    ident.train()
    (ident.scale() * ident.scores(feats, None, ["moves left", "grows"])).logsumexp(-1).sum().backward()
    for block in ident.temporal.blocks.layers:
        assert block.self_attn.out_proj.weight.grad.abs().sum() > 0 and block.linear2.weight.grad.abs().sum() > 0


def test_training_lowers_the_loss_and_leaves_the_backbone_alone(trained):
    _, report, _ = trained
    assert np.mean(report.losses[-8:]) < np.mean(report.losses[:8]) - 0.1
    assert report.backbone_unchanged and report.backbone_sha256_before
    assert 0 < report.parameters["trainable"] < report.parameters["total"]


@pytest.mark.contract("Trainable.checkpoint_info")
def test_checkpoint_round_trip_and_backbone_guard(model, plugins, trained):
    adapter, _, path = trained
    loaded = build(model, plugins, checkpoint=str(path))
    feats = torch.randn(2, 8, model.embed_dim)
    torch.testing.assert_close(loaded.encode_video(feats), adapter.encode_video(feats))
    torch.testing.assert_close(loaded.encode_text(["grows"]), adapter.encode_text(["grows"]))
    assert loaded.checkpoint_info["classes"][0] == "move_left"
    with pytest.raises(ValueError, match="trained on backbone"):
        build(load_model("streamvl-tiny@random:1"), plugins, checkpoint=str(path))
    with pytest.raises(ValueError, match="unknown prompt option"):
        build(model, plugins, prefixes=3)


@pytest.mark.contract("Localising.actionness", "Localising.proposal_loss")
def test_proposal_head_learns_actionness(model, plugins):
    torch.manual_seed(0)
    a = build(model, plugins)
    feats = torch.randn(8, 32, model.embed_dim) * 0.01
    targets = torch.zeros(8, 32)
    for b in range(8):  # "action": frames that change; idle frames repeat
        lo = 4 + 2 * b
        feats[b, lo : lo + 8] += torch.randn(8, model.embed_dim)
        targets[b, lo : lo + 8] = 1
    opt = torch.optim.Adam(a.proposal.parameters(), 3e-3)
    first = float(a.proposal_loss(feats, targets).detach())
    a.train()
    for _ in range(30):
        opt.zero_grad()
        a.proposal_loss(feats, targets).backward()
        opt.step()
    assert float(a.proposal_loss(feats, targets).detach()) < first * 0.7
    probs = a.actionness(feats)
    assert probs.shape == (8, 32) and float(probs.min()) >= 0 and float(probs.max()) <= 1


def batch(stream_id, start, n, final=False):
    frames = np.random.default_rng(start).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return FrameBatch(stream_id, f"file:///{stream_id}", np.arange(start, start + n, dtype=np.float64), frames, final=final)


def test_indexing_and_search_with_a_checkpoint(model, plugins, trained, tmp_path):
    from streamvl.search import query
    from streamvl.storage.store import CLIPS, FRAMES, Store

    adapter, _, path = trained
    options = {"prompt": {"checkpoint": str(path)}}
    config = IndexConfig(adapters=["meanpool", "prompt"], adapter_options=options, model=SPEC,
                         clips={"window": 4, "stride": 4})
    stage = EncodeStage(config, plugins, model)
    frames, clips, _ = stage.process([batch("p", 0, 8), batch("q", 0, 5, final=True)])
    rows = clips.filter(pa.compute.equal(clips["adapter"], "prompt")).to_pylist()
    assert len(rows) == 4
    # the rows come from the trained adapter: its embedding of the window's frame features
    emb_p = np.array(frames.filter(pa.compute.equal(frames["stream_id"], "p"))["embedding"].to_pylist(), np.float32)
    want = adapter.encode_video(torch.from_numpy(emb_p[None, 4:8])).numpy()[0]
    got = next(r["embedding"] for r in rows if r["stream_id"] == "p" and r["start"] == 4.0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    store = Store(str(tmp_path / "db"))
    store.upsert(FRAMES, frames)
    store.upsert(CLIPS, clips)
    for sid in ("p", "q"):
        store.record_state(StreamState(sid, f"file:///{sid}", Status.DONE, model=model.name))
    hits = query.search("a red circle moves left", str(tmp_path / "db"), k=5, adapter="prompt",
                        adapter_options=options["prompt"], plugins=plugins)
    assert hits and all(h.adapter == "prompt" for h in hits)
    q = adapter.encode_text(["a red circle moves left"]).numpy()[0]
    best = max(float(np.dot(q, r["embedding"])) for r in rows)
    assert hits[0].score == pytest.approx(best, abs=1e-4)
