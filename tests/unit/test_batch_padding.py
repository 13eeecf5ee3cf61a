"""The image tower runs at a few padded batch sizes (streamvl.models.loading.padded_batch): every
distinct batch size costs the CPU kernels memory that is never given back (issue 43, goal 5)."""

from __future__ import annotations

import numpy as np
import torch

from streamvl.models.loading import PAD_STEP, load_model, padded_batch


def test_a_live_encoder_sees_eight_batch_sizes_at_most():
    sizes = {padded_batch(n) for n in range(1, 65)}
    assert sizes == {1, 2, 4, 8, 16, 32, 48, 64}
    assert all(padded_batch(n) >= n and padded_batch(n) - n < max(PAD_STEP, n) for n in range(1, 300))
    assert padded_batch(0) == 0 and padded_batch(17) == 32 and padded_batch(100) == 112


def test_padding_rows_are_dropped_and_change_no_embedding(monkeypatch):
    model = load_model("streamvl-tiny@random:0")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(5, model.image_size, model.image_size, 3), dtype=np.uint8)
    seen = []
    run = model._encode_exact
    monkeypatch.setattr(model, "_encode_exact", lambda pixels: seen.append(len(pixels)) or run(pixels))
    got = model.encode_images(frames)
    assert seen == [8] and got.shape == (5, model.embed_dim)
    one_by_one = torch.cat([model.encode_images(frames[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(got, one_by_one, atol=1e-5, rtol=0)
    assert seen[1:] == [1] * 5
