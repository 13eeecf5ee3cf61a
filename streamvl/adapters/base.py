"""`TorchAdapter`: the base class of the trainable first-party adapters (prompt, xclip, litevl, alpro).

It implements the contract's `Trainable` Protocol (and so `Scoring` and `VideoAdapter`):
`video_embed` / `text_embed` / `scores` with gradients, a learnable temperature, a default
symmetric NCE loss, parameter counts and safetensors checkpoints with a JSON config beside
them (`streamvl.adapters.checkpoints`). A subclass declares its name, options and
capabilities once, as class attributes; `spec()` turns them into the plugin's AdapterSpec.

The frozen backbone (`LoadedModel.model`) is held as a plain attribute, never registered as a
submodule: the adapter's `state_dict()` is exactly its own (new) state, and an optimiser built
from `trainable_parameters()` cannot touch the backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvl.adapters.checkpoints import read_checkpoint_config, read_weights, write_checkpoint
from streamvl.adapters.losses import symmetric_nce, video_to_text_nce
from streamvl.plugins import AdapterSpec, Capability, Option, TrainBatch, resolve_options, validate_options

if TYPE_CHECKING:
    from streamvl.models.loading import LoadedModel

MAX_LOGIT_SCALE = 100.0
CHECKPOINT = Option("checkpoint", str | Path | None, None,
                    "a trained .safetensors checkpoint to load (its JSON config beside it)")
COMMON: tuple[Option, ...] = (
    Option("template", str, "{}", "text template of the frozen text tower, e.g. 'a video of {}.'"),
    Option("max_frames", int, 64, "temporal positions: the most frames a clip may have"),
)


class TorchAdapter(nn.Module):
    """Base class of the trainable adapters. Subclasses set `name`, `declared_options` and implement
    `build()`, `video_embed()` and (unless the plain text tower is right) `text_embed()`.

    options: the declared defaults overridden by a checkpoint's saved options, then by the
    options given (unknown or mistyped ones are an OptionError). `checkpoint` (a .safetensors
    path) loads trained weights and refuses a checkpoint trained on another backbone.
    """

    name: ClassVar[str] = ""
    needs_frames: ClassVar[bool] = False
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SCORES, Capability.TRAINABLE})
    # Objective on class-name texts: "symmetric" NCE, or "video_to_text" cross-entropy over the
    # classes. The text->video half asks each class text to pick its clips out of the batch,
    # which frozen appearance dominates; an adapter whose only trainable path is the video tower
    # can satisfy it only by erasing appearance, and collapses every clip to one vector.
    class_objective: ClassVar[str] = "symmetric"
    declared_options: ClassVar[tuple[Option, ...]] = ()  # the subclass's own options (COMMON ones come first)

    def __init__(self, model: "LoadedModel", options: dict[str, Any] | None = None) -> None:
        super().__init__()
        options = validate_options(self.name, self.all_options(), dict(options or {}))
        checkpoint = options.pop("checkpoint", None)
        saved = read_checkpoint_config(checkpoint) if checkpoint else {}
        if saved and saved.get("adapter") != self.name:
            raise ValueError(f"checkpoint {checkpoint} holds adapter {saved.get('adapter')!r}, not {self.name!r}")
        self.options: dict[str, Any] = resolve_options(self.name, (*COMMON, *self.declared_options), options,
                                                       saved.get("options", {}))
        self.backbone = model  # a LoadedModel (not an nn.Module): never registered, never saved
        self.embed_dim = model.embed_dim
        self.checkpoint_info: dict[str, Any] = saved
        self._text_cache: dict[str, torch.Tensor] = {}
        self.build()
        # the learnable temperature starts at the backbone's (CLIP's 1/0.07 when it has none)
        start = model.model.logit_scale.detach().exp() if hasattr(model.model, "logit_scale") else torch.tensor(1 / 0.07)
        self.logit_scale = nn.Parameter(start.clamp(max=MAX_LOGIT_SCALE).log().reshape(()).float().clone())
        if checkpoint:
            self.load_weights(checkpoint, saved)
        self.eval()

    # -- the declaration

    @classmethod
    def all_options(cls) -> tuple[Option, ...]:
        """Every option the adapter accepts: checkpoint, the common ones, its own."""
        return (CHECKPOINT, *COMMON, *cls.declared_options)

    @classmethod
    def spec(cls, description: str, factory: Callable[..., Any] | None = None,
             extra: tuple[Option, ...] = ()) -> AdapterSpec:
        """The AdapterSpec of this class: its name, needs, capabilities and options, as declared here."""
        return AdapterSpec(cls.name, factory or cls, description, needs_frames=cls.needs_frames,
                           capabilities=cls.capabilities, options=(*cls.all_options(), *extra))

    # -- to implement

    def build(self) -> None:
        """Create the adapter's own modules from self.options."""

    def video_embed(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, D] frame features (and frames) -> [B, D] L2-normalised, with gradients."""
        raise NotImplementedError

    def text_embed(self, texts: Sequence[str]) -> torch.Tensor:
        """N texts -> [N, D] L2-normalised. Default: the frozen text tower with `template` (cached)."""
        return self.frozen_text(texts)

    def fit_checkpoint(self, state: dict[str, torch.Tensor]) -> None:
        """Reshape modules whose size the checkpoint fixes, before its weights load (default: none)."""

    # -- shared behaviour

    @property
    def clip(self) -> nn.Module:
        return self.backbone.model

    def frozen_text(self, texts: Sequence[str], normalise: bool = True) -> torch.Tensor:
        """Frozen text features [N, D], cached per text (plain tensors, usable under autograd).

        normalise=False gives the text tower's raw output, whose norm is the backbone's (about 20
        for the shapes-world models): what X-CLIP's code adds its prompts to (xclip prompt_on="raw").
        """
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors even when called under inference_mode
                tokens = self.backbone.tokenizer([self.options["template"].format(t) for t in missing])
                feats = self.clip.encode_text(tokens).float()
            self._text_cache.update({t: f.clone() for t, f in zip(missing, feats)})
        if not texts:
            return torch.zeros(0, self.embed_dim)
        feats = torch.stack([self._text_cache[t] for t in texts])
        return F.normalize(feats, dim=-1) if normalise else feats

    def scores(self, features: torch.Tensor, frames: torch.Tensor | None, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarities [B, N] of B clips and N texts (with gradients where trainable)."""
        return self.video_embed(features, frames) @ self.text_embed(texts).t()

    def scale(self) -> torch.Tensor:
        """The learnable inverse temperature, clamped like CLIP's."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Default objective: symmetric NCE between clips and texts (class_objective on class names)."""
        logits = self.scale() * self.scores(batch.features, batch.frames, batch.texts)
        if batch.class_texts and self.class_objective == "video_to_text":
            loss = video_to_text_nce(logits, batch.positives)
            return loss, {"v2t": float(loss.detach())}
        loss = symmetric_nce(logits, batch.positives)
        return loss, {"nce": float(loss.detach())}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups; subclasses give pretrained-initialised parts a smaller rate."""
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the trainable parameters' gradients to a total norm (an ensemble clips per member)."""
        torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), max_norm)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable adapter parameters, and the total including the frozen backbone."""
        own = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters())
        backbone = sum(p.numel() for p in self.clip.parameters())
        return {"trainable": trainable, "adapter": own, "backbone": backbone, "total": own + backbone}

    def encode_video(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """VideoAdapter contract: inference-only video embeddings [B, D]."""
        self.eval()
        with torch.no_grad():
            return self.video_embed(None if features is None else features.float(), None if frames is None else frames.float())

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """VideoAdapter contract: inference-only text embeddings [N, D]."""
        self.eval()
        with torch.no_grad():
            return self.text_embed(list(texts))

    # -- checkpoints

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write weights (safetensors) and the JSON config beside them; returns the weights path."""
        return write_checkpoint(path, self.state_dict(), {
            "adapter": self.name,
            "options": self.options,
            "backbone": {"model": self.backbone.spec.text, "weights_sha256": self.backbone.weights_sha256},
            **(extra or {}),
        })

    def load_weights(self, path: str | Path, config: dict[str, Any]) -> None:
        want = config.get("backbone", {}).get("weights_sha256")
        if want and want != self.backbone.weights_sha256:
            raise ValueError(f"checkpoint {path} was trained on backbone {config['backbone'].get('model')!r} "
                             f"(weights {want}), not on {self.backbone.spec.text!r} ({self.backbone.weights_sha256})")
        state = read_weights(path)
        self.fit_checkpoint(state)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {path} does not fit {self.name} with options {self.options}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
