"""The int8 image tower: its fp32 check, and refusal (never silent degradation) where it cannot run."""

from __future__ import annotations

import numpy as np
import pytest

from streamvl.errors import ModelLoadError
from streamvl.models import int8, precision
from streamvl.models.loading import _with_int8, load_model

VNNI = frozenset({"avx512f", "avx512_vnni"})
OLD_CPU = frozenset({"sse4_2", "avx2"})


def _never(frames: np.ndarray) -> np.ndarray:
    raise AssertionError("the probe must not run")


def _unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 16))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_int8_is_refused_without_the_cpu_feature_or_the_stack():
    assert precision.native_int8(VNNI) and not precision.native_int8(OLD_CPU)
    with pytest.raises(ModelLoadError, match="AVX512-VNNI"):
        precision.choose_int8(_never, _never, 32, "m@x", flags=OLD_CPU)
    with pytest.raises(ModelLoadError, match="needs torchao"):
        precision.choose_int8(_never, _never, 32, "m@x", flags=VNNI, missing="int8 needs torchao")


def test_int8_that_disagrees_is_refused():
    with pytest.raises(ModelLoadError, match="disagree"):
        precision.choose_int8(lambda f: _unit(8, 1), lambda f: _unit(8, 0), 32, "m@x", flags=VNNI)
    same = _unit(8, 0)
    ok = precision.choose_int8(lambda f: same + 1e-4, lambda f: same, 32, "m@x", flags=VNNI)
    assert ok.precision == "int8" and ok.probe_cosine > 0.999


def test_auto_never_takes_int8():
    model = load_model("streamvl-tiny@random:0", "auto")
    assert model.precision.precision in ("bf16", "fp32") and model.visual_int8 is None


def test_tiny_model_without_the_cpu_feature_refuses_int8_before_compiling():
    fp32 = load_model("streamvl-tiny@random:0")
    with pytest.raises(ModelLoadError, match="AVX512-VNNI"):
        _with_int8(fp32, flags=OLD_CPU)


@pytest.mark.timeout(600)
@pytest.mark.skipif(int8.available() is not None or not precision.native_int8(),
                    reason="no int8 stack (torchao / x86 engine) or no VNNI/AMX-INT8 on this CPU")
def test_int8_tower_matches_fp32_on_a_fixed_batch():
    fp32 = load_model("streamvl-tiny@random:0")
    fast = load_model("streamvl-tiny@random:0", "int8")
    assert fast.precision.precision == "int8" and fast.precision.probe_cosine >= precision.MIN_COSINE
    assert fast.model is fp32.model and fp32.visual_int8 is None
    frames = precision.probe_frames(fp32.image_size, count=70, seed=7)  # not the probe batch; > one 64-chunk
    a, b = fp32.encode_images(frames).numpy(), fast.encode_images(frames).numpy()
    assert b.dtype == np.float32 and b.shape == a.shape
    assert precision.min_cosine(a, b) >= 0.99
    assert not np.array_equal(a, b)  # it really ran quantised


@pytest.mark.timeout(600)
@pytest.mark.skipif(int8.available() is not None or not precision.native_int8(),
                    reason="no int8 stack (torchao / x86 engine) or no VNNI/AMX-INT8 on this CPU")
def test_int8_tower_never_recompiles_after_load():
    """Any batch size and any input layout runs the graph compiled (frozen) at load: a recompile inside
    indexing would cost tens of seconds and, unfrozen, run slower than fp32."""
    import torch

    fast = load_model("streamvl-tiny@random:0", "int8")
    size = fast.image_size
    frames = precision.probe_frames(size, count=64, seed=5)  # exactly one chunk: no padding (no copy) in the tower
    pixels = fast.preprocess(frames)
    assert not pixels.is_contiguous()  # HWC frames come out channels-last, unlike the padded load-time batch
    with torch.compiler.set_stance("fail_on_recompile"):
        full = fast.encode_pixels(pixels)
        few = fast.encode_pixels(pixels[:3].contiguous())
        bf16 = fast.encode_pixels(pixels[:5].to(torch.bfloat16))
    assert full.shape == (64, few.shape[1]) and few.shape[0] == 3 and bf16.shape[0] == 5
    assert precision.min_cosine(full[:3].numpy(), few.numpy()) > 0.999
