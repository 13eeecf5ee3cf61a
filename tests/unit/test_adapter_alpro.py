"""The alpro adapter (Li et al. 2022): VTC mechanics, entity prompter tags, PEM, tag columns and --tag search.

The tag vocabulary is the user's (`entities`); the shapes-world tests pass the shapes world's
explicitly (streamvl.lab.synthetic.shape_entities)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner

from streamvl.config import IndexConfig
from streamvl.lab.synthetic import shape_entities
from streamvl.training.datasets import ShapesOptions, load_task
from streamvl.pipeline.encode import EncodeStage
from streamvl.errors import StoreError
from streamvl.pipeline.features import FeatureStore
from streamvl.models.loading import load_model
from streamvl.plugins import TrainBatch
from streamvl.training.train import TrainConfig, prepare, train
from streamvl.types import FrameBatch, Status, StreamState

SPEC = "streamvl-tiny@random:0"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def build(model, plugins, **options):
    return plugins.adapter("alpro").build(model, options)


def shapes(model, plugins, **options):
    """alpro with the shapes world's vocabulary, given explicitly."""
    return build(model, plugins, entities=shape_entities(), **options)


@pytest.fixture(scope="module")
def retrieval_data(model):
    task = load_task("shapes:retrieval", image_size=model.image_size, shapes=ShapesOptions(train_per_class=2, test_per_class=1))
    return task, prepare(model, task.train, FeatureStore(None, model), needs_frames=False)


@pytest.fixture(scope="module")
def prompter(model, plugins, retrieval_data, tmp_path_factory):
    """Stage 1 of ALPRO: a VTC-trained alpro, saved, to serve as the frozen prompter."""
    torch.manual_seed(0)
    task, data = retrieval_data
    adapter = shapes(model, plugins)
    report = train(plugins.adapter("alpro"), adapter, task, data, TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=3, log_every=0), log=lambda m: None)
    return adapter, report, adapter.save(tmp_path_factory.mktemp("alpro") / "prompter.safetensors")


@pytest.mark.contract("VideoAdapter.encode_video", "VideoAdapter.encode_text")
def test_untrained_projections_are_the_frame_mean_baseline(model, plugins):
    a = build(model, plugins, depth=0)
    with torch.no_grad():
        a.temporal.positions.zero_()
    feats = torch.nn.functional.normalize(torch.randn(2, 6, model.embed_dim), dim=-1)
    torch.testing.assert_close(a.encode_video(feats), plugins.adapter("meanpool").build(model, {}).encode_video(feats))
    torch.testing.assert_close(a.encode_text(["a red circle"]), model.encode_text(["a red circle"]))


@pytest.mark.contract("Trainable.training_loss")
def test_vtc_gradients_reach_projections_and_temporal_layers_only(model, plugins):
    a = shapes(model, plugins)
    a.train()
    feats = torch.randn(4, 8, model.embed_dim)
    batch = TrainBatch(feats, None, ["a", "b", "c", "d"], torch.eye(4, dtype=torch.bool))
    loss, logs = a.training_loss(batch)
    loss.backward()
    assert set(logs) == {"vtc"}
    for name in ("video_proj.weight", "text_proj.weight", "logit_scale"):
        assert dict(a.named_parameters())[name].grad.abs().sum() > 0, name
    assert a.entity_head.weight.grad is None  # no prompter: no PEM
    assert all(p.grad is None and not p.requires_grad for p in model.model.parameters())


def test_vtc_training_lowers_the_loss(prompter):
    _, report, _ = prompter
    assert np.mean(report.losses[-6:]) < np.mean(report.losses[:6]) - 0.1 and report.backbone_unchanged


def test_prompter_soft_labels_and_tags(model, plugins):
    a = shapes(model, plugins, tag_threshold=0.0)
    prompts = a.entity_prompts()
    assert prompts.shape == (60, model.embed_dim)  # 10 colours x 6 shapes
    target = a.entities.index("red circle")
    video = prompts[target : target + 1].detach()
    with torch.no_grad():
        probs = a.entity_probs(video)[0]
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    assert int(probs.argmax()) == target
    tags, scores = a.entity_tags(video.numpy())
    by_name = dict(zip(tags[0], scores[0]))
    assert tags[0][0] in ("red circle", "red", "circle") and scores[0] == sorted(scores[0], reverse=True)
    red_mass = float(sum(p for e, p in zip(a.entities, probs) if "red" in e.split()))
    assert by_name["red"] == pytest.approx(red_mass, abs=1e-5)
    assert by_name["red"] >= by_name["red circle"] and by_name["circle"] >= by_name["red circle"]
    strict = shapes(model, plugins, tag_threshold=1.01)
    assert strict.entity_tags(video.numpy())[0] == [[]]


