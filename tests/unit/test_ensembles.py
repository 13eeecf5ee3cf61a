"""Adapter ensembles (streamvl.adapters.ensembles): construction, averaged embeddings, independent members, checkpoints."""

from __future__ import annotations

from typing import Sequence

import pytest
import torch
from torch import nn

from streamvl.adapters.blocks import TorchAdapter, TrainBatch
from streamvl.training.datasets import ShapesOptions, load_task
from streamvl.adapters.ensembles import Ensemble, ensemble_factory
from streamvl.pipeline.features import FeatureStore
from streamvl.models.loading import load_model
from streamvl.training.train import TrainConfig, prepare, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_model("streamvl-tiny@random:0")


def prompt(model, plugins, **options):
    return plugins.adapter("prompt").build(model, {"dropout": 0.0, **options})


def batch(model, b: int = 3, t: int = 6) -> TrainBatch:
    g = torch.Generator().manual_seed(3)
    feats = torch.nn.functional.normalize(torch.randn(b, t, model.embed_dim, generator=g), dim=-1)
    return TrainBatch(feats, None, ["moves left", "grows", "shrinks"], torch.eye(b, 3, dtype=torch.bool), class_texts=True)


@pytest.mark.contract("VideoAdapter.name", "Trainable.parameter_counts")
def test_one_member_is_the_plain_adapter_and_more_are_distinct_copies(model, plugins):
    plain = prompt(model, plugins)
    assert type(plain).__name__ == "PromptAdapter" and "members" not in plain.options
    ens = prompt(model, plugins, members=3)
    assert isinstance(ens, Ensemble) and ens.name == "prompt" and len(ens.members) == 3
    assert all(type(m) is type(plain) for m in ens.members)
    first = [m.temporal.positions.detach() for m in ens.members]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])  # own initialisations
    assert ens.parameter_counts()["trainable"] == 3 * plain.parameter_counts()["trainable"]


@pytest.mark.parametrize("bad", [0, -2, 1.5, "two", True])
def test_members_must_be_a_whole_number(model, plugins, bad):
    with pytest.raises(ValueError, match="members"):
        prompt(model, plugins, members=bad)


def test_embeddings_are_the_normalised_means_of_the_members(model, plugins):
    ens = prompt(model, plugins, members=3)
    feats = batch(model).features
    with torch.no_grad():
        v, t = ens.video_embed(feats), ens.text_embed(["moves left", "a red star grows"])
        vm = torch.stack([m.video_embed(feats) for m in ens.members]).mean(0)
        tm = torch.stack([m.text_embed(["moves left", "a red star grows"]) for m in ens.members]).mean(0)
    assert v.shape == (3, model.embed_dim) and t.shape == (2, model.embed_dim)
    torch.testing.assert_close(v, vm / vm.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(t, tm / tm.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(ens.encode_video(feats), v)
    torch.testing.assert_close(ens.scores(feats, None, ["moves left"]), v @ ens.text_embed(["moves left"]).t())


def member_grads(member) -> list:
    return [None if p.grad is None else p.grad.clone() for p in member.trainable_parameters()]


def assert_same_grads(want: list, member) -> None:
    for g, p in zip(want, member.trainable_parameters()):
        if g is None:
            assert p.grad is None  # the proposal head takes no part in recognition
        else:
            torch.testing.assert_close(g, p.grad)


def test_each_member_gets_the_gradient_it_would_get_alone(model, plugins):
    ens = prompt(model, plugins, members=2)
    ens.train()
    b = batch(model)
    loss, logs = ens.training_loss(b)
    loss.backward()
    together = member_grads(ens.members[1])
    assert sum(g is not None for g in together) >= 3  # prompt vectors, temporal blocks, temperature
    ens.zero_grad(set_to_none=True)
    ens.members[1].training_loss(b)[0].backward()
    assert_same_grads(together, ens.members[1])
    assert all(p.grad is None for p in ens.members[0].trainable_parameters())
    assert "nce" in logs and not ens.logit_scale.requires_grad


@pytest.mark.contract("Trainable.clip_gradients")
def test_gradients_are_clipped_per_member(model, plugins):
    ens = prompt(model, plugins, members=2)
    for i, m in enumerate(ens.members):
        for p in m.trainable_parameters():
            p.grad = torch.full_like(p, 10.0 if i == 0 else 1e-6)
    small = [p.grad.clone() for p in ens.members[1].trainable_parameters()]
    ens.clip_gradients(1.0)
    norm0 = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ens.members[0].trainable_parameters()]))
    assert norm0 == pytest.approx(1.0, rel=1e-4)
    for before, p in zip(small, ens.members[1].trainable_parameters()):
        torch.testing.assert_close(before, p.grad)  # a joint clip would have scaled these down too


