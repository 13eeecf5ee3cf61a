"""Shared adapter infrastructure: losses, prompt surgery, feature store, sampling, localisation, rescore, CLI jobs."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from streamvl.adapters.blocks import (
    TemporalTransformer,
    module_digest,
    prompt_positions,
    prompted_text_features,
    symmetric_nce,
    video_to_text_nce,
)
from streamvl.training.datasets import ClipRef, GroundTruth, ShapesOptions, load_task, shapes_reverses
from streamvl.pipeline.features import FeatureStore, clip_features, range_indices, segment_indices
from streamvl.search.localisation import Proposal, proposals, runs, temporal_nms, window_starts
from streamvl.models.loading import load_model

SPEC = "streamvl-tiny@random:0"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def test_symmetric_nce_matches_cross_entropy_with_one_positive_each():
    logits = torch.randn(4, 4)
    pos = torch.eye(4, dtype=torch.bool)
    want = (torch.nn.functional.cross_entropy(logits, torch.arange(4)) + torch.nn.functional.cross_entropy(logits.t(), torch.arange(4))) / 2
    torch.testing.assert_close(symmetric_nce(logits, pos), want)


def test_symmetric_nce_with_shared_classes_ignores_absent_texts_in_text_to_video():
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])  # both clips are class 0; class 2 absent
    pos = torch.tensor([[True, False, False], [True, False, False]])
    loss = symmetric_nce(logits, pos)
    v2t = torch.logsumexp(logits[0], 0) - 5.0
    t2v = torch.log(torch.tensor(2.0)) * 0  # class 0's two positives are all its candidates: zero loss
    torch.testing.assert_close(loss, (v2t + t2v) / 2)
    with pytest.raises(ValueError):
        symmetric_nce(logits, torch.zeros_like(pos))


def test_video_to_text_nce_is_cross_entropy_over_the_classes():
    logits = torch.randn(6, 4)
    target = torch.tensor([0, 1, 2, 3, 0, 0])
    pos = torch.nn.functional.one_hot(target, 4).bool()
    torch.testing.assert_close(video_to_text_nce(logits, pos), torch.nn.functional.cross_entropy(logits, target))
    assert not torch.allclose(symmetric_nce(logits, pos), video_to_text_nce(logits, pos))


def test_prompt_positions_layout():
    L = 10
    ids = torch.tensor([[49406, 5, 6, 49407] + [0] * (L - 4)])
    index, eot = prompt_positions(ids, 2, 1)
    # bank: [SOT, p0, p1, tok1..tok9, q0] -> row: SOT, p0, p1, w1, w2, q0, EOT, pads
    assert index[0, :7].tolist() == [0, 1, 2, 3, 4, L + 2, 2 + 3]
    assert int(eot[0]) == 6
    long = torch.tensor([[49406] + list(range(1, L - 1)) + [49407]])  # fills the context
    index, eot = prompt_positions(long, 2, 1)
    assert int(eot[0]) == L - 1 and int(index[0, L - 1]) == 2 + (L - 1)  # EOT kept, last words dropped


def test_prompted_text_equals_plain_text_tower_without_prompts_and_trains_only_prompts(model):
    tokens = model.tokenizer(["a red circle moves left", "hello"])
    torch.testing.assert_close(prompted_text_features(model.model, tokens, None, None), model.model.encode_text(tokens), rtol=0, atol=0)
    width = model.model.token_embedding.weight.shape[1]
    pre, post = torch.nn.Parameter(torch.randn(3, width) * 0.02), torch.nn.Parameter(torch.randn(2, width) * 0.02)
    out = prompted_text_features(model.model, tokens, pre, post)
    assert out.shape == (2, model.embed_dim)
    assert not torch.allclose(out, model.model.encode_text(tokens))
    out.sum().backward()
    assert pre.grad is not None and pre.grad.abs().sum() > 0 and post.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.model.parameters())


def test_segment_indices_spread_and_jitter():
    assert segment_indices(16, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    rng = np.random.default_rng(0)
    idx = segment_indices(16, 4, rng)
    assert all(4 * k <= i < 4 * (k + 1) for k, i in enumerate(idx))
    assert range_indices(np.arange(10, dtype=float), 2.0, 6.0, 2).tolist() == [3, 5]


def test_centred_pooling_passes_what_all_frames_share_straight_through():
    torch.manual_seed(0)
    temporal = TemporalTransformer(16, depth=2, heads=4, max_frames=8).eval()
    x, shift = torch.randn(3, 8, 16), 5 * torch.randn(1, 1, 16)
    with torch.no_grad():
        torch.testing.assert_close(temporal.pool(x + shift, centre=True), temporal.pool(x, centre=True) + shift[:, 0])
        plain = temporal.pool(x + shift) - temporal.pool(x)
        assert not torch.allclose(plain, shift[:, 0].expand_as(plain), atol=1e-2)  # uncentred blocks do see the shift
        assert not torch.allclose(temporal.pool(x, centre=True), temporal.pool(x.flip(1), centre=True), atol=1e-4)


def test_backwards_views_play_frames_in_reverse_under_the_reverse_label(model):
    from streamvl.training.train import ClipData, View, backwards, trainable_reverses, view_tensors

    reverses = shapes_reverses()
    assert reverses["move_left"] == "move_right" and reverses["blink"] == "blink"
    assert all(reverses[reverses[a]] == a for a in reverses)
    rng = np.random.default_rng(0)
    view = View(0, 2, 10, "appear")
    flipped = backwards(view, reverses, 1.0, rng)
    assert flipped == View(0, 2, 10, "disappear", reversed=True)
    assert backwards(flipped, reverses, 1.0, rng) == view
    assert backwards(view, reverses, 0.0, rng) == view
    assert backwards(View(0, 0, 4, "wave"), reverses, 1.0, rng).target == "wave"  # no known reverse: unchanged
    opened = load_task("shapes:open_set", shapes=ShapesOptions(train_per_class=1, test_per_class=1))
    usable = trainable_reverses(opened)
    assert usable and set(usable) | set(usable.values()) <= set(opened.train_classes)
    assert len(usable) < len(opened.train_classes)  # the open-set split holds out one side of some pairs
    captions = View(0, 0, 4, ("a red circle appears",))
    assert backwards(captions, reverses, 1.0, rng) == captions
    from streamvl.pipeline.features import ClipFeatures

    feats = np.arange(12, dtype=np.float32)[:, None].repeat(4, axis=1)
    data = ClipData((), [ClipFeatures(np.arange(12.0), feats)])
    fwd, _ = view_tensors(model, data, [view], 4, None)
    back, _ = view_tensors(model, data, [flipped], 4, None)
    torch.testing.assert_close(back, fwd.flip(1))
    assert fwd[0, :, 0].tolist() == [3.0, 5.0, 7.0, 9.0]


def test_feature_store_embeds_each_clip_once_and_keys_by_model(tmp_path, model):
    calls = []

    def source(seed):
        calls.append(seed)
        return np.arange(3.0), np.random.default_rng(seed).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)

    refs = [ClipRef(f"clip{i}", "x", (), lambda i=i: source(i)) for i in range(3)]
    store = FeatureStore(tmp_path, model)
    first = clip_features(model, refs, store)
    assert calls == [0, 1, 2] and first[0].features.shape == (3, model.embed_dim)
    again = clip_features(model, refs, FeatureStore(tmp_path, model))  # a new process: read from disk
    assert calls == [0, 1, 2]
    np.testing.assert_array_equal(again[2].features, first[2].features)
    np.testing.assert_allclose(first[1].features, model.encode_images(source(1)[1]).numpy(), atol=1e-6)
    other = FeatureStore(tmp_path, load_model("streamvl-tiny@random:1"))
    assert other.dir != store.dir and other.get("clip0") is None


def test_two_jobs_storing_the_same_clip_at_once_both_succeed(tmp_path, model, monkeypatch):
    """Jobs sharing a cache write the same clip concurrently: the second writer starts while the
    first is mid-write; neither may fail, and the file left is whole."""
    import safetensors.numpy

    from streamvl.pipeline.features import ClipFeatures

    feats = ClipFeatures(np.arange(2.0), np.ones((2, model.embed_dim), np.float32))
    first, second = FeatureStore(tmp_path, model), FeatureStore(tmp_path, model)
    real = safetensors.numpy.save_file

    def save_then_let_the_other_job_write(*args, **kwargs):
        real(*args, **kwargs)
        monkeypatch.setattr(safetensors.numpy, "save_file", real)
        second.put("clip", feats)  # the other job, between this writer's write and its rename

    monkeypatch.setattr(safetensors.numpy, "save_file", save_then_let_the_other_job_write)
    first.put("clip", feats)
    assert [p.name for p in first.dir.iterdir()] == [first.path("clip").name]  # no temporary file left
    np.testing.assert_array_equal(FeatureStore(tmp_path, model).get("clip").features, feats.features)


def test_shapes_tasks_are_labelled_and_disjoint():
    opts = ShapesOptions(train_per_class=1, test_per_class=1, streams=(1, 1), stream_seconds=20.0)
    closed = load_task("shapes:closed_set", shapes=opts)
    assert closed.kind == "recognition" and len(closed.train) == 13 and closed.class_texts["rotate_ccw"] == "rotates counter-clockwise"
    assert not {r.id for r in closed.train} & {r.id for r in closed.test}
    opened = load_task("shapes:open_set", shapes=opts)
    assert not set(opened.train_classes) & set(opened.test_classes)
    loc = load_task("shapes:localisation", shapes=opts)
    assert loc.kind == "localisation" and loc.test[0].segments and isinstance(loc.test[0].segments[0], GroundTruth)
    assert load_task("shapes:retrieval", shapes=opts).kind == "retrieval"


def test_folder_and_csv_tasks(tmp_path):
    from streamvl.lab.synthetic import RenderConfig, sample_clip, write_clip

    for i, action in enumerate(["grow", "shrink"]):
        (tmp_path / action).mkdir()
        write_clip(sample_clip(2 * i, action, render=RenderConfig(64, 64, 8.0, 8)), tmp_path / action / f"{i}.mp4")
    task = load_task(f"folder:{tmp_path}", fps=4.0)
    assert task.train_classes == ("grow", "shrink") and [r.label for r in task.train] == ["grow", "shrink"]
    pts, frames = task.train[0].source()
    assert frames.shape[1:] == (64, 64, 3) and len(pts) == len(frames) >= 3
    (tmp_path / "caps.csv").write_text("path,caption\ngrow/0.mp4,a shape grows\nshrink/1.mp4,a shape shrinks\n")
    caps = load_task(f"csv:{tmp_path / 'caps.csv'}")
    assert caps.kind == "retrieval" and caps.train[1].captions == ("a shape shrinks",)


def test_proposals_find_runs_and_nms_prunes_overlaps():
    curve = np.zeros(60)
    curve[10:20] = 0.9
    curve[40:44] = 0.6
    found = proposals(curve)
    spans = sorted((p.lo, p.hi) for p in found)
    assert (10, 20) in spans and (40, 44) in spans
    assert runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    kept = temporal_nms([Proposal(0, 10, 0.9), Proposal(1, 10, 0.8), Proposal(20, 30, 0.5)], iou=0.5)
    assert [(p.lo, p.hi) for p in kept] == [(0, 10), (20, 30)]
    assert window_starts(100, 64, 32) == [0, 32, 36] and window_starts(10, 64, 32) == [0]


def test_module_digest_sees_any_weight_change(model):
    before = module_digest(model.model)
    assert module_digest(model.model) == before
    layer = torch.nn.Linear(2, 2)
    d = module_digest(layer)
    with torch.no_grad():
        layer.weight[0, 0] += 1e-6
    assert module_digest(layer) != d


def test_localise_index_writes_segments_from_the_frames_table(model, tmp_path):
    from click.testing import CliRunner

    from streamvl.cli import main
    from streamvl.config import IndexConfig
    from streamvl.pipeline.encode import EncodeStage
    from streamvl.plugins.manager import Plugins
    from streamvl.storage.store import CLIPS, FRAMES, Store
    from streamvl.lab.synthetic import frame_times, render_clip, sample_stream
    from streamvl.types import FrameBatch, Status, StreamState

    spec = sample_stream(5, 20.0, width=64, height=64, fps=8.0)
    stage = EncodeStage(IndexConfig(model=SPEC, sampling={"fps": 8.0}), Plugins(), model)
    frames, clips, _ = stage.process([FrameBatch("st", "file:///st", frame_times(spec), render_clip(spec), final=True)])
    db = str(tmp_path / "db")
    store = Store(db)
    store.upsert(FRAMES, frames)
    store.upsert(CLIPS, clips)
    store.record_state(StreamState("st", "file:///st", Status.DONE, model=model.name))
    torch.manual_seed(0)
    adapter = Plugins().adapter("prompt").build(model, {})
    with torch.no_grad():  # an untrained head: make every frame "action" so proposals exist
        adapter.proposal.out.bias.fill_(5.0)
    ckpt = adapter.save(tmp_path / "loc.safetensors", {"classes": ["grow", "shrink"], "class_texts": {"grow": "grows", "shrink": "shrinks"}})
    out = CliRunner().invoke(main, ["localise", "--db", db, "--checkpoint", str(ckpt)])
    assert out.exit_code == 0, out.output
    rows = store.segments(adapter="prompt")
    assert rows and all(r["stream_id"] == "st" and r["start"] < r["end"] and r["label"] in ("grow", "shrink") for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    CliRunner().invoke(main, ["localise", "--db", db, "--checkpoint", str(ckpt)])  # again: replaced, not duplicated
    assert len(store.segments(adapter="prompt")) == len(rows)


def test_view_augmentation_crops_and_recolours_each_view_alike_across_its_frames():
    from streamvl.training.train import augment_views

    b, t, s = 3, 4, 16
    frames = torch.randn(b, t, 3, s, s)
    rng = np.random.default_rng(0)
    assert torch.equal(augment_views(frames, rng, 1.0, False), frames)
    recoloured = augment_views(frames, np.random.default_rng(1), 1.0, True)
    orders = []
    for v in range(b):  # one channel order per view, the same in all its frames; pixels only move between channels
        order = [next(c for c in range(3) if torch.equal(recoloured[v, 0, k], frames[v, 0, c])) for k in range(3)]
        assert sorted(order) == [0, 1, 2]
        assert torch.equal(recoloured[v], frames[v][:, order])
        orders.append(order)
    assert any(o != [0, 1, 2] for o in orders)
    # a crop is one window per view: a frame that is a shifted copy of the first stays a shifted copy
    ramp = torch.arange(s, dtype=torch.float32).expand(s, s)  # value = column
    clip = torch.stack([ramp + k for k in range(t)])[:, None].expand(t, 3, s, s)
    cropped = augment_views(clip[None].repeat(b, 1, 1, 1, 1), np.random.default_rng(2), 0.5, False)
    assert cropped.shape == (b, t, 3, s, s)
    for v in range(b):
        torch.testing.assert_close(cropped[v] - cropped[v, :1], torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, 3, s, s))
    assert not torch.equal(cropped[0, 0], clip[0])  # the window is smaller than the frame: the ramp is stretched


def test_crop_outside_zero_to_one_is_refused():
    from streamvl.training.train import TrainConfig

    for crop in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="crop must be in"):
            TrainConfig(crop=crop)


@pytest.mark.parametrize(("data", "recolour"), [("shapes:closed_set", True), ("shapes:retrieval", False)])
def test_train_command_augments_frame_views_and_recolours_only_for_class_labels(tmp_path, monkeypatch, data, recolour):
    import json

    from click.testing import CliRunner

    import streamvl.training.train as training
    from streamvl.cli import main

    calls = []
    real = training.augment_views

    def spy(frames, rng, crop, colours):
        calls.append((tuple(frames.shape), crop, colours))
        return real(frames, rng, crop, colours)

    monkeypatch.setattr(training, "augment_views", spy)
    ckpt = tmp_path / "litevl.safetensors"
    out = CliRunner().invoke(main, ["train", "--adapter", "litevl", "--data", data, "--out", str(ckpt),
                                    "--model", SPEC, "--train-per-class", "1", "--test-per-class", "1",
                                    "--cache", str(tmp_path / "cache"), "--threads", "1", "--steps", "2",
                                    "--batch-size", "2", "--frames", "4", "--crop", "0.6", "--colours"])
    assert out.exit_code == 0, out.output
    assert len(calls) == 2 and all(c[1:] == (0.6, recolour) and c[0][:2] == (2, 4) for c in calls)
    config = json.loads(ckpt.with_suffix(".json").read_text())["train"]["config"]
    assert config["crop"] == 0.6 and config["colours"] is True


def test_a_class_template_puts_every_class_text_in_a_sentence_and_leaves_captions_alone():
    from streamvl.errors import ConfigError

    plain = load_task("shapes:open_set")
    task = load_task("shapes:open_set", class_template="a video of a shape {}")
    assert set(task.train_classes).isdisjoint(task.test_classes)
    for c in (*task.train_classes, *task.test_classes):
        assert task.texts((c,)) == [f"a video of a shape {plain.texts((c,))[0]}"]
    assert task.texts(("move_left",)) == ["a video of a shape moves left"]
    assert task.train == plain.train and task.test == plain.test  # same clips
    captions = load_task("shapes:retrieval", class_template="a video of a shape {}")
    assert [r.captions for r in captions.test] == [r.captions for r in load_task("shapes:retrieval").test]
    for bad in ("a video", "{} and {}", "a {colour} shape {}", "a {"):
        with pytest.raises(ConfigError, match="class template"):
            load_task("shapes:open_set", class_template=bad)


def test_train_records_the_class_template_and_evaluate_uses_it_unless_told_otherwise(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    import streamvl.training.train as training
    from streamvl.cli import main

    seen: list[str] = []
    real = training.targets_and_texts

    def spy(views, task, rng):
        texts, positives = real(views, task, rng)
        seen.extend(texts)
        return texts, positives

    monkeypatch.setattr(training, "targets_and_texts", spy)
    ckpt = tmp_path / "prompt.safetensors"
    common = ["--model", SPEC, "--train-per-class", "1", "--test-per-class", "1", "--cache", str(tmp_path / "cache"),
              "--threads", "1"]
    out = CliRunner().invoke(main, ["train", "--adapter", "prompt", "--data", "shapes:closed_set", "--out", str(ckpt),
                                    "--steps", "2", "--batch-size", "4", "--class-template", "a shape {}", *common])
    assert out.exit_code == 0, out.output
    assert seen and all(t.startswith("a shape ") for t in seen) and "a shape moves left" in seen
    config = json.loads(ckpt.with_suffix(".json").read_text())
    assert config["class_template"] == "a shape {}" and config["class_texts"]["grow"] == "a shape grows"
    evaluate = ["evaluate", "--adapter", "prompt", "--data", "shapes:closed_set", "--checkpoint", str(ckpt), *common]
    out = CliRunner().invoke(main, evaluate)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["class_template"] == "a shape {}"
    out = CliRunner().invoke(main, [*evaluate, "--class-template", "{}"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["class_template"] == "{}"
    out = CliRunner().invoke(main, [*evaluate, "--class-template", "no field"])
    assert out.exit_code != 0 and "class template 'no field'" in out.output


def test_train_seed_fixes_initialisation_and_batches(tmp_path):
    """`--train-seed` reproduces a run in the same process (the adapter's initial weights too), and
    another seed starts elsewhere."""
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from streamvl.cli import main

    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        ckpt = tmp_path / f"{name}.safetensors"
        out = CliRunner().invoke(main, ["train", "--adapter", "prompt", "--data", "shapes:closed_set", "--out", str(ckpt),
                                        "--model", SPEC, "--train-per-class", "1", "--test-per-class", "1",
                                        "--cache", str(tmp_path / "cache"), "--threads", "1", "--steps", "1",
                                        "--batch-size", "4", "--train-seed", str(seed)])
        assert out.exit_code == 0, out.output
        return load_file(ckpt)

    first, again, other = run("a", 3), run("b", 3), run("c", 4)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_feature_copies_are_the_frozen_features_of_augmented_frames(model):
    """A copy is each clip's frames cropped / recoloured once, all frames alike, then embedded by the frozen tower."""
    from streamvl.training.train import feature_copies, prepare

    task = load_task("shapes:closed_set", image_size=model.image_size, shapes=ShapesOptions(train_per_class=1, test_per_class=1))
    data = prepare(model, task.train[:2], FeatureStore(None, model), needs_frames=False)
    same = feature_copies(model, data, 2, 1.0, False, np.random.default_rng(0))
    assert [len(c) for c in same] == [2, 2]
    for orig, copies in zip(data.features, same):  # no augmentation: the copies are the originals
        for c in copies:
            np.testing.assert_array_equal(c.pts, orig.pts)
            np.testing.assert_allclose(c.features, orig.features, atol=1e-5)
    recoloured = feature_copies(model, data, 3, 1.0, True, np.random.default_rng(0))
    _, frames = data.refs[0].source()
    pixels = model.preprocess(frames)
    for c in recoloured[0]:  # each copy: one channel order of the whole clip
        matches = [p for p in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])
                   if np.allclose(c.features, model.encode_pixels(pixels[:, p]).numpy(), atol=1e-5)]
        assert len(matches) == 1
    assert any(not np.allclose(c.features, data.features[0].features, atol=1e-3) for c in recoloured[0])
    cropped = feature_copies(model, data, 1, 0.5, False, np.random.default_rng(0))
    assert cropped[0][0].features.shape == data.features[0].features.shape
    assert not np.allclose(cropped[0][0].features, data.features[0].features, atol=1e-3)


