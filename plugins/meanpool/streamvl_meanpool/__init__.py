"""meanpool: the baseline video adapter.

A video embedding is the L2-normalised average of its frozen frame embeddings; text goes
through the model's plain text tower. No parameters, no training: the zero-shot reference
every other adapter is measured against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from streamvl.adapters import AdapterSpec
from streamvl.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from streamvl.models import LoadedModel


class MeanPoolAdapter:
    """Average of frame features; optional text template such as 'a video of {}.'."""

    name = "meanpool"

    def __init__(self, model: "LoadedModel", options: dict[str, Any]) -> None:
        self.model = model
        self.template: str = options.get("template", "{}")

    def encode_video(self, features: "torch.Tensor", frames: "torch.Tensor | None" = None) -> "torch.Tensor":
        import torch.nn.functional as F

        return F.normalize(features.float().mean(dim=1), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
        return self.model.encode_text([self.template.format(t) for t in texts])


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [AdapterSpec("meanpool", MeanPoolAdapter, "mean of frozen frame embeddings (zero-shot baseline)")]
