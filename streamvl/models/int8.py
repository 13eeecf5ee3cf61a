"""An int8 image tower for x86: PT2E quantisation (torchao's X86InductorQuantizer) compiled by inductor.

Linear and convolution weights are quantised per channel to int8 (the attention projections too:
models/attention.py splits them out of nn.MultiheadAttention, whose packed input projection export
leaves as a float matmul the quantiser does not annotate); activations are quantised per
tensor, either dynamically per call (default: no calibration data needed, robust to frames unlike
the probe) or statically from a calibration batch. torch.compile (inductor, freezing on, dynamic
batch) lowers the quantised graph to oneDNN int8 kernels (VNNI / AMX-INT8). Building the tower
costs an export plus a compile (tens of seconds on 2 cores), once per process; the fp32 tower is
left untouched. precision.py decides when to use it and checks it against fp32 like bf16.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable

# CPU features that give oneDNN native int8 dot products (VNNI, or AMX-INT8 tiles).
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def available() -> str | None:
    """None when an int8 tower can be built here, else why not (missing package or engine)."""
    try:
        import torch
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    except ImportError as exc:
        return f"int8 needs torchao (pip install 'streamvl[int8]'): {exc}"
    if "x86" not in torch.backends.quantized.supported_engines:
        return "int8 needs torch's x86 quantized engine, which this torch build lacks"
    return None


@contextlib.contextmanager
def _no_mha_fastpath():
    """nn.MultiheadAttention's inference fast path is one opaque op that export cannot quantise."""
    import torch

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def int8_tower(visual: Any, calibration: "torch.Tensor", dynamic: bool = False,
               chunk: int = 64) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """A compiled int8 copy of `visual`: float pixels [N, 3, S, S] -> float image features [N, D].

    `calibration` (a few preprocessed images) traces the graph and, when not `dynamic`, sets the
    activation ranges. Inputs run in chunks of `chunk` images, the last one zero-padded: one
    compiled shape, since inductor cannot lower oneDNN's int8 prepacking with a symbolic batch and
    every new batch size would otherwise recompile (tens of seconds)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    from streamvl.models.attention import split_attention

    tower = copy.deepcopy(visual).float().eval()
    split_attention(tower)  # the attention projections as nn.Linear, so the quantiser annotates them (on the copy)
    with _no_mha_fastpath(), torch.no_grad():
        batch = torch.export.Dim("batch", min=1, max=4096)
        graph = torch.export.export(tower, (calibration[:2],), dynamic_shapes=({0: batch},)).module()
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
        prepared = prepare_pt2e(graph, quantizer)
        prepared(calibration)
        quantised = convert_pt2e(prepared)
    compiled = torch.compile(quantised, dynamic=False)
    from torch._inductor import config

    def run(pixels: "torch.Tensor") -> "torch.Tensor":
        outs = []
        # freezing folds and prepacks the int8 weights into oneDNN kernels; without it inductor dequantises
        # every weight on every call (about x10 slower than fp32). It is patched around every call, not only
        # the first, so that a recompile (a guard that fails on a new caller's state) still freezes.
        with torch.no_grad(), config.patch(freezing=True):
            for start in range(0, len(pixels), chunk):
                part = _fixed(pixels[start : start + chunk], chunk)
                outs.append(compiled(part)[: min(chunk, len(pixels) - start)].float())
        return torch.cat(outs)

    run(calibration[:2])  # compiles now, at load
    return run


def _fixed(part: "torch.Tensor", chunk: int) -> "torch.Tensor":
    """`part` as the one input the graph was compiled for: float32, contiguous, zero-padded to `chunk` rows.

    The layout matters as much as the shape: dynamo guards on strides, and preprocessed frames come
    channels-last (a permute of HWC pixels), so an unpadded batch of exactly `chunk` frames used to miss
    the guard of the padded (contiguous) load-time batch and recompile, unfrozen, inside the first
    timed call (the x0.17 of docs/benchmarks.md)."""
    from streamvl.models.loading import torch_cat_zeros

    part = part.float().contiguous()
    pad = chunk - len(part)
    return torch_cat_zeros(part, pad) if pad else part