def test_training_views_read_originals_and_copies_and_evaluation_only_originals():
    from streamvl.pipeline.features import ClipFeatures
    from streamvl.training.train import ClipData, View, view_tensors

    pts = np.arange(8, dtype=np.float64)
    feats = [ClipFeatures(pts, np.zeros((8, 4), np.float32))]
    copies = [[ClipFeatures(pts, np.full((8, 4), k + 1, np.float32)) for k in range(3)]]
    data = ClipData((), feats, None, copies)
    views = [View(0, 0, 8, "a")] * 64
    train, _ = view_tensors(None, data, views, 4, np.random.default_rng(0))
    drawn = {int(v) for v in train[:, 0, 0]}
    assert drawn == {0, 1, 2, 3}  # the original and every copy
    assert all(torch.equal(x, x[0, 0].expand_as(x)) for x in train)  # one source per view, all its frames
    test, _ = view_tensors(None, data, views, 4, None)
    assert not test.any()


def test_train_command_builds_feature_copies_for_feature_adapters(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    import streamvl.training.train as training
    from streamvl.cli import main

    calls = []
    real = training.feature_copies

    def spy(model, data, n, crop, colours, rng):
        calls.append((len(data.refs), n, crop, colours))
        return real(model, data, n, crop, colours, rng)

    monkeypatch.setattr(training, "feature_copies", spy)
    ckpt = tmp_path / "prompt.safetensors"
    out = CliRunner().invoke(main, ["train", "--adapter", "prompt", "--data", "shapes:closed_set", "--out", str(ckpt),
                                    "--model", SPEC, "--train-per-class", "1", "--test-per-class", "1",
                                    "--cache", str(tmp_path / "cache"), "--threads", "1", "--steps", "2",
                                    "--batch-size", "4", "--copies", "2", "--colours"])
    assert out.exit_code == 0, out.output
    assert calls == [(13, 2, 1.0, True)]
    assert json.loads(ckpt.with_suffix(".json").read_text())["train"]["config"]["copies"] == 2


@pytest.mark.parametrize(("adapter", "flags", "message"), [
    ("litevl", ["--copies", "2", "--colours"], "litevl reads frames"),
    ("prompt", ["--crop", "0.7"], "prompt reads frozen features, not frames"),
    ("prompt", ["--colours"], "copies N"),
])
def test_train_refuses_augmentation_the_adapter_cannot_use(tmp_path, adapter, flags, message):
    from click.testing import CliRunner

    from streamvl.cli import main

    out = CliRunner().invoke(main, ["train", "--adapter", adapter, "--data", "shapes:closed_set",
                                    "--out", str(tmp_path / "a.safetensors"), "--model", SPEC, "--train-per-class", "1",
                                    "--cache", str(tmp_path / "cache"), "--threads", "1", "--steps", "1", *flags])
    assert out.exit_code == 2 and message in out.output
    assert not (tmp_path / "a.safetensors").exists()
