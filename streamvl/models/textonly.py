"""The model for answering text queries: the text tower only (the image tower is dropped).

A query process (a server, `streamvl search`, a notebook) embeds texts and never images when the
adapter's spec says its text side needs only the text tower (AdapterSpec.text_queries, e.g.
meanpool). Dropping the image tower after loading keeps the same weights, digest and embeddings
for text while freeing its memory (ViT-B/32: 88M parameters, about 350 MB of the ~1.8 GB a 1M-row
query process held; docs/benchmarks.md, "Queries"). Cached per process like load_model.

The text tower then runs at `precision` (streamvl.models.textprecision): by default `auto`, dynamic
int8 Linear layers when they agree with fp32 on a fixed probe set of texts (about x2.8 faster per
query and ~75 MB smaller for ViT-B/32), else fp32 with the reason logged. The model's
`text_precision` says which and why.

encode_text runs on one torch thread (TEXT_THREADS): a query's few tokens gain nothing from a
second one, and OpenMP's idle threads keep spinning after each op, taking the cores the vector
search that follows needs (at 1M clips, 2 cores: p50 31.8 -> 26.1 ms, p99 47.0 -> 30.4 ms per
query; docs/benchmarks.md, "Issue 43, fourth pass").
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from streamvl.errors import ModelLoadError
from streamvl.models import loading, textprecision

TEXT_THREADS = 1  # torch threads of a query's text encoding (see the module docstring)


def _no_image_tower(spec: str) -> Any:
    import torch

    class NoImageTower(torch.nn.Module):
        """Stands where the image tower was: any image call is one clear error, not a None call."""

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            raise ModelLoadError(f"model {spec!r} was loaded for text queries only (no image tower); "
                                 f"use streamvl.models.loading.load_model for images")

    return NoImageTower()


@functools.lru_cache(maxsize=4)
def load_text_model(spec: str = "default", precision: str = "auto") -> loading.LoadedModel:
    """The model for `spec` without its image tower, its text tower at `precision` ('auto' | 'fp32' |
    'int8', see streamvl.models.textprecision); with 'fp32', encode_text is load_model's bit for bit."""
    parsed = loading.parse_spec(spec)
    loaded = loading.wrap_model(loading._create(parsed), parsed)
    loaded.model.visual = _no_image_tower(parsed.text)
    loaded.text_threads = TEXT_THREADS
    loaded.text_precision = textprecision.with_int8_text(loaded, precision)
    return loaded


@functools.lru_cache(maxsize=4)
def tokenizer(spec: str = "default") -> Callable[[Sequence[str]], Any]:
    """The tokenizer of `spec`'s architecture, without loading any weights."""
    import open_clip

    loading._register_configs()
    return open_clip.get_tokenizer(loading.parse_spec(spec).arch)
