"""Pretraining pieces: deterministic static-only data, parameter groups, a two-step run and its export."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from streamvl.models import loading as models

from streamvl.models import weights
from streamvl.lab.pretrain_export import check_token_rows, export
from streamvl.lab.pretrain import ABOUT, PretrainConfig, about, _motion, build_model, pose_variant, initial_model, lr_at, param_groups, sample_batch, train
from streamvl.lab.synthetic import COLOURS, HELD_OUT_COMBOS, MOTION_WORDS, pose_name, reverse_action, reverse_clip, sample_still_scene, tilt
from streamvl.lab.synthetic.world import BACKGROUND_WORDS, HELD_OUT_BACKGROUND

SMALL = PretrainConfig(steps=2, batch=8, eval_every=1000, eval_per_action=1, warmup=1)
ARCH = SMALL.arch


def _words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z-]+", caption))


def test_batches_are_seeded_static_and_never_show_the_held_out_background():
    images, captions = sample_batch(PretrainConfig(batch=64), 3, 64)
    again, captions_again = sample_batch(PretrainConfig(batch=64), 3, 64)
    assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == captions_again
    assert captions != sample_batch(PretrainConfig(batch=64), 4, 64)[1]
    for caption in captions:
        assert not _words(caption) & MOTION_WORDS, caption
        assert BACKGROUND_WORDS[HELD_OUT_BACKGROUND] not in caption, caption


def test_pretrain_domain_has_every_combo_and_the_strict_domain_none_held_out():
    held_out = {f"{c} {s}" for s, c in HELD_OUT_COMBOS}
    captions = [c for step in range(8) for c in sample_batch(PretrainConfig(batch=64), step, 64)[1]]
    assert any(h in c for c in captions for h in held_out)  # the backbone sees every colour of every shape
    strict = [c for step in range(8) for c in sample_batch(PretrainConfig(batch=64, domain="train"), step, 64)[1]]
    assert not any(h in c for c in strict for h in held_out)


def test_greyscale_stills_are_grey_and_name_no_colour():
    images, captions = sample_batch(PretrainConfig(batch=32, grey_p=1.0), 0, 64)
    assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 1], images[..., 2])
    assert all(not _words(c) & set(COLOURS) for c in captions), captions
    colour_images, _ = sample_batch(PretrainConfig(batch=32), 0, 64)
    assert not np.array_equal(colour_images[..., 0], colour_images[..., 1])


def test_motion_share_is_action_captioned_exposures_with_their_reverses():
    cfg = PretrainConfig(batch=32, motion_p=0.5)
    images, captions = sample_batch(cfg, 2, 64)
    assert images.shape == (32, 64, 64, 3) and np.array_equal(images, sample_batch(cfg, 2, 64)[0])
    assert all(not _words(c) & MOTION_WORDS for c in captions[:16]), captions[:16]
    assert all(_words(c) & MOTION_WORDS for c in captions[16:]), captions[16:]
    items = _motion(cfg, np.random.default_rng(0), 40)
    pairs = 0
    for (spec, caption), (nxt, nxt_caption) in zip(items, items[1:]):
        action = spec.events[0].action
        if reverse_action(action) != action and nxt == reverse_clip(spec):
            pairs += 1
            assert nxt.events[0].action == reverse_action(action) and caption != nxt_caption
    assert pairs >= 10


_POSE = re.compile(r" (upright|inverted|tilted (slightly )?to the (left|right))")


def test_pose_pairs_differ_in_one_pose_and_their_captions_in_its_words():
    rng = np.random.default_rng(0)
    pairs = [p for p in (pose_variant(sample_still_scene(rng), rng) for _ in range(60)) if p is not None]
    assert len(pairs) >= 40
    kinds = set()
    for first, second in pairs:
        changed = [(a, b) for a, b in zip(first.objects, second.objects) if a != b]
        assert len(changed) == 1 and pose_name(changed[0][0]) != pose_name(changed[0][1])
        a, b = tilt(changed[0][0]), tilt(changed[0][1])
        mirrored, half_turn = a == pytest.approx(-b), abs(a - b) == pytest.approx(1.0)
        assert mirrored or half_turn, (a, b)
        kinds.add("mirrored" if mirrored else "half turn")
    assert kinds == {"mirrored", "half turn"}
    cfg = PretrainConfig(batch=32, shape_pairs=0.0, pose_pairs=0.5)
    _, captions = sample_batch(cfg, 1, 64)
    for a, b in zip(captions[:16:2], captions[1:16:2]):
        assert a != b and _POSE.sub("", a) == _POSE.sub("", b), (a, b)
    assert all(not _words(c) & MOTION_WORDS for c in captions)
    assert sample_batch(PretrainConfig(batch=32), 1, 64)[1] == sample_batch(PretrainConfig(batch=32, pose_p=0.0), 1, 64)[1]


def test_param_groups_keep_the_token_embedding_free_of_decay():
    model = build_model(ARCH, 0)
    decay, plain = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert any(p is model.token_embedding.weight for p in plain["params"])
    assert not any(p is model.token_embedding.weight for p in decay["params"])
    assert sum(p.numel() for g in (decay, plain) for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_build_model_is_seeded():
    a, b = build_model(ARCH, 4), build_model(ARCH, 4)
    assert weights.state_digest(a.state_dict()) == weights.state_digest(b.state_dict())
    assert torch.equal(a.token_embedding.weight, weights.seeded_token_embedding(4, 49408, 128))


def test_schedule_warms_up_then_decays():
    cfg = PretrainConfig(steps=100, warmup=10, lr=1e-3, min_lr=1e-5)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 99) == pytest.approx(1e-5, rel=0.05)
    assert all(lr_at(cfg, s) >= lr_at(cfg, s + 1) for s in range(10, 99))


def test_short_run_moves_only_seen_token_rows_and_exports_loadably(tmp_path, monkeypatch):
    result = train(SMALL)
    assert result.steps_done == 2 and len(result.history) == 1
    rows = check_token_rows(result.model, SMALL.seed, result.token_ids_seen)
    assert 0 < rows["rows_changed"] <= rows["rows_seen"] < 200
    weights_path, json_path = export(result, SMALL, tmp_path)
    assert weights_path.stat().st_size < 6_000_000
    monkeypatch.setattr(models, "ASSET_DIR", tmp_path)
    monkeypatch.setitem(models.SHIPPED, f"{ARCH}@smoke", weights_path.stem)
    loaded = models.load_model.__wrapped__(f"{ARCH}@smoke")
    as_stored = {k: v.half().float() if v.is_floating_point() and k != weights.TOKEN_KEY else v
                 for k, v in result.model.state_dict().items()}  # float16 storage, token rows exact
    expected = weights.state_digest(as_stored)
    assert weights.state_digest(loaded.model.state_dict()) == expected
    assert not loaded.random_weights and loaded.meta()["streamvl.weights"] == "shipped"


def test_a_motion_recipe_says_so_in_its_export(tmp_path):
    cfg = replace(SMALL, steps=1, motion_p=0.25, name="motion-smoke")
    _, json_path = export(train(cfg), cfg, tmp_path)
    record = json.loads(json_path.read_text())
    assert "exposures" in record["about"] and "from scratch" in record["about"]
    assert record["training"]["recipe"]["motion_p"] == 0.25 and about(SMALL) == ABOUT
    assert "continued from streamvl-shapes@v1" in about(replace(cfg, init="streamvl-shapes@v1"))


def test_a_continued_run_starts_from_its_init_and_exports_with_inherited_token_rows(tmp_path, monkeypatch):
    first = train(SMALL)
    weights_path, _ = export(first, SMALL, tmp_path)
    monkeypatch.setattr(models, "ASSET_DIR", tmp_path)
    monkeypatch.setitem(models.SHIPPED, f"{ARCH}@first", weights_path.stem)
    cfg = replace(SMALL, steps=1, init=f"{ARCH}@first", data_seed=5, name="second", lr=0.0)
    start, moved = initial_model(cfg)
    stored = models.load_model.__wrapped__(f"{ARCH}@first").model.state_dict()
    assert weights.state_digest(start.state_dict()) == weights.state_digest(stored)
    assert moved == set(weights.changed_rows(start.token_embedding.weight.detach(), SMALL.seed).tolist()) and moved
    second = train(cfg)  # lr 0: nothing moves, so every inherited row must be accounted for by `moved`
    assert moved <= second.token_ids_seen
    export(second, cfg, tmp_path / "second")
    assert sample_batch(cfg, 0, 64)[1] == sample_batch(replace(SMALL, seed=5), 0, 64)[1]
