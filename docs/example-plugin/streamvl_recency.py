"""recency: an example third-party streamvl plugin (docs/plugins.md walks through it).

A clip's embedding is the weighted mean of its frozen frame embeddings with weight
decay ** (age in frames): the newest frame counts most, so a clip reads as "what it ends on".
Text goes through the model's plain text tower. Nothing is trained, so the spec declares no
capabilities; its two options are declared once and streamvl validates them before the factory
runs. It imports only `streamvl.plugins`, the public contract.
"""

from __future__ import annotations

from typing import Any, Sequence

from streamvl.plugins import AdapterSpec, Option, hookimpl, resolve_options

OPTIONS = (
    Option("decay", float, 0.7, "weight per frame of age, in (0, 1]; 1 is the plain mean"),
    Option("template", str, "{}", "text template each query is put into, e.g. 'a video of {}'"),
)


class RecencyAdapter:
    """Recency-weighted mean of frame embeddings; the plain text tower."""

    name = "recency"

    def __init__(self, model: Any, options: dict[str, Any]) -> None:
        self.model = model  # streamvl's LoadedModel: encode_text, encode_images, embed_dim
        self.options = resolve_options(self.name, OPTIONS, options)  # the declared defaults, then the given
        if not 0.0 < self.options["decay"] <= 1.0:
            raise ValueError(f"recency option 'decay' must be in (0, 1], got {self.options['decay']}")

    def weights(self, t: int) -> Any:
        """[t] weights summing to 1, oldest frame first."""
        import torch

        w = self.options["decay"] ** torch.arange(t - 1, -1, -1, dtype=torch.float32)
        return w / w.sum()

    def encode_video(self, features: Any, frames: Any = None) -> Any:
        """features [B, T, D] -> [B, D], L2-normalised."""
        import torch.nn.functional as F

        x = features.float()
        return F.normalize((self.weights(x.shape[1])[None, :, None] * x).sum(dim=1), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> Any:
        return self.model.encode_text([self.options["template"].format(t) for t in texts])


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [AdapterSpec("recency", RecencyAdapter, "recency-weighted mean of frozen frame embeddings (example plugin)",
                        options=OPTIONS)]