def test_pem_distils_the_frozen_prompter(model, plugins, retrieval_data, prompter):
    _, _, path = prompter
    a = build(model, plugins, prompter=str(path))  # the vocabulary: the one the prompter's checkpoint records
    assert a.entities == shape_entities() and a.entity_head.out_features == 60
    a.train()
    feats = torch.randn(4, 8, model.embed_dim)
    loss, logs = a.training_loss(TrainBatch(feats, None, ["a", "b", "c", "d"], torch.eye(4, dtype=torch.bool)))
    loss.backward()
    assert {"vtc", "pem"} <= set(logs) and a.entity_head.weight.grad.abs().sum() > 0
    assert not any(k.startswith("_prompter") for k in a.state_dict())
    assert all(p.grad is None for p in a.prompter_model().parameters())


def frames_batch(stream_id, n, final=True, seed=0):
    frames = np.random.default_rng(seed).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return FrameBatch(stream_id, f"file:///{stream_id}", np.arange(n, dtype=np.float64), frames, final=final)


@pytest.fixture(scope="module")
def tagged_db(model, plugins, prompter, tmp_path_factory):
    from streamvl.storage.store import CLIPS, FRAMES, Store

    _, _, path = prompter
    config = IndexConfig(adapters=["meanpool", "alpro"], model=SPEC, clips={"window": 4, "stride": 2},
                         adapter_options={"alpro": {"checkpoint": str(path), "tag_threshold": 0.05,
                                                    "entities": shape_entities()}})
    stage = EncodeStage(config, plugins, model)
    db = str(tmp_path_factory.mktemp("tagdb") / "db")
    store = Store(db)
    for i, sid in enumerate(["s1", "s2", "s3"]):
        frames, clips, _ = stage.process([frames_batch(sid, 8, seed=i)])
        store.upsert(FRAMES, frames)
        store.upsert(CLIPS, clips)
        store.record_state(StreamState(sid, f"file:///{sid}", Status.DONE, model=model.name))
    return db, clips, str(path)


def test_tag_columns_come_from_the_prompter_of_alpro_clips(tagged_db):
    _, clips, _ = tagged_db
    rows = clips.to_pylist()
    assert {"tags", "tag_scores"} <= set(clips.schema.names)
    assert all(r["tags"] == [] for r in rows if r["adapter"] == "meanpool")
    alpro = [r for r in rows if r["adapter"] == "alpro"]
    assert alpro and any(r["tags"] for r in alpro)
    assert all(len(r["tags"]) == len(r["tag_scores"]) and r["tag_scores"] == sorted(r["tag_scores"], reverse=True) for r in alpro)


def test_search_filters_on_tags(tagged_db, plugins):
    from streamvl.search import query
    from streamvl.storage.store import Store

    db, _, path = tagged_db
    rows = [r for r in Store(db).clip_windows("alpro")]
    all_tags = Store(db).read("clips").to_pylist()
    tag = next(t for r in all_tags if r["adapter"] == "alpro" for t in r["tags"])
    carrying = {(r["stream_id"], r["start"]) for r in all_tags if r["adapter"] == "alpro" and tag in r["tags"]}
    assert 0 < len(carrying) <= len(rows)
    opts = {"checkpoint": path, "tag_threshold": 0.05, "entities": shape_entities()}
    hits = query.search("a red circle", db, k=50, adapter="alpro", tags=[tag], adapter_options=opts, plugins=plugins)
    assert hits and all(any(s == h.stream_id and h.start <= st < h.end for s, st in carrying) for h in hits)
    assert all(tag in h.extra["tags"] for h in hits)
    assert query.search("a red circle", db, adapter="alpro", tags=["no-such-tag"], adapter_options=opts, plugins=plugins) == []
    from streamvl.cli import main

    out = CliRunner().invoke(main, ["search", "a red circle", "--db", db, "--adapter", "alpro", "--tag", tag, "--checkpoint", path,
                                    "--option", "tag_threshold=0.05", "--option", f"entities={','.join(shape_entities())}",
                                    "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)) == len(hits[:10])


def test_tag_filter_without_a_tags_column_is_a_clear_error(tmp_path):
    from streamvl.storage.schema import clips_schema
    from streamvl.storage.store import Store

    store = Store(str(tmp_path / "db"))
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(4, np.float32)), 4)
    store.upsert("clips", pa.table({"stream_id": ["a"], "start": [0.0], "end": [1.0], "adapter": ["m"], "embedding": emb,
                                    "model": ["x"]}, schema=clips_schema(4)))
    with pytest.raises(StoreError, match="no 'tags' column"):
        store.search_clips(np.ones(4, np.float32), 3, adapter="m", tags=["red"])


