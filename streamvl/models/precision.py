"""Image-tower precision for indexing: fp32 eager, or bf16 where the CPU multiplies bf16 natively.

On CPUs with AMX-BF16 or AVX512-BF16, oneDNN runs bf16 convolutions and matmuls several times
faster than fp32 (bench/bench_encoder.py measures it against plain open_clip fp32). bf16 keeps
fp32's exponent range, so embeddings stay within a rounding error of fp32; every bf16 tower is
still checked against fp32 on a fixed probe batch before it is used (`MIN_COSINE`), and `auto`
falls back to fp32 when the CPU lacks native bf16 or the check fails. Nothing is exported or
written to disk: the bf16 tower is a cast of the loaded fp32 weights, made when the model loads.

`int8` (explicit only) quantises the tower to int8 and compiles it (streamvl/models/int8.py), with
the same probe check; `auto` does not take it: the compile costs tens of seconds per process and on
the machine measured (AMD EPYC, AVX512-VNNI, no AMX) it was not reliably faster than bf16
(docs/benchmarks.md, "Encoder fast paths").
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from streamvl.errors import ModelLoadError

Precision = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
# Lowest cosine between a bf16 and the fp32 embedding of any probe frame for bf16 to be used.
MIN_COSINE = 0.99
_NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision an image tower runs at, and why."""

    precision: str  # "fp32" | "bf16" | "int8"
    reason: str
    probe_cosine: float | None = None  # min cosine bf16 vs fp32 on the probe batch, if it ran


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    return bool(_NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def probe_frames(size: int, count: int = 8, seed: int = 0) -> np.ndarray:
    """A fixed batch of uint8 frames [count, size, size, 3]: smooth gradients plus blocks and noise,
    so the probe exercises the tower on image-like input rather than flat colour."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    frames = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        base = np.stack([xs * rng.uniform(50, 200), ys * rng.uniform(50, 200), (xs + ys) * rng.uniform(20, 120)], -1)
        y0, x0 = rng.integers(0, size // 2, 2)
        base[y0 : y0 + size // 3, x0 : x0 + size // 3] = rng.uniform(0, 255, 3)
        frames[i] = base + rng.normal(0, 8, base.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def bf16_tower(visual: Any) -> Any:
    """A bf16 copy of an image tower (the fp32 tower stays as it is for training and adapters)."""
    import torch

    return copy.deepcopy(visual).to(torch.bfloat16).eval().requires_grad_(False)


def min_cosine(a: "np.ndarray", b: "np.ndarray") -> float:
    """Smallest row-wise cosine similarity of two [N, D] arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def native_int8(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    from streamvl.models.int8 import INT8_FLAGS

    return bool(INT8_FLAGS & (cpu_flags() if flags is None else flags))


def choose_int8(int8_embed: Callable[[np.ndarray], np.ndarray], fp32_embed: Callable[[np.ndarray], np.ndarray],
                size: int, spec: str = "", flags: frozenset[str] | None = None,
                missing: str | None = None) -> PrecisionChoice:
    """Explicit 'int8': refused (ModelLoadError) without native int8, without the int8 stack
    (`missing` says why) or when the probe disagrees with fp32; never silently degraded."""
    if missing:
        raise ModelLoadError(f"model {spec!r}: precision int8 unavailable: {missing}")
    if not native_int8(flags):
        raise ModelLoadError(f"model {spec!r}: precision int8 needs a CPU with AVX512-VNNI, AVX-VNNI or "
                             f"AMX-INT8; use precision auto")
    frames = probe_frames(size)
    cosine = min_cosine(fp32_embed(frames), int8_embed(frames))
    if cosine < MIN_COSINE:
        raise ModelLoadError(f"model {spec!r}: int8 image embeddings disagree with fp32 "
                             f"(min cosine {cosine:.4f} < {MIN_COSINE}); use precision auto")
    return PrecisionChoice("int8", f"int8: probe cosine to fp32 {cosine:.4f}", cosine)


def choose(requested: str, fp32_embed: Callable[[np.ndarray], np.ndarray],
           bf16_embed: Callable[[np.ndarray], np.ndarray], size: int, spec: str = "",
           flags: frozenset[str] | None = None) -> PrecisionChoice:
    """Pick the precision for `requested` ('auto' | 'fp32' | 'bf16'), checking bf16 against fp32
    ('int8' goes through choose_int8).

    'auto' takes bf16 only on native-bf16 CPUs and when the probe agrees with fp32 (>= MIN_COSINE);
    an explicit 'bf16' is refused (ModelLoadError) if the probe disagrees, never silently degraded.
    """
    if requested not in PRECISIONS:
        raise ModelLoadError(f"model {spec!r}: unknown precision {requested!r}; choose one of {PRECISIONS}")
    if requested == "fp32":
        return PrecisionChoice("fp32", "requested")
    if requested == "auto" and not native_bf16(flags):
        return PrecisionChoice("fp32", "auto: this CPU has no native bf16 (AMX-BF16 / AVX512-BF16)")
    frames = probe_frames(size)
    cosine = min_cosine(fp32_embed(frames), bf16_embed(frames))
    if cosine >= MIN_COSINE:
        return PrecisionChoice("bf16", f"{requested}: probe cosine to fp32 {cosine:.4f}", cosine)
    if requested == "bf16":
        raise ModelLoadError(f"model {spec!r}: bf16 image embeddings disagree with fp32 "
                             f"(min cosine {cosine:.4f} < {MIN_COSINE}); use precision fp32")
    log.warning("model %s: bf16 probe cosine %.4f < %s, using fp32", spec, cosine, MIN_COSINE)
    return PrecisionChoice("fp32", f"auto: bf16 probe cosine {cosine:.4f} < {MIN_COSINE}", cosine)
