import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamvl.errors import ModelLoadError
from streamvl.models import loading as models
from streamvl.models.loading import ASSET_DIR, DEFAULT_SPEC, SHIPPED, load_model, parse_spec


def test_parse_spec():
    assert parse_spec("ViT-B-32@laion2b_s34b_b79k").kind == "tag"
    assert parse_spec("ViT-B-32@/w/model.safetensors").kind == "file"
    assert parse_spec("streamvl-tiny@random:7").value == "7"
    assert parse_spec("default").text == DEFAULT_SPEC
    for bad in ("ViT-B-32", "@x", "ViT-B-32@random:x"):
        with pytest.raises(ModelLoadError, match="spec"):
            parse_spec(bad)


def test_random_default_is_loud_and_seeded():
    model = load_model("streamvl-tiny@random:0")
    assert model.random_weights and "RANDOM" in model.name and model.warning()
    assert model.meta()["streamvl.weights"] == "RANDOM"
    assert load_model.__wrapped__("streamvl-tiny@random:0").weights_sha256 == model.weights_sha256  # same seed, same weights
    assert load_model.__wrapped__("streamvl-tiny@random:1").weights_sha256 != model.weights_sha256


def test_frozen_and_normalised_embeddings():
    model = load_model("streamvl-tiny@random:0")
    assert not any(p.requires_grad for p in model.model.parameters())
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    emb = model.encode_images(frames)
    assert emb.shape == (5, model.embed_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert model.encode_text(["a red circle", "a blue star"]).shape == (2, model.embed_dim)


def test_preprocess_uses_model_mean_std_and_resizes():
    model = load_model("streamvl-tiny@random:0")
    grey = np.full((2, 64, 64, 3), 128, np.uint8)
    x = model.preprocess(grey)
    expected = (128 / 255 - torch.tensor(model.mean)) / torch.tensor(model.std)
    assert torch.allclose(x[0, :, 0, 0], expected, atol=1e-5)
    assert model.preprocess(np.zeros((1, 90, 160, 3), np.uint8)).shape == (1, 3, 64, 64)


def test_local_safetensors_roundtrip(tmp_path):
    from safetensors.torch import save_file

    source = load_model("streamvl-tiny@random:3")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    loaded = load_model(f"streamvl-tiny@{path}")
    assert loaded.weights_sha256 == source.weights_sha256 and not loaded.random_weights


@pytest.mark.parametrize("spec, needle", [
    ("streamvl-tiny@/nonexistent/w.safetensors", "not found"),
    ("no-such-arch@random", "unknown architecture"),
    ("ViT-B-32@no_such_tag", "no pretrained tag"),
])
def test_load_errors_name_the_spec(spec, needle):
    with pytest.raises(ModelLoadError, match=needle) as info:
        load_model(spec)
    assert spec.split("@")[0] in str(info.value)


def test_corrupt_weights_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(f"streamvl-tiny@{bad}")


def test_tag_without_internet_names_spec():
    """The real open_clip download path, offline: a clear ModelLoadError naming the spec."""
    code = "from streamvl.models.loading import load_model\nload_model('ViT-B-32@openai')"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ModelLoadError" in proc.stderr and "'ViT-B-32@openai'" in proc.stderr and "internet" in proc.stderr


SHIPPED_STEM = SHIPPED["streamvl-shapes@v1"]


def test_default_is_the_shipped_pretrained_model():
    spec = parse_spec("default")
    assert (spec.kind, spec.text, spec.value) == ("shipped", "streamvl-shapes@v1", SHIPPED_STEM)
    model = load_model("default")
    assert not model.random_weights and model.warning() is None and model.name == "streamvl-shapes@v1"
    meta = model.meta()
    assert meta["streamvl.weights"] == "shipped" and meta["streamvl.weights_name"] == SHIPPED_STEM
    assert "synthetic" in meta["streamvl.weights_about"] and "streamvl.warning" not in meta
    record = json.loads((ASSET_DIR / f"{SHIPPED_STEM}.json").read_text())
    assert model.weights_sha256 == record["sha256"][:16]
    assert model.image_size == 64 and model.embed_dim == 128
    assert not any(p.requires_grad for p in model.model.parameters())


def test_shipped_assets_are_small_and_not_pickled():
    stems = list(SHIPPED.values())
    files = [ASSET_DIR / f"{stem}{suffix}" for stem in stems for suffix in (".safetensors", ".json")]
    assert all(sum(f.stat().st_size for f in files if f.stem == stem) < 8_000_000 for stem in stems)
    assert sorted(p.name for p in ASSET_DIR.iterdir() if not p.name.startswith(".")) == sorted(f.name for f in files)


def test_motion_model_v2_loads_and_says_what_it_saw():
    model = load_model("streamvl-shapes@v2")
    record = json.loads((ASSET_DIR / f"{SHIPPED['streamvl-shapes@v2']}.json").read_text())
    assert model.weights_sha256 == record["sha256"][:16] and record["training"]["recipe"]["motion_p"] > 0
    assert "exposures" in model.meta()["streamvl.weights_about"]
    assert model.weights_sha256 != load_model("streamvl-shapes@v1").weights_sha256


def test_pose_model_v3_loads_and_says_what_it_saw():
    model = load_model("streamvl-shapes@v3")
    record = json.loads((ASSET_DIR / f"{SHIPPED['streamvl-shapes@v3']}.json").read_text())
    recipe = record["training"]["recipe"]
    assert model.weights_sha256 == record["sha256"][:16] and recipe["init"] == "streamvl-shapes@v2"
    assert recipe["pose_pairs"] > 0 and recipe["motion_p"] > 0 and record["training"]["complete"]
    assert "pose" in model.meta()["streamvl.weights_about"] and "exposures" in model.meta()["streamvl.weights_about"]


@pytest.fixture
def asset_copy(tmp_path, monkeypatch):
    """The shipped files copied to tmp_path, which the loader then reads instead of the package."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(ASSET_DIR / f"{SHIPPED_STEM}{suffix}", tmp_path)
    monkeypatch.setattr(models, "ASSET_DIR", tmp_path)
    return tmp_path


def _edit_json(folder, change):
    path = folder / f"{SHIPPED_STEM}.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_tampered_shipped_weights_are_refused(asset_copy):
    from safetensors.torch import load_file, save_file

    path = asset_copy / f"{SHIPPED_STEM}.safetensors"
    tensors = load_file(str(path))
    tensors["ln_final.weight"][0] += 0.01
    save_file(tensors, str(path))
    with pytest.raises(ModelLoadError, match="sha256") as info:
        load_model.__wrapped__("default")
    assert "streamvl-shapes@v1" in str(info.value)


def test_changed_token_init_seed_is_refused(asset_copy):
    _edit_json(asset_copy, lambda r: r["token_embedding"].update(seed=r["token_embedding"]["seed"] + 1))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model.__wrapped__("default")


def test_edited_architecture_config_is_refused(asset_copy):
    _edit_json(asset_copy, lambda r: r["model_cfg"]["vision_cfg"].update(layers=5))
    with pytest.raises(ModelLoadError, match="architecture config"):
        load_model.__wrapped__("default")


def test_missing_shipped_asset_names_the_spec(asset_copy):
    (asset_copy / f"{SHIPPED_STEM}.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing") as info:
        load_model.__wrapped__("streamvl-shapes@v1")
    assert "streamvl-shapes@v1" in str(info.value)


def test_text_encoding_cuts_padding_without_changing_embeddings():
    """Short texts skip the padded context; the result equals open_clip's full-context encode_text."""
    import torch

    from streamvl.models.loading import _prefix_exact, load_model

    model = load_model("streamvl-tiny@random:0")
    texts = ["x", "a red star", "a small blue circle moves left then right on a checkered background"]
    with torch.inference_mode():
        full = model.model.encode_text(model.tokenizer(texts), normalize=True)
    assert _prefix_exact(model.model, model.tokenizer)
    assert torch.allclose(model.encode_text(texts), full, atol=1e-5)
    assert torch.allclose(model.encode_text(texts[:1]), full[:1], atol=1e-5)  # batch of one short text
    no_mask = type("NotCLIP", (), {"attn_mask": None, "text_pool_type": "argmax"})()
    assert not _prefix_exact(no_mask, model.tokenizer)  # anything else takes open_clip's own path
