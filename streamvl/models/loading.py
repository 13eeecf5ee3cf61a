"""open_clip model loading from one spec string, cached per process.

Specs:
  ``default``          the shipped default model (see DEFAULT_SPEC and SHIPPED)
  ``ARCH@NAME``        a model shipped in streamvl/assets (SHIPPED), ``streamvl-shapes@v1``, ``@v2`` or ``@v3``:
                       compact safetensors + JSON, rebuilt exactly and checked against its sha256
  ``ARCH@TAG``         an open_clip pretrained tag, e.g. ``ViT-B-32@laion2b_s34b_b79k`` (downloads)
  ``ARCH@PATH``        a local ``.safetensors`` file (read without pickle; a compact file with its JSON
                       beside it, as jobs/pretrain_synthetic.py writes, is rebuilt and checked like a
                       shipped one) or an open_clip checkpoint (``.pt``/``.bin``, torch's weights-only loader)
  ``ARCH@random[:SEED]`` seeded random weights (for tests and for pipelines without weights)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from streamvl.models import precision as prec
from streamvl.errors import ModelLoadError

CONFIG_DIR = Path(__file__).parent / "model_configs"
ASSET_DIR = Path(__file__).parent / "assets"
RANDOM_SPEC = "streamvl-tiny@random:0"
# Models that ship with the package: spec -> asset stem in ASSET_DIR (stem.safetensors + stem.json).
SHIPPED: dict[str, str] = {
    "streamvl-shapes@v1": "streamvl-shapes-v1", "streamvl-shapes@v2": "streamvl-shapes-v2", "streamvl-shapes@v3": "streamvl-shapes-v3",
}
SHIPPED_ABOUT: dict[str, str] = {
    "streamvl-shapes-v1": "tiny open_clip pretrained on synthetic shapes-world stills (static captions); "
                          "not a general-purpose image-language model",
    "streamvl-shapes-v2": "tiny open_clip pretrained on synthetic shapes-world stills (static captions) and exposures "
                          "of one action each (action captions); not a general-purpose image-language model",
    "streamvl-shapes-v3": "tiny open_clip pretrained on synthetic shapes-world stills (static captions, with poses) and "
                          "exposures of one action each (action captions); not a general-purpose image-language model",
}
DEFAULT_SPEC = "streamvl-shapes@v1"
RANDOM_WARNING = "RANDOM WEIGHTS: embeddings carry no meaning; search results are noise"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: architecture plus where its weights come from."""

    text: str
    arch: str
    kind: str  # "random" | "file" | "tag" | "shipped"
    value: str  # seed, path, tag or asset stem

    @property
    def random_weights(self) -> bool:
        return self.kind == "random"


def parse_spec(spec: str) -> ModelSpec:
    """Resolve `default` and split `ARCH@SOURCE`; raises ModelLoadError on a malformed spec."""
    text = DEFAULT_SPEC if spec in ("", "default") else spec
    arch, sep, source = text.partition("@")
    if not sep or not arch or not source:
        raise ModelLoadError(f"model spec {spec!r} must be 'default', 'ARCH@TAG', 'ARCH@PATH' or 'ARCH@random[:SEED]'")
    if text in SHIPPED:
        return ModelSpec(text, arch, "shipped", SHIPPED[text])
    if source == "random" or source.startswith("random:"):
        seed = source.partition(":")[2] or "0"
        if not seed.isdigit():
            raise ModelLoadError(f"model spec {spec!r}: random seed must be an integer")
        return ModelSpec(text, arch, "random", seed)
    if source.endswith((".safetensors", ".pt", ".pth", ".bin")) or "/" in source or Path(source).exists():
        return ModelSpec(text, arch, "file", source)
    return ModelSpec(text, arch, "tag", source)


