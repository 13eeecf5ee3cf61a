"""The compact weight format: exact rebuild, digest checks, and the Adam property it relies on."""

from __future__ import annotations

import json

import pytest
import torch

from streamvl.models import weights
from streamvl.models.loading import load_model


def trained_like_state(seed: int = 5) -> dict[str, torch.Tensor]:
    """A streamvl-tiny state dict whose token embedding is the seeded init with a few rows moved."""
    state = {k: v.clone() for k, v in load_model("streamvl-tiny@random:1").model.state_dict().items()}
    token = weights.seeded_token_embedding(seed, *state[weights.TOKEN_KEY].shape)
    token[[3, 320, 49406]] += 0.5
    state[weights.TOKEN_KEY] = token
    return state


def test_seeded_init_is_deterministic_and_seed_dependent():
    a, b = weights.seeded_token_embedding(1, 100, 8), weights.seeded_token_embedding(1, 100, 8)
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert not torch.equal(a, weights.seeded_token_embedding(2, 100, 8))
    assert 0.015 < float(weights.seeded_token_embedding(0, 1000, 64).std()) < 0.025


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_roundtrip_rebuilds_full_weights(tmp_path, dtype):
    state = trained_like_state()
    weights.save(tmp_path / "m", state, init_seed=5, dtype=dtype, extra={"name": "t"})
    loaded, record = weights.load(tmp_path / "m")
    assert record["token_embedding"]["rows_stored"] == 3 and record["name"] == "t"
    assert torch.equal(loaded[weights.TOKEN_KEY], state[weights.TOKEN_KEY])  # token rows always exact
    assert set(loaded) == set(state) and all(v.dtype == torch.float32 for v in loaded.values())
    for k, v in state.items():
        expected = v if dtype == "float32" or k == weights.TOKEN_KEY else v.half().float()
        assert torch.equal(loaded[k], expected), k
    assert weights.state_digest(loaded) == record["sha256"]
    stored_bytes = (tmp_path / "m.safetensors").stat().st_size
    assert stored_bytes < 0.3 * sum(v.numel() * 4 for v in state.values())  # the embedding is not stored


def test_tampered_tensor_changes_the_digest(tmp_path):
    from safetensors.torch import load_file, save_file

    weights.save(tmp_path / "m", trained_like_state(), init_seed=5, dtype="float32")
    tensors = load_file(str(tmp_path / "m.safetensors"))
    tensors["ln_final.weight"][0] += 1e-3
    save_file(tensors, str(tmp_path / "m.safetensors"))
    loaded, record = weights.load(tmp_path / "m")
    assert weights.state_digest(loaded) != record["sha256"]


def test_wrong_init_seed_changes_the_digest(tmp_path):
    weights.save(tmp_path / "m", trained_like_state(), init_seed=5)
    record = json.loads((tmp_path / "m.json").read_text())
    record["token_embedding"]["seed"] = 6
    (tmp_path / "m.json").write_text(json.dumps(record))
    loaded, record = weights.load(tmp_path / "m")
    assert weights.state_digest(loaded) != record["sha256"]


def test_malformed_record_is_rejected():
    with pytest.raises(weights.CompactFormatError, match="format"):
        weights.unpack({}, {"format": "something-else"})


def test_adamw_without_decay_leaves_unused_rows_bit_identical():
    """The property the compact format relies on: zero-gradient rows never move under Adam, wd=0."""
    emb = torch.nn.Embedding(50, 8)
    with torch.no_grad():
        emb.weight.copy_(weights.seeded_token_embedding(0, 50, 8))
    opt = torch.optim.AdamW([{"params": [emb.weight], "weight_decay": 0.0}], lr=1e-2)
    for step in range(5):
        ids = torch.tensor([[1, 7, 7, 20]]) if step % 2 else torch.tensor([[1, 3]])
        opt.zero_grad()
        (emb(ids) ** 2).sum().backward()
        torch.nn.utils.clip_grad_norm_(emb.parameters(), 1.0)
        opt.step()
    assert weights.changed_rows(emb.weight.detach(), 0).tolist() == [1, 3, 7, 20]
