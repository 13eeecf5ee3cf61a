"""litevl: "LiteVL: Efficient Video-Language Learning with Enhanced Spatial-Temporal Modeling" (Chen et al., EMNLP 2022).

- Temporal attention in the vision tower: before each residual block of a (frozen) ViT, or after
  each of the four stages of a ModifiedResNet (the shipped shapes-world model, RN50 CLIPs), a
  new temporal self-attention runs across the T frames at every token / spatial position, and
  its output is added with *dynamic temporal scaling*: a learnable scale per layer, initialised
  at 0, so at initialisation every frame's features, and so the model, are exactly the image model's.
- Text-dependent pooling (parameter-free): given a text embedding, frame embeddings and patch
  embeddings (ViT: projected patch tokens; ResNet: the attention pool's value path per position)
  are weighted by a softmax of their similarity to it (temperatures `tau_frame`,
  `tau_patch`) and pooled; the video embedding for that text combines the plain frame mean
  with the two text-weighted poolings (`pool_weights`). It is used in training, in evaluation
  (`scores`) and at search time by the `litevl-textpool` reranker, which reads each hit's
  frames from its source again (the index keeps features, not pixels).
- Index embeddings (text-agnostic): the mean of the temporally-attended frame embeddings.
- Not in the paper, for unseen class names: `difference` adds that multiple of the frame
  embeddings' change from the first frame to the last to every pooling (as prompt's option).

Trainable: the temporal attention blocks and their scales (and the temperature); the image
tower's own weights and the text tower stay frozen. (The paper fine-tunes BLIP end to end;
this keeps the backbone frozen, as streamvl requires.) Needs frames: it re-runs the vision
tower, so its clips cannot be re-scored from the frames table. On class names it trains with
cross-entropy over the classes (TorchAdapter.class_objective): the symmetric loss collapsed it.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvl.adapters.blocks import TorchAdapter, add_difference, insertion_points, run_tower
from streamvl.adapters.ensembles import ensemble_spec
from streamvl.plugins import AdapterSpec, Option, RerankerSpec, hookimpl


class TemporalAttention(nn.Module):
    """Self-attention across frames at each token position of [B*T, L, C] tokens (pre-norm)."""

    def __init__(self, width: int, heads: int, max_frames: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.positions = nn.Parameter(torch.randn(max_frames, width) * 0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor, b: int, t: int) -> torch.Tensor:
        bt, l, c = x.shape
        y = x.reshape(b, t, l, c).permute(0, 2, 1, 3).reshape(b * l, t, c)
        y = self.norm(y) + self.positions[:t].to(y.dtype)
        y = self.attn(y, y, y, need_weights=False)[0]
        return y.reshape(b, l, t, c).permute(0, 2, 1, 3).reshape(bt, l, c)


class LiteVLAdapter(TorchAdapter):
    """Frozen ViT + scaled temporal attention per block; text-dependent pooling for query-aware scores."""

    name = "litevl"
    needs_frames = True
    class_objective = "video_to_text"  # cross-entropy over class names (see TorchAdapter.class_objective)
    declared_options = (
        Option("heads", int | None, None, "temporal attention heads (none: the vision tower's)"),
        Option("layers", int | None, None, "equip the last N insertion points (ViT blocks / ResNet stages) (none: all)"),
        Option("tau_frame", float, 0.1, "temperature of the text-dependent weights over frames"),
        Option("tau_patch", float, 0.1, "temperature of the text-dependent weights over patches"),
        Option("pool_weights", list[float], [1.0, 1.0, 1.0],
               "weights of frame mean, text-weighted frames, text-weighted patches"),
        Option("difference", float, 0.0, "x (last - first frame's embedding) added to the pooled embedding"),
    )

    def build(self) -> None:
        visual = self.clip.visual
        points = insertion_points(visual)  # ViT: before each block; ResNet: after each stage
        layers = self.options["layers"] or len(points)
        if not 1 <= layers <= len(points):
            raise ValueError(f"layers must be in 1..{len(points)}, got {layers}")
        self.first = len(points) - layers  # insertion points before this one stay untouched
        self.temporal = nn.ModuleList([TemporalAttention(p.width, self.options["heads"] or p.heads, self.options["max_frames"])
                                       for p in points[self.first :]])
        self.temporal_scale = nn.Parameter(torch.zeros(layers))  # dynamic temporal scaling, 0 at init
        self.difference = float(self.options["difference"])

    def tower(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames [B, T, 3, S, S] -> frame features [B, T, D] and patch features [B, T, P, D] (normalised)."""
        b, t = frames.shape[:2]

        def hook(k: int):
            return lambda x: x + self.temporal_scale[k] * self.temporal[k](x, b, t)

        hooks = [None] * self.first + [hook(k) for k in range(len(self.temporal))]
        cls, patches, _ = run_tower(self.clip.visual, frames.flatten(0, 1).float(), hooks, self.first)
        return F.normalize(cls, dim=-1).reshape(b, t, -1), F.normalize(patches, dim=-1).reshape(b, t, patches.shape[1], -1)

    def video_embed(self, features: torch.Tensor | None, frames: torch.Tensor | None = None) -> torch.Tensor:
        if frames is None:
            raise ValueError("litevl re-runs the vision tower: it needs frames (needs_frames=True)")
        frame, _ = self.tower(frames)
        return F.normalize(add_difference(frame.mean(dim=1), frame, self.difference), dim=-1)

    def pooled(self, frame: torch.Tensor, patch: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Text-dependent video embeddings [B, N, D]: frame mean + text-weighted frames + text-weighted patches."""
        w_mean, w_frame, w_patch = self.options["pool_weights"]
        out = add_difference(w_mean * frame.mean(dim=1), frame, self.difference)[:, None, :]
        if w_frame:
            a = (torch.einsum("btd,nd->bnt", frame, text) / self.options["tau_frame"]).softmax(dim=-1)
            out = out + w_frame * torch.einsum("bnt,btd->bnd", a, frame)
        if w_patch:
            tokens = patch.flatten(1, 2)  # [B, T*P, D]: every patch of every frame
            a = (torch.einsum("bkd,nd->bnk", tokens, text) / self.options["tau_patch"]).softmax(dim=-1)
            out = out + w_patch * torch.einsum("bnk,bkd->bnd", a, tokens)
        return F.normalize(out, dim=-1)

    def scores(self, features: torch.Tensor | None, frames: torch.Tensor | None, texts: Sequence[str]) -> torch.Tensor:
        if frames is None:
            raise ValueError("litevl scores need frames")
        frame, patch = self.tower(frames)
        text = self.text_embed(texts)
        return (self.pooled(frame, patch, text) * text[None]).sum(dim=-1)


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [ensemble_spec(LiteVLAdapter,
                          "temporal attention with dynamic temporal scaling in the vision tower (Chen et al. 2022)")]


@hookimpl
def streamvl_rerankers() -> list[RerankerSpec]:
    from streamvl.search.rereading import rerank_with_frames

    return [RerankerSpec("litevl-textpool", partial(rerank_with_frames, frames=8),
                         "litevl's text-dependent pooling over frames and patches (reads each hit's frames again)")]
