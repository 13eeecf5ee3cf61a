"""Text-tower precision for queries: torch's dynamic int8 Linear layers, checked against fp32 at load.

A query embeds one short text, so the text tower's time is reading its weights for a few tokens:
dynamic int8 (torch.ao quantize_dynamic on every Linear layer, the attention projections included
once models/attention.py has split them out of nn.MultiheadAttention; weights int8 per tensor,
activations quantised per call, VNNI kernels through fbgemm/oneDNN) stores those weights in a
quarter of the memory and runs the ViT-B/32 text tower about x3 faster than fp32 at probe cosine
0.998 (the MLPs alone: x1.9; docs/benchmarks.md, "Queries"). bf16 autocast was slower and less exact.

Every int8 tower is checked at load against the fp32 tower it replaces on a fixed probe set of
texts (`PROBE_TEXTS`): the smallest cosine must be >= MIN_COSINE. `auto` falls back to fp32 (and
logs why) when the check fails or the torch build cannot quantise; an explicit `int8` raises
ModelLoadError instead. Nothing is written to disk: the int8 layers are made from the loaded weights.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from streamvl.errors import ModelLoadError
from streamvl.models.precision import PrecisionChoice, min_cosine

TEXT_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8")
MIN_COSINE = 0.99  # lowest cosine int8 vs fp32 over the probe texts for int8 to be used
PROBE_TEXTS: tuple[str, ...] = (
    "a person walking a dog on the street", "red car turning left at night", "empty parking lot in the rain",
    "a train arriving at the platform", "kitchen", "door opening", "crowd running", "a bicycle",
    "someone opens the fridge and takes out a bottle of milk", "two people shaking hands in an office",
    "snow falling on a quiet road with parked cars", "a cat jumps onto the table",
    "x", "blue", "A VERY LOUD TRUCK!!", "the quick brown fox jumps over the lazy dog 12345",
)
log = logging.getLogger(__name__)


def quantisation_missing() -> str | None:
    """None when torch can run dynamic int8 Linear layers here, else why not."""
    try:
        import torch
        import torch.ao.quantization  # noqa: F401
    except ImportError as exc:
        return f"torch.ao.quantization unavailable: {exc}"
    engines = torch.backends.quantized.supported_engines
    if not {"x86", "fbgemm", "onednn"} & set(engines):
        return f"this torch build has no x86 quantized engine (engines: {engines})"
    return None


def int8_transformer(transformer: Any) -> Callable[[], None]:
    """Turn an open_clip text transformer's weights into dynamic int8, in place: its self-attention is
    first split into nn.Linear layers (models/attention.py) so the q/k/v and output projections are
    quantised with the MLPs; returns the undo (puts the fp32 modules back). In place, not a copy: a
    copy's freed fp32 weights stay in the process's heap, so the int8 tower would cost memory instead
    of saving it. open_clip reads the cast dtype from the first MLP's weight; the
    `int8_original_dtype` attribute is open_clip's own hook for that."""
    import torch

    from streamvl.models.attention import split_attention

    fp32 = {name: module for name, module in transformer.named_modules() if type(module) is torch.nn.Linear}
    unsplit = split_attention(transformer)

    def undo() -> None:
        for name, module in fp32.items():
            parent, _, attr = name.rpartition(".")
            setattr(transformer.get_submodule(parent) if parent else transformer, attr, module)
        unsplit()

    try:
        with warnings.catch_warnings():  # torch.ao's eager quantisation warns it is deprecated (still in torch 2.14)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            torch.ao.quantization.quantize_dynamic(transformer, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        for block in getattr(transformer, "resblocks", ()):
            block.mlp.c_fc.int8_original_dtype = torch.float32
    except Exception:
        undo()
        raise
    return undo


def with_int8_text(model: Any, requested: str = "auto", probe: Sequence[str] = PROBE_TEXTS,
                   quantise: Callable[[Any], Callable[[], None]] = int8_transformer,
                   missing: Callable[[], str | None] = quantisation_missing) -> PrecisionChoice:
    """Put `model`'s text tower (model.model.transformer) at `requested` precision, in place; returns why.

    `model` is a LoadedModel (or anything with encode_text(texts) -> [N, D] and model.transformer).
    'fp32' leaves it alone; 'auto' and 'int8' run `quantise(transformer)` (in place; it returns the
    undo) and keep it when the probe texts' embeddings agree with fp32 (min cosine >= MIN_COSINE).
    Otherwise the fp32 layers are put back: 'auto' logs the reason, 'int8' raises ModelLoadError."""
    spec = getattr(getattr(model, "spec", None), "text", "?")
    if requested not in TEXT_PRECISIONS:
        raise ModelLoadError(f"model {spec!r}: unknown text precision {requested!r}; choose one of {TEXT_PRECISIONS}")
    if requested == "fp32":
        return PrecisionChoice("fp32", "requested")
    why = missing()
    if why is None:
        reference, undo = _embed(model, probe), None
        try:
            undo = quantise(model.model.transformer)
            cosine = min_cosine(reference, _embed(model, probe))
        except Exception as exc:  # noqa: BLE001 - any failure of the int8 path means: use fp32
            cosine, why = None, f"int8 text tower failed: {type(exc).__name__}: {exc}"
        if cosine is not None and cosine >= MIN_COSINE:
            del undo  # it holds the fp32 layers
            _release_freed_memory()
            return PrecisionChoice("int8", f"{requested}: probe cosine to fp32 {cosine:.5f}", cosine)
        if undo is not None:
            undo()
        if cosine is not None:
            why = f"int8 probe cosine to fp32 {cosine:.5f} < {MIN_COSINE}"
    if requested == "int8":
        raise ModelLoadError(f"model {spec!r}: text precision int8 refused: {why}; use auto or fp32")
    log.warning("model %s: text tower stays fp32 (%s)", spec, why)
    return PrecisionChoice("fp32", f"auto: {why}")


def _release_freed_memory() -> None:
    """Hand the freed fp32 weights back to the OS (glibc keeps freed heap pages otherwise)."""
    import gc

    from streamvl.memory import release_free_heap

    gc.collect()
    release_free_heap()


def _embed(model: Any, texts: Sequence[str]) -> np.ndarray:
    out = model.encode_text(list(texts))
    out = out.detach().float().numpy() if hasattr(out, "detach") else np.asarray(out, np.float32)
    if not np.all(np.isfinite(out)):
        return np.zeros_like(out)  # cosine 0: the check fails rather than passing on NaNs
    return out