# ---------------------------------------------------------------- the vocabulary is the user's


def index_rows(model, plugins, config) -> list[dict]:
    """alpro's clip rows of one random 8-frame stream, through the EncodeStage and the tag column provider."""
    _, clips, _ = EncodeStage(config, plugins, model).process([frames_batch("v", 8, seed=5)])
    return [r for r in clips.to_pylist() if r["adapter"] == "alpro"]


def test_without_a_vocabulary_no_tags_are_written(model, plugins):
    a = build(model, plugins, tag_threshold=0.0)
    assert a.entities == [] and a.entity_head is None
    assert "entity_head.weight" not in a.state_dict()
    assert a.entity_tags(np.ones((3, model.embed_dim), np.float32)) == ([[], [], []], [[], [], []])
    config = IndexConfig(adapters=["alpro"], model=SPEC, clips={"window": 4, "stride": 2},
                         adapter_options={"alpro": {"tag_threshold": 0.0}})
    rows = index_rows(model, plugins, config)
    assert len(rows) >= 2 and all(r["tags"] == [] and r["tag_scores"] == [] for r in rows)


def test_a_vocabulary_file_named_in_the_config_tags_from_it_only(model, plugins, tmp_path):
    from streamvl.config import load_config

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# what the camera sees\nperson\nred   car\n\ndog  # pets too\nperson\n")
    toml = tmp_path / "index.toml"
    toml.write_text(f'model = "{SPEC}"\nadapters = ["alpro"]\n[clips]\nwindow = 4\nstride = 2\n'
                    f'[adapter_options.alpro]\nentities = "{vocab}"\ntag_threshold = 0.0\n')
    config = load_config(toml)
    assert build(model, plugins, **config.adapter_options["alpro"]).entities == ["person", "red car", "dog"]
    rows = index_rows(model, plugins, config)
    allowed = {"person", "red car", "dog", "red", "car"}  # entities, and the words of multi-word entities
    assert rows and all(r["tags"] for r in rows)  # threshold 0: every entity and word is a tag
    assert all(set(r["tags"]) == allowed and len(r["tags"]) == len(r["tag_scores"]) for r in rows)


def test_entities_option_forms(model, plugins, tmp_path):
    from streamvl_alpro import read_entities

    assert read_entities(None) == read_entities("") == read_entities(" , ") == []
    assert read_entities("car, red  car,car,dog") == ["car", "red car", "dog"]
    assert read_entities(["b", "a", "b"]) == ["b", "a"]
    f = tmp_path / "v.lst"
    f.write_text("x\ny\n")
    assert read_entities(str(f)) == ["x", "y"]
    with pytest.raises(ValueError, match="does not exist"):
        build(model, plugins, entities=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="entities"):  # the declared type: a string, a list of strings or none
        build(model, plugins, entities=3)
    # the resolved vocabulary is what a checkpoint records
    a = build(model, plugins, entities=str(f))
    assert a.options["entities"] == ["x", "y"]


def test_checkpoints_from_before_the_user_vocabulary_still_load(model, plugins, tmp_path):
    """A checkpoint written when alpro's default vocabulary was the shapes world's: its JSON says
    entities null and its entity head has 60 rows. It loads as it is (no tags), or with a vocabulary."""
    old = shapes(model, plugins)
    path = old.save(tmp_path / "old.safetensors")
    config = json.loads(path.with_suffix(".json").read_text())
    config["options"]["entities"] = None  # what the old code wrote
    path.with_suffix(".json").write_text(json.dumps(config))
    plain = build(model, plugins, checkpoint=str(path))
    assert plain.entities == [] and plain.entity_head.out_features == 60  # the head keeps its trained size
    torch.testing.assert_close(plain.state_dict()["video_proj.weight"], old.state_dict()["video_proj.weight"])
    video = torch.nn.functional.normalize(torch.randn(2, model.embed_dim), dim=-1)
    assert plain.entity_tags(video)[0] == [[], []]
    tagged = build(model, plugins, checkpoint=str(path), entities="cat, dog", tag_threshold=0.0)
    assert tagged.entity_head.out_features == 60
    assert all(set(t) == {"cat", "dog"} for t in tagged.entity_tags(video)[0])
    with pytest.raises(ValueError, match="entity"):  # PEM needs the head to match the vocabulary
        student = build(model, plugins, checkpoint=str(path), entities="cat, dog", prompter=str(path))
        student.training_loss(TrainBatch(torch.randn(2, 4, model.embed_dim), None, ["a", "b"], torch.eye(2, dtype=torch.bool)))
