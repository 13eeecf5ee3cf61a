"""Re-reading the pixels of search hits, for rerankers of adapters that need frames (litevl, xclip).

The index keeps frame *features*, not pixels. Methods whose query-time similarity needs the
vision tower's tokens (litevl's text-dependent pooling over frames and patches, xclip's
video-specific prompts) read each hit's time range from its source again, sampled on the same
presentation-time grid as at indexing (the stream's fps, estimated from its `frames` rows), then
call the adapter's `scores(None, frames, [query])`: its spec must declare Capability.SCORES.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np

from streamvl.plugins.contract import Capability, RerankContext, Scoring, Trainable
from streamvl.errors import PluginError, StreamvlError
from streamvl.types import Hit


def stream_fps(store: Any, stream_id: str) -> float | None:
    """Sampling rate of an indexed stream, from the spacing of its frames rows."""
    pts, _ = store.frames_of(stream_id)
    if len(pts) < 2:
        return None
    return float(1.0 / np.median(np.diff(pts)))


def read_range(uri: str, stream_id: str, start: float, end: float, fps: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames with start <= pts < end, sampled at fps and resized to size x size: (pts [N], uint8 [N, S, S, 3])."""
    from streamvl.config import SamplingConfig
    from streamvl.sources import open_source
    from streamvl.types import StreamInfo

    pts, frames = [], []
    with open_source(StreamInfo(stream_id, uri), SamplingConfig(fps=fps, size=size, batch_frames=16),
                     start_after=start - 0.5 / fps) as source:
        for batch in source:
            keep = (batch.pts >= start - 1e-6) & (batch.pts < end - 1e-6)
            pts.append(batch.pts[keep])
            frames.append(batch.frames[keep])
            if len(batch.pts) and batch.pts[-1] >= end:
                break
    if not pts or not sum(len(p) for p in pts):
        return np.empty(0), np.empty((0, size, size, 3), np.uint8)
    return np.concatenate(pts), np.concatenate(frames)


def rerank_with_frames(context: RerankContext, hits: list[Hit], frames: int = 8) -> list[Hit]:
    """Rescore hits with `context.adapter.scores(None, frames, [query])` on re-read pixels.

    Hits whose source cannot be read again keep their vector score and say so in
    extra["rerank"] ("unreadable: ..."); the others carry extra["rerank"] = "frames".
    """
    import torch

    from streamvl.pipeline.features import segment_indices

    context.spec.require(Capability.SCORES, "reranking with re-read frames")
    scorer = cast(Scoring, context.adapter)
    if context.spec.can(Capability.TRAINABLE):
        cast(Trainable, context.adapter).eval()
    model = context.model
    out = []
    for h in hits:
        try:
            fps = stream_fps(context.store, h.stream_id) or 1.0
            _, raw = read_range(h.uri, h.stream_id, h.start, h.end, fps, model.image_size)
            if not len(raw):
                raise PluginError("no frames in range")
        except (StreamvlError, OSError) as exc:
            out.append(replace(h, extra={**h.extra, "rerank": f"unreadable: {exc}"}))
            continue
        raw = raw[segment_indices(len(raw), frames)]
        pixels = model.preprocess(raw).unsqueeze(0)  # [1, T, 3, S, S]
        with torch.no_grad():
            score = float(scorer.scores(None, pixels, [context.query])[0, 0])
        out.append(replace(h, score=score, extra={**h.extra, "rerank": "frames"}))
    return sorted(out, key=lambda h: -h.score)
