"""The query text tower's precision guard: int8 only when it agrees with fp32 on the probe texts,
fp32 (with the reason) otherwise; an explicit int8 that fails is an error, not a silent fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from streamvl.errors import ModelLoadError
from streamvl.models import textprecision

TINY = "streamvl-tiny@random:0"


class FakeTextModel:
    """encode_text = model.transformer applied to a fixed per-text vector (what the guard sees of a LoadedModel)."""

    def __init__(self) -> None:
        import torch

        torch.manual_seed(0)
        self.model = torch.nn.Module()
        self.model.transformer = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
        self.calls = 0

    def encode_text(self, texts):
        import torch

        self.calls += 1
        x = torch.stack([torch.from_numpy(np.random.default_rng(abs(hash(t)) % 2**32).normal(size=16).astype(np.float32))
                         for t in texts])
        with torch.no_grad():
            return torch.nn.functional.normalize(self.model.transformer(x), dim=-1)


def noisy(scale: float):
    """A 'quantiser' that makes the tower add output noise of this size, in place; returns the undo."""
    import torch

    def quantise(tower):
        gen = torch.Generator().manual_seed(1)
        hook = tower.register_forward_hook(lambda m, i, y: y + scale * torch.randn(y.shape, generator=gen) * y.abs().mean())
        return hook.remove

    return quantise


def test_int8_is_kept_when_the_probe_agrees_with_fp32():
    fake = FakeTextModel()
    fp32 = fake.model.transformer
    before = fake.encode_text(["a red car"]).numpy()
    choice = textprecision.with_int8_text(fake, "auto", quantise=noisy(0.001), missing=lambda: None)
    assert choice.precision == "int8" and choice.probe_cosine >= textprecision.MIN_COSINE and "probe cosine" in choice.reason
    after = fake.encode_text(["a red car"]).numpy()
    assert fake.model.transformer is fp32 and not np.array_equal(after, before)  # changed in place, kept


@pytest.mark.parametrize("requested", ["auto", "int8"])
def test_a_disagreeing_int8_tower_is_dropped(requested, caplog):
    fake = FakeTextModel()
    fp32 = fake.model.transformer
    before = fake.encode_text(["a red car"])
    if requested == "int8":
        with pytest.raises(ModelLoadError, match="int8 refused: int8 probe cosine"):
            textprecision.with_int8_text(fake, requested, quantise=noisy(3.0), missing=lambda: None)
    else:
        with caplog.at_level(logging.WARNING, logger=textprecision.__name__):
            choice = textprecision.with_int8_text(fake, requested, quantise=noisy(3.0), missing=lambda: None)
        assert choice.precision == "fp32" and choice.probe_cosine is None
        assert "probe cosine" in choice.reason and f"< {textprecision.MIN_COSINE}" in choice.reason
        assert "stays fp32" in caplog.text
    assert fake.model.transformer is fp32  # the fp32 tower is back, embeddings as before
    assert np.array_equal(fake.encode_text(["a red car"]).numpy(), before.numpy())


def test_a_failing_quantiser_or_missing_engine_falls_back_under_auto_only():
    def broken(tower):
        raise RuntimeError("no kernel")

    fake = FakeTextModel()
    fp32 = fake.model.transformer
    choice = textprecision.with_int8_text(fake, "auto", quantise=broken, missing=lambda: None)
    assert choice.precision == "fp32" and "RuntimeError: no kernel" in choice.reason and fake.model.transformer is fp32
    choice = textprecision.with_int8_text(fake, "auto", quantise=broken, missing=lambda: "no x86 engine")
    assert choice.precision == "fp32" and "no x86 engine" in choice.reason
    with pytest.raises(ModelLoadError, match="no x86 engine"):
        textprecision.with_int8_text(fake, "int8", quantise=broken, missing=lambda: "no x86 engine")


def test_fp32_requested_runs_no_probe_and_unknown_precisions_are_refused():
    fake = FakeTextModel()
    choice = textprecision.with_int8_text(fake, "fp32", quantise=noisy(3.0), missing=lambda: None)
    assert choice.precision == "fp32" and choice.reason == "requested" and fake.calls == 0
    with pytest.raises(ModelLoadError, match="unknown text precision 'bf17'"):
        textprecision.with_int8_text(fake, "bf17")


def test_real_tiny_model_int8_text_tower_is_quantised_and_close_to_fp32():
    import torch

    from streamvl.models.textonly import load_text_model

    fp32, int8 = load_text_model(TINY, "fp32"), load_text_model(TINY, "int8")
    assert int8.text_precision.precision == "int8" and fp32.text_precision.precision == "fp32"
    fc = int8.model.transformer.resblocks[0].mlp.c_fc
    assert isinstance(fc, torch.ao.nn.quantized.dynamic.Linear)
    texts = ["a small blue circle moves left", "nothing", "two red squares meet in the middle of the frame"]
    a, b = fp32.encode_text(texts).numpy(), int8.encode_text(texts).numpy()
    cos = (a * b).sum(1)
    assert cos.min() >= textprecision.MIN_COSINE and not np.array_equal(a, b)
    assert load_text_model(TINY).text_precision.precision in ("int8", "fp32")  # auto: whichever passed the probe


def test_int8_transformer_undo_restores_the_fp32_tower_bit_for_bit():
    import torch

    from streamvl.models.textonly import load_text_model

    model = load_text_model(TINY, "fp32")
    texts = ["a small blue circle moves left", "x"]
    before = model.encode_text(texts)
    undo = textprecision.int8_transformer(model.model.transformer)
    assert not torch.equal(model.encode_text(texts), before)
    undo()
    assert type(model.model.transformer.resblocks[0].mlp.c_fc) is torch.nn.Linear
    assert torch.equal(model.encode_text(texts), before)
    assert type(model.model.transformer.resblocks[0].attn) is torch.nn.MultiheadAttention


def test_int8_text_tower_quantises_the_attention_projections_too():
    import torch

    from streamvl.models.textonly import load_text_model

    attn = load_text_model(TINY, "int8").model.transformer.resblocks[0].attn
    assert type(attn).__name__ == "SplitAttention"
    assert isinstance(attn.in_proj, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(attn.out_proj, torch.ao.nn.quantized.dynamic.Linear)
