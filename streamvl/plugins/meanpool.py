"""meanpool: the zero-shot adapters, nothing trained.

- `meanpool`, the baseline: a video embedding is the L2-normalised average of its frozen frame
  embeddings; text goes through the model's plain text tower. The zero-shot reference every
  other adapter is measured against.
- `exposure`: a video embedding is the frozen image tower's embedding of the clip's *exposure*,
  the recency blend of evenly spread frames (weight decay ** age) that streamvl-shapes@v2 and
  @v3 were pretrained to caption with action words. A still frame shows no action; the blend
  shows where a thing came from, so a tower that learned action words from such stills can be
  searched for actions with nothing trained. It reads pixels, so it needs frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from streamvl.adapters.exposure import EXPOSURE_DECAY, EXPOSURE_FRAMES
from streamvl.plugins import AdapterSpec, Option, hookimpl, resolve_options

if TYPE_CHECKING:
    import torch

    from streamvl.models.loading import LoadedModel


TEMPLATE = Option("template", str, "{}", "text template each query is put into, e.g. 'a video of {}.'")


class MeanPoolAdapter:
    """Average of frame features; optional text template such as 'a video of {}.'."""

    name = "meanpool"
    OPTIONS: tuple[Option, ...] = (TEMPLATE,)

    def __init__(self, model: "LoadedModel", options: dict[str, Any]) -> None:
        self.model = model
        self.options = resolve_options(self.name, self.OPTIONS, options)
        self.template: str = self.options["template"]

    def encode_video(self, features: "torch.Tensor", frames: "torch.Tensor | None" = None) -> "torch.Tensor":
        import torch.nn.functional as F

        return F.normalize(features.float().mean(dim=1), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
        return self.model.encode_text([self.template.format(t) for t in texts])


class ExposureAdapter(MeanPoolAdapter):
    """The frozen embedding of each clip's exposure; options: template, frames (blended), decay."""

    name = "exposure"
    OPTIONS = (TEMPLATE,
               Option("frames", int, EXPOSURE_FRAMES, "evenly spread frames of each clip blended into its exposure"),
               Option("decay", float, EXPOSURE_DECAY, "weight per frame of age in the blend, in (0, 1]"))

    def __init__(self, model: "LoadedModel", options: dict[str, Any]) -> None:
        super().__init__(model, options)
        self.blended = self.options["frames"]  # frames blended per clip
        self.decay = self.options["decay"]
        if self.blended < 1 or not 0.0 < self.decay <= 1.0:
            raise ValueError(f"exposure needs frames >= 1 and decay in (0, 1], got frames={self.blended}, decay={self.decay}")

    def encode_video(self, features: "torch.Tensor", frames: "torch.Tensor | None" = None) -> "torch.Tensor":
        """Preprocessed frames [B, T, 3, S, S] -> [B, D]: one blended still per clip, through the frozen tower."""
        from streamvl.adapters.temporal import exposure_stills

        if frames is None:
            raise ValueError("exposure blends each clip's frames into one still: it needs frames (needs_frames=True)")
        return self.model.encode_pixels(exposure_stills(frames.float(), self.blended, self.decay))


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [AdapterSpec("meanpool", MeanPoolAdapter, "mean of frozen frame embeddings (zero-shot baseline)",
                        options=MeanPoolAdapter.OPTIONS, text_queries=True),
            AdapterSpec("exposure", ExposureAdapter,
                        "frozen embedding of each clip's exposure, a recency blend of its frames (zero-shot actions)",
                        needs_frames=True, options=ExposureAdapter.OPTIONS, text_queries=True)]