@dataclass
class LoadedModel:
    """A frozen open_clip model with its tokenizer and preprocessing constants."""

    spec: ModelSpec
    model: Any  # open_clip CLIP module, eval mode, no grad
    tokenizer: Callable[[Sequence[str]], Any]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    weights_sha256: str = ""
    extra_meta: dict[str, str] = field(default_factory=dict)
    precision: prec.PrecisionChoice = prec.PrecisionChoice("fp32", "default")
    visual_bf16: Any = None  # bf16 copy of the image tower when precision is bf16 (see streamvl/precision.py)
    visual_int8: Any = None  # compiled int8 tower (pixels -> features) when precision is int8 (models/int8.py)
    text_precision: prec.PrecisionChoice = prec.PrecisionChoice("fp32", "default")  # models/textprecision.py
    text_threads: int | None = None  # torch threads encode_text runs on (None: the process's); models/textonly.py

    @property
    def random_weights(self) -> bool:
        return self.spec.random_weights

    @property
    def name(self) -> str:
        """The spec string stored with every row, marked when the weights are random."""
        return f"{self.spec.text} (RANDOM WEIGHTS)" if self.random_weights else self.spec.text

    def warning(self) -> str | None:
        return f"{self.spec.text}: {RANDOM_WARNING}" if self.random_weights else None

    def meta(self) -> dict[str, str]:
        """Table metadata describing the model that wrote the rows."""
        meta = {
            "streamvl.model": self.spec.text,
            "streamvl.embed_dim": str(self.embed_dim),
            "streamvl.image_size": str(self.image_size),
            "streamvl.weights": "RANDOM" if self.random_weights else self.spec.kind,
            "streamvl.weights_sha256": self.weights_sha256,
        }
        if self.random_weights:
            meta["streamvl.warning"] = RANDOM_WARNING
        return meta | self.extra_meta

    def preprocess(self, frames: np.ndarray) -> "torch.Tensor":
        """uint8 [N, H, W, 3] -> normalised float [N, 3, S, S], as batched tensor ops."""
        return preprocess_frames(frames, self.image_size, self.mean, self.std)

    def encode_images(self, frames: np.ndarray) -> "torch.Tensor":
        """uint8 frames -> L2-normalised float32 image embeddings [N, D], at this model's precision."""
        return self.encode_pixels(self.preprocess(frames))

    def encode_pixels(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """Preprocessed images [N, 3, S, S] -> L2-normalised float32 embeddings [N, D], at this model's precision.

        The batch is padded to one of a few sizes (padded_batch) and the padding's rows dropped: every
        distinct batch size costs the CPU kernels (oneDNN primitives, their scratch buffers) memory that
        is never given back, and a live encoder sees every size from 1 to runtime.encode_batch
        (measured: +300 MiB over 300 calls of sizes 1-64, flat with one size; issue 43)."""
        n = pixels.shape[0]
        size = n if self.visual_int8 is not None else padded_batch(n)  # the int8 graph pads to its own one size
        if size == n:
            return self._encode_exact(pixels)
        return self._encode_exact(torch_cat_zeros(pixels, size - n))[:n]

    def _encode_exact(self, pixels: "torch.Tensor") -> "torch.Tensor":
        import torch

        if self.visual_int8 is not None:  # compiled graphs run under no_grad, not inference_mode
            return torch.nn.functional.normalize(self.visual_int8(pixels), dim=-1)
        with torch.inference_mode():
            if self.visual_bf16 is None:
                return self.model.encode_image(pixels.float(), normalize=True).float()
            return _bf16_embed(self.visual_bf16, pixels)

    def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
        """Texts -> L2-normalised text embeddings [N, D] (plain text tower).

        On open_clip's CLIP text tower (causal attention, pooled at the end-of-text token) the padding
        after the longest text cannot change the result, so it is cut off: a short query costs its own
        tokens, not the full context (about 2x faster for ViT-B/32; the same embeddings to float error)."""
        import torch

        with torch.inference_mode(), torch_threads(self.text_threads):
            tokens = self.tokenizer(list(texts))
            if not _prefix_exact(self.model, self.tokenizer):
                return self.model.encode_text(tokens, normalize=True)
            used = torch.nonzero(tokens.ne(0).any(dim=0))
            return _encode_text_prefix(self.model, tokens[:, : int(used.max()) + 1 if len(used) else 1])


# Batch sizes the image tower runs at: powers of two up to PAD_STEP, then multiples of it.
PAD_STEP = 16


def padded_batch(n: int) -> int:
    """The batch size n images run at: the next power of two up to PAD_STEP, else the next multiple
    of PAD_STEP (so runtime.encode_batch 64 gives 8 sizes: 1, 2, 4, 8, 16, 32, 48, 64)."""
    if n <= 1:
        return max(n, 0)
    if n <= PAD_STEP:
        return 1 << (n - 1).bit_length()
    return -(-n // PAD_STEP) * PAD_STEP


def torch_cat_zeros(pixels: "torch.Tensor", extra: int) -> "torch.Tensor":
    """pixels with `extra` zero images appended (padding rows, dropped after the tower)."""
    import torch

    return torch.cat([pixels, pixels.new_zeros((extra, *pixels.shape[1:]))])


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block on `n` torch intra-op threads (None: leave the process's setting), then restore it."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def _prefix_exact(model: Any, tokenizer: Any) -> bool:
    """True when encoding a token prefix gives the full context's embedding: open_clip CLIP with a causal
    text mask, argmax (end-of-text) pooling and the zero-padding SimpleTokenizer."""
    import open_clip
    import torch

    mask = getattr(model, "attn_mask", None)
    return (type(model).__name__ == "CLIP" and getattr(model, "text_pool_type", None) == "argmax"
            and isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) and isinstance(mask, torch.Tensor)
            and torch.equal(mask, torch.full_like(mask, float("-inf")).triu(1)))


def _encode_text_prefix(model: Any, tokens: "torch.Tensor") -> "torch.Tensor":
    """open_clip CLIP.encode_text(normalize=True) on the first n token positions only (see encode_text)."""
    import torch
    import torch.nn.functional as F
    from open_clip.transformer import text_global_pool

    n, cast = tokens.shape[1], model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, "argmax")
    x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return F.normalize(x, dim=-1)


def _bf16_embed(tower: Any, pixels: "torch.Tensor") -> "torch.Tensor":
    """Normalised fp32 embeddings from a bf16 tower (what open_clip's encode_image(normalize=True) returns)."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        return F.normalize(tower(pixels.to(torch.bfloat16)).float(), dim=-1)


def preprocess_frames(frames: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> "torch.Tensor":
    """uint8 [N, H, W, 3] -> float [N, 3, size, size], resized if needed and normalised (also used in pretraining)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = _resize_center_crop(x, size, F)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _resize_center_crop(x: "torch.Tensor", size: int, F: Any) -> "torch.Tensor":
    """Fallback for frames not already sized by the source: shorter side to size, centre crop."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def _register_configs() -> None:
    import open_clip

    known = set(open_clip.list_models())
    if any(path.stem not in known for path in CONFIG_DIR.glob("*.json")):
        open_clip.add_model_config(CONFIG_DIR)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init():
    """open_clip warns that a model without `pretrained` is random: not true when weights follow."""
    root, quiet = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def bare_model(arch: str) -> Any:
    """An open_clip module of architecture `arch` with throwaway random weights, for weights to be loaded into.

    Uses a forked torch RNG, so building it does not move the caller's random state.
    """
    import open_clip
    import torch

    _register_configs()
    with torch.random.fork_rng(), _quiet_random_init():
        return open_clip.create_model(arch, pretrained=None, pretrained_text=False)


def _create_shipped(spec: ModelSpec) -> Any:
    """A model packaged in ASSET_DIR (compact format)."""
    from streamvl.models import weights
    stem = ASSET_DIR / spec.value
    missing = [p.name for p in weights.files(stem) if not p.is_file()]
    if missing:
        raise ModelLoadError(f"model spec {spec.text!r}: packaged weights missing from {ASSET_DIR}: {missing}")
    return _create_compact(spec, stem)


def _is_compact(path: Path) -> bool:
    """A .safetensors file with a streamvl compact-format JSON beside it (as jobs/pretrain_synthetic.py writes)."""
    from streamvl.models import weights
    sidecar = weights.files(path.parent / path.stem)[1]
    try:
        return path.suffix == ".safetensors" and json.loads(sidecar.read_text()).get("format") == weights.FORMAT
    except (OSError, ValueError):
        return False


def _create_compact(spec: ModelSpec, stem: Path) -> Any:
    """Rebuild a compact model exactly; any mismatch is a ModelLoadError, never a different model."""
    import open_clip

    from streamvl.models import weights
    try:
        state, record = weights.load(stem)
    except Exception as exc:
        raise ModelLoadError(f"model spec {spec.text!r}: cannot read compact weights {stem}: {exc}") from exc
    if record.get("model_cfg") != open_clip.get_model_config(spec.arch):
        raise ModelLoadError(f"model spec {spec.text!r}: the {spec.arch} architecture config differs from the one the "
                             f"weights were trained with (model_configs/{spec.arch}.json edited, or another arch?)")
    model = bare_model(spec.arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"model spec {spec.text!r}: compact weights do not fit {spec.arch}: {exc}") from exc
    digest = weights.state_digest(model.state_dict())
    if digest != record.get("sha256"):
        raise ModelLoadError(
            f"model spec {spec.text!r}: rebuilt weights have sha256 {digest[:16]}..., {stem.name}.json records "
            f"{str(record.get('sha256'))[:16]}... (file edited, or the seeded token-embedding init changed); refusing to load"
        )
    return model


def _create(spec: ModelSpec) -> Any:
    """Build the open_clip module for a spec; every failure becomes a ModelLoadError naming it."""
    import open_clip
    import torch

    _register_configs()
    if spec.arch not in open_clip.list_models():
        raise ModelLoadError(f"model spec {spec.text!r}: unknown architecture {spec.arch!r}")
    if spec.kind == "shipped":
        return _create_shipped(spec)
    if spec.kind == "random":
        torch.manual_seed(int(spec.value))
        return open_clip.create_model(spec.arch, pretrained=None, pretrained_text=False)
    if spec.kind == "file":
        path = Path(spec.value).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model spec {spec.text!r}: weights file {path} not found")
        if _is_compact(path):
            return _create_compact(spec, path.parent / path.stem)
        try:
            return open_clip.create_model(spec.arch, pretrained=str(path), weights_only=True)
        except Exception as exc:
            raise ModelLoadError(f"model spec {spec.text!r}: cannot load {path}: {exc}") from exc
    tags = open_clip.list_pretrained_tags_by_model(spec.arch)
    if spec.value not in tags:
        raise ModelLoadError(f"model spec {spec.text!r}: no pretrained tag {spec.value!r}; known tags: {tags or 'none'}")
    try:
        return open_clip.create_model(spec.arch, pretrained=spec.value)
    except Exception as exc:
        raise ModelLoadError(
            f"model spec {spec.text!r}: downloading pretrained weights failed (needs internet access to the "
            f"model hub; or pass a local file as {spec.arch}@/path/to/weights.safetensors): {exc}"
        ) from exc


def _weights_digest(model: Any) -> str:
    from streamvl.models.weights import state_digest

    return state_digest(model.state_dict())[:16]


def _shipped_meta(spec: ModelSpec) -> dict[str, str]:
    """Table metadata naming a packaged model (empty for other kinds)."""
    if spec.kind != "shipped":
        return {}
    about = SHIPPED_ABOUT.get(spec.value, "tiny open_clip model shipped with streamvl (its JSON says how it was trained)")
    return {"streamvl.weights_name": spec.value, "streamvl.weights_about": about}


@functools.lru_cache(maxsize=4)
def load_model(spec: str = "default", precision: str = "fp32") -> LoadedModel:
    """Load (once per process) the frozen model for `spec`; `precision` ('fp32' | 'bf16' | 'auto') applies to
    `encode_images` only (text tower, adapters and training use the fp32 weights)."""
    if precision != "fp32":
        return with_precision(load_model(spec), precision)
    parsed = parse_spec(spec)
    return wrap_model(_create(parsed), parsed)


def with_precision(model: LoadedModel, requested: str) -> LoadedModel:
    """The same model with its image tower at `requested` precision, checked against fp32 (streamvl.models.precision)."""
    if requested == "int8":
        return _with_int8(model)
    towers: list[Any] = []

    def bf16_embed(frames: np.ndarray) -> np.ndarray:
        towers.append(prec.bf16_tower(model.model.visual))
        return _bf16_embed(towers[-1], model.preprocess(frames)).numpy()

    choice = prec.choose(requested, lambda frames: model.encode_images(frames).numpy(), bf16_embed,
                         model.image_size, model.spec.text)
    tower = towers[-1] if choice.precision == "bf16" else None
    return dataclasses.replace(model, precision=choice, visual_bf16=tower)


def _with_int8(model: LoadedModel, flags: frozenset[str] | None = None) -> LoadedModel:
    """The same model with a compiled int8 image tower, calibrated on the probe frames and checked against fp32."""
    from streamvl.models import int8

    towers: list[Any] = []

    def int8_embed(frames: np.ndarray) -> np.ndarray:
        import torch

        pixels = model.preprocess(frames)
        towers.append(int8.int8_tower(model.model.visual, pixels))
        return torch.nn.functional.normalize(towers[-1](pixels), dim=-1).numpy()

    choice = prec.choose_int8(int8_embed, lambda frames: model.encode_images(frames).numpy(), model.image_size,
                              model.spec.text, flags, int8.available())
    return dataclasses.replace(model, precision=choice, visual_int8=towers[-1])


def wrap_model(model: Any, spec: ModelSpec, freeze: bool = True) -> LoadedModel:
    """Put an open_clip module in eval mode, freeze it (unless a training loop only wants a view) and
    attach tokenizer and preprocessing constants."""
    import open_clip

    model = model.eval()
    if freeze:
        model.requires_grad_(False)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=open_clip.get_tokenizer(spec.arch),
        image_size=int(size),
        mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
        embed_dim=int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else int(model.visual.output_dim),
        weights_sha256=_weights_digest(model),
        extra_meta=_shipped_meta(spec),
    )
