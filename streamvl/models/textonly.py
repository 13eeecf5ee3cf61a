"""The model for answering text queries: the text tower only (the image tower is dropped).

A query process (a server, `streamvl search`, a notebook) embeds texts and never images when the
adapter's spec says its text side needs only the text tower (AdapterSpec.text_queries, e.g.
meanpool). Dropping the image tower after loading keeps the same weights, digest and embeddings
for text while freeing its memory (ViT-B/32: 88M parameters, about 350 MB of the ~1.8 GB a 1M-row
query process held; docs/benchmarks.md, "Queries"). Cached per process like load_model.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from streamvl.errors import ModelLoadError
from streamvl.models import loading


def _no_image_tower(spec: str) -> Any:
    import torch

    class NoImageTower(torch.nn.Module):
        """Stands where the image tower was: any image call is one clear error, not a None call."""

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            raise ModelLoadError(f"model {spec!r} was loaded for text queries only (no image tower); "
                                 f"use streamvl.models.loading.load_model for images")

    return NoImageTower()


@functools.lru_cache(maxsize=4)
def load_text_model(spec: str = "default") -> loading.LoadedModel:
    """The fp32 model for `spec` without its image tower (encode_text as load_model's, bit for bit)."""
    parsed = loading.parse_spec(spec)
    loaded = loading.wrap_model(loading._create(parsed), parsed)
    loaded.model.visual = _no_image_tower(parsed.text)
    return loaded


@functools.lru_cache(maxsize=4)
def tokenizer(spec: str = "default") -> Callable[[Sequence[str]], Any]:
    """The tokenizer of `spec`'s architecture, without loading any weights."""
    import open_clip

    loading._register_configs()
    return open_clip.get_tokenizer(loading.parse_spec(spec).arch)
