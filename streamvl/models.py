"""open_clip model loading from one spec string, cached per process.

Specs:
  ``default``          the embedded default model (see DEFAULT_SPEC)
  ``ARCH@TAG``         an open_clip pretrained tag, e.g. ``ViT-B-32@laion2b_s34b_b79k`` (downloads)
  ``ARCH@PATH``        a local ``.safetensors`` file (read without pickle) or an open_clip
                       checkpoint (``.pt``/``.bin``, read with torch's weights-only loader)
  ``ARCH@random[:SEED]`` seeded random weights (for tests and for pipelines without weights)
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from streamvl.errors import ModelLoadError

CONFIG_DIR = Path(__file__).parent / "model_configs"
RANDOM_SPEC = "streamvl-tiny@random:0"
DEFAULT_SPEC = RANDOM_SPEC
RANDOM_WARNING = "RANDOM WEIGHTS: embeddings carry no meaning; search results are noise"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: architecture plus where its weights come from."""

    text: str
    arch: str
    kind: str  # "random" | "file" | "tag"
    value: str  # seed, path or tag

    @property
    def random_weights(self) -> bool:
        return self.kind == "random"


def parse_spec(spec: str) -> ModelSpec:
    """Resolve `default` and split `ARCH@SOURCE`; raises ModelLoadError on a malformed spec."""
    text = DEFAULT_SPEC if spec in ("", "default") else spec
    arch, sep, source = text.partition("@")
    if not sep or not arch or not source:
        raise ModelLoadError(f"model spec {spec!r} must be 'default', 'ARCH@TAG', 'ARCH@PATH' or 'ARCH@random[:SEED]'")
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
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = _resize_center_crop(x, self.image_size, F)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, frames: np.ndarray) -> "torch.Tensor":
        """uint8 frames -> L2-normalised image embeddings [N, D]."""
        import torch

        with torch.inference_mode():
            return self.model.encode_image(self.preprocess(frames), normalize=True)

    def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
        """Texts -> L2-normalised text embeddings [N, D] (plain text tower)."""
        import torch

        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(list(texts)), normalize=True)


def _resize_center_crop(x: "torch.Tensor", size: int, F: Any) -> "torch.Tensor":
    """Fallback for frames not already sized by the source: shorter side to size, centre crop."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def _register_configs() -> None:
    import open_clip

    if "streamvl-tiny" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def _create(spec: ModelSpec) -> Any:
    """Build the open_clip module for a spec; every failure becomes a ModelLoadError naming it."""
    import open_clip
    import torch

    _register_configs()
    if spec.arch not in open_clip.list_models():
        raise ModelLoadError(f"model spec {spec.text!r}: unknown architecture {spec.arch!r}")
    if spec.kind == "random":
        torch.manual_seed(int(spec.value))
        return open_clip.create_model(spec.arch, pretrained=None, pretrained_text=False)
    if spec.kind == "file":
        path = Path(spec.value).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model spec {spec.text!r}: weights file {path} not found")
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
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def load_model(spec: str = "default") -> LoadedModel:
    """Load (once per process) the frozen model for `spec`."""
    import open_clip

    parsed = parse_spec(spec)
    model = _create(parsed).eval()
    model.requires_grad_(False)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return LoadedModel(
        spec=parsed,
        model=model,
        tokenizer=open_clip.get_tokenizer(parsed.arch),
        image_size=int(size),
        mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
        embed_dim=int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else int(model.visual.output_dim),
        weights_sha256=_weights_digest(model),
    )
