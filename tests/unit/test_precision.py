"""Image-tower precision: the bf16 path, its fp32 check, and how `auto` decides (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from streamvl.models import precision
from streamvl.errors import ModelLoadError
from streamvl.models.loading import load_model

AMX = frozenset({"avx512f", "amx_bf16", "amx_tile"})
OLD_CPU = frozenset({"sse4_2", "avx2", "avx512f"})


def _never(frames: np.ndarray) -> np.ndarray:
    raise AssertionError("the probe must not run")


def _unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 16))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_tile\nbugs\t\t: none\n")
    assert precision.cpu_flags(info) == {"fpu", "sse", "avx512_bf16", "amx_tile"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()
    assert precision.native_bf16(AMX) and not precision.native_bf16(OLD_CPU)


def test_fp32_and_auto_without_native_bf16_skip_the_probe():
    assert precision.choose("fp32", _never, _never, 32, flags=AMX).precision == "fp32"
    choice = precision.choose("auto", _never, _never, 32, flags=OLD_CPU)
    assert choice.precision == "fp32" and "no native bf16" in choice.reason


def test_auto_takes_bf16_only_when_the_probe_agrees():
    same = _unit(8, 0)
    agree = precision.choose("auto", lambda f: same, lambda f: same + 1e-4, 32, flags=AMX)
    assert agree.precision == "bf16" and agree.probe_cosine > 0.999
    disagree = precision.choose("auto", lambda f: _unit(8, 0), lambda f: _unit(8, 1), 32, flags=AMX)
    assert disagree.precision == "fp32" and disagree.probe_cosine < precision.MIN_COSINE


def test_explicit_bf16_that_disagrees_is_refused_not_degraded():
    with pytest.raises(ModelLoadError, match="disagree"):
        precision.choose("bf16", lambda f: _unit(8, 0), lambda f: _unit(8, 1), 32, spec="m@x", flags=AMX)
    with pytest.raises(ModelLoadError, match="unknown precision"):
        precision.choose("int4", _never, _never, 32)


@pytest.mark.parametrize("spec", ["streamvl-tiny@random:0", "default"])
def test_bf16_tower_matches_fp32_and_leaves_the_fp32_model_alone(spec):
    import torch

    fp32 = load_model(spec)
    bf16 = load_model(spec, "bf16")
    assert bf16.precision.precision == "bf16" and bf16.precision.probe_cosine >= precision.MIN_COSINE
    assert bf16.model is fp32.model  # text tower, adapters and training keep the fp32 weights
    assert fp32.visual_bf16 is None and next(fp32.model.visual.parameters()).dtype == torch.float32
    frames = precision.probe_frames(fp32.image_size, count=6, seed=7)  # not the probe batch itself
    a, b = fp32.encode_images(frames).numpy(), bf16.encode_images(frames).numpy()
    assert b.dtype == np.float32 and b.shape == a.shape
    assert precision.min_cosine(a, b) >= 0.99
    assert not np.array_equal(a, b)  # it really ran in bf16


def test_auto_follows_the_cpu():
    model = load_model("streamvl-tiny@random:0", "auto")
    assert model.precision.precision == ("bf16" if precision.native_bf16() else "fp32")