def test_trains_saves_and_loads_from_the_checkpoint_alone(model, plugins, tmp_path):
    torch.manual_seed(0)
    ens = prompt(model, plugins, members=2)
    task = load_task("shapes:closed_set", image_size=model.image_size, shapes=ShapesOptions(train_per_class=1, test_per_class=1))
    data = prepare(model, task.train, FeatureStore(None, model), needs_frames=False)
    before = [m.prefix.detach().clone() for m in ens.members]
    report = train(plugins.adapter("prompt"), ens, task, data, TrainConfig(steps=6, batch_size=8, warmup=2, log_every=0), log=lambda m: None)
    assert report.backbone_unchanged
    assert all(not torch.equal(b, m.prefix) for b, m in zip(before, ens.members))
    path = ens.save(tmp_path / "ens.safetensors")
    again = plugins.adapter("prompt").build(model, {"checkpoint": str(path)})
    assert isinstance(again, Ensemble) and len(again.members) == 2
    feats = batch(model).features
    torch.testing.assert_close(again.encode_video(feats), ens.encode_video(feats))
    torch.testing.assert_close(again.encode_text(["grows"]), ens.encode_text(["grows"]))


def test_prompt_ensembles_keep_the_proposal_head_and_average_actionness(model, plugins):
    ens = prompt(model, plugins, members=2)
    x = torch.randn(2, 16, model.embed_dim)
    torch.testing.assert_close(ens.actionness(x), (ens.members[0].actionness(x) + ens.members[1].actionness(x)) / 2)
    assert float(ens.proposal_loss(x, torch.zeros(2, 16)).detach()) > 0


class PairScored(TorchAdapter):
    """A stand-in for adapters whose score depends on the text (litevl, xclip): no proposal head."""

    name = "pair-scored"

    def build(self) -> None:
        self.w = nn.Parameter(torch.randn(()))

    def video_embed(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.normalize(features.mean(1), dim=-1)

    def scores(self, features: torch.Tensor, frames: torch.Tensor | None, texts: Sequence[str]) -> torch.Tensor:
        return self.w * super().scores(features, frames, texts)


def test_text_dependent_scores_are_the_members_mean(model):
    ens = ensemble_factory(PairScored)(model, {"members": 3})
    assert not hasattr(ens, "actionness")
    feats = batch(model).features
    with torch.no_grad():
        want = torch.stack([m.scores(feats, None, ["grows", "shrinks"]) for m in ens.members]).mean(0)
        torch.testing.assert_close(ens.scores(feats, None, ["grows", "shrinks"]), want)


def test_an_ensemble_checkpoint_indexes_and_searches_like_one_adapter(model, plugins, tmp_path):
    import numpy as np
    import pyarrow as pa

    from streamvl.search import query
    from streamvl.config import IndexConfig
    from streamvl.pipeline.encode import EncodeStage
    from streamvl.storage.store import CLIPS, FRAMES, Store
    from streamvl.types import FrameBatch, Status, StreamState

    torch.manual_seed(1)
    ens = prompt(model, plugins, members=2)
    path = ens.save(tmp_path / "ens.safetensors")
    options = {"prompt": {"checkpoint": str(path)}}
    config = IndexConfig(adapters=["prompt"], adapter_options=options, model="streamvl-tiny@random:0",
                         clips={"window": 4, "stride": 4})
    pixels = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    frames, clips, _ = EncodeStage(config, plugins, model).process(
        [FrameBatch("p", "file:///p", np.arange(8, dtype=np.float64), pixels, final=True)])
    rows = clips.filter(pa.compute.equal(clips["adapter"], "prompt")).to_pylist()
    feats = np.array(frames["embedding"].to_pylist(), np.float32)
    want = ens.encode_video(torch.from_numpy(feats[None, 4:8])).numpy()[0]
    np.testing.assert_allclose(next(r["embedding"] for r in rows if r["start"] == 4.0), want, atol=1e-5)
    store = Store(str(tmp_path / "db"))
    store.upsert(FRAMES, frames)
    store.upsert(CLIPS, clips)
    store.record_state(StreamState("p", "file:///p", Status.DONE, model=model.name))
    hits = query.search("a red circle grows", str(tmp_path / "db"), k=2, adapter="prompt",
                        adapter_options=options["prompt"], plugins=plugins)
    q = ens.encode_text(["a red circle grows"]).numpy()[0]
    assert hits[0].score == pytest.approx(max(float(np.dot(q, r["embedding"])) for r in rows), abs=1e-4)


def test_train_and_evaluate_commands_take_members(tmp_path):
    import json

    from click.testing import CliRunner

    from streamvl.cli import main

    ckpt = tmp_path / "ens.safetensors"
    common = ["--model", "streamvl-tiny@random:0", "--train-per-class", "1", "--test-per-class", "1",
              "--cache", str(tmp_path / "cache"), "--threads", "1"]
    out = CliRunner().invoke(main, ["train", "--adapter", "prompt", "--data", "shapes:closed_set", "--out", str(ckpt),
                                    "--steps", "2", "--batch-size", "4", "--option", "members=2", *common])
    assert out.exit_code == 0, out.output
    config = json.loads(ckpt.with_suffix(".json").read_text())
    assert config["options"]["members"] == 2 and config["train"]["backbone_unchanged"]
    out = CliRunner().invoke(main, ["evaluate", "--adapter", "prompt", "--data", "shapes:closed_set",
                                    "--checkpoint", str(ckpt), *common])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["metrics"]["clips"] == 13
