"""xclip: "Expanding Language-Image Pretrained Models for General Video Recognition" (Ni et al., ECCV 2022).

- Cross-frame communication (in the vision tower, wrapping open_clip's residual blocks): in each
  equipped block, every frame gets one *message token* (a linear map of its class token); the
  T message tokens of a clip exchange information by self-attention (cross-frame fusion), then
  each frame's message token joins that frame's tokens in the block's own attention
  (intra-frame diffusion) and is dropped before the block's MLP. New parts are randomly
  initialised; the blocks are the pretrained ones. On a ModifiedResNet tower (the shipped
  shapes-world model, RN50 CLIPs) messages come from each stage's mean token; after a conv stage
  (no attention to diffuse through) the fused message is added through a zero-initialised
  projection, and at the attention pool it joins the pool's keys and values.
- Multi-frame integration Transformer (MIT): one Transformer layer with temporal position
  embeddings over the frame features, then average pooling. With `centre` (default) it sees
  each frame relative to the clip's mean frame, as prompt's temporal Transformer does
  (TemporalTransformer.pool). Not in the paper, for unseen class names: `identity_init` starts
  the MIT block as the identity, and `difference` adds that multiple of the frame features'
  change from the first frame to the last to the pooled embedding (as prompt's options).
- Video-specific prompt generator: text features attend (cross-attention, 2 layers) to the
  clip's visual tokens (patch tokens averaged over frames, normalised and projected) and the
  result is added with a learnable per-channel weight alpha, initialised at 0.1 as in the
  paper's code (`alpha_init`; small, so text features start close to the plain ones). The
  paper's code adds it to the text tower's raw (projected, not normalised) features, whose norm
  (about 20 here) keeps the prompt a small correction: `prompt_on="raw"`. By default it is added
  to the unit-norm features (`prompt_on="unit"`), a ~20x larger correction that, on the shapes
  world, retrieves much better (R@1 0.531 vs 0.350, split 0) and few-shot recognises a little
  worse (README, "Adapter results").

Training follows the paper: the text tower is frozen; the vision tower is a trainable *copy*
of the pretrained one (`tune_vision`, learning rate x `vision_lr_scale`, 0.1 by default: new
parts learn 10x faster), so the shared frozen backbone never changes. `tune_vision=false`
trains only the new parts. All of it learns at `lr_scale` (0.3) x the run's rate: at the
feature adapters' 1e-3 the new parts diverged and mapped every clip to one vector. On class
names it trains with cross-entropy over the classes (X-CLIP's recognition objective).

Search: a query has no video, so plain search ranks clips by the plain text features; the
`xclip-prompts` reranker reads each hit's frames again and applies the video-specific prompts
(the paper's similarity). Needs frames: clips cannot be re-scored from the frames table.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvl.adapters.blocks import (
    RESNET,
    VIT,
    InsertionPoint,
    TemporalTransformer,
    TorchAdapter,
    add_difference,
    attnpool_with,
    freeze_batchnorm,
    from_tokens,
    insertion_points,
    resnet_stages,
    to_tokens,
    tower_kind,
    vit_head,
    vit_tokens,
)
from streamvl.adapters.ensembles import ensemble_spec
from streamvl.plugins import AdapterSpec, Option, RerankerSpec, hookimpl


class CrossFrameCommunication(nn.Module):
    """The new parts of one cross-frame layer: message tokens, their fusion, their diffusion.

    ViT (`forward`): around a pretrained block, the message token joins the frame's tokens in the
    block's own attention and leaves before its MLP, as in the paper. ModifiedResNet: after a conv
    stage, which has no attention, the fused message is diffused additively through a
    zero-initialised projection (`diffuse`); at the attention pool, the message token joins the
    pool's keys and values (`streamvl.adapters.blocks.attnpool_with`).
    """

    def __init__(self, width: int, heads: int, additive: bool = False) -> None:
        super().__init__()
        self.message_fc = nn.Linear(width, width)
        self.message_ln = nn.LayerNorm(width)
        self.message_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        nn.init.trunc_normal_(self.message_fc.weight, std=0.02)
        nn.init.zeros_(self.message_fc.bias)
        self.diffusion = nn.Linear(width, width) if additive else None
        if self.diffusion is not None:
            nn.init.zeros_(self.diffusion.weight)
            nn.init.zeros_(self.diffusion.bias)

    def messages(self, summary: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """One message token per frame from its summary token [B*T, C]; cross-frame fusion -> [B*T, 1, C]."""
        c = summary.shape[-1]
        msg = self.message_fc(summary).reshape(b, t, c)
        m = self.message_ln(msg)
        msg = msg + self.message_attn(m, m, m, need_weights=False)[0]
        return msg.reshape(b * t, 1, c)

    def forward(self, block: nn.Module, x: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """A ViT block with cross-frame communication: tokens [B*T, L, C] -> [B*T, L, C]."""
        l = x.shape[1]
        y = torch.cat([x, self.messages(x[:, 0], b, t)], dim=1)
        y = y + block.ls_1(block.attention(q_x=block.ln_1(y)))  # intra-frame diffusion: the block's own attention
        x = y[:, :l]  # the message token leaves before the MLP
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def diffuse(self, tokens: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """After a conv stage: spatial tokens [B*T, P, C] plus the projected fused message of their frame."""
        return tokens + self.diffusion(self.messages(tokens.mean(dim=1), b, t))


class PromptGeneratorLayer(nn.Module):
    """Text queries attend to visual tokens, then an MLP (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        q = self.norm1(text)
        text = text + self.cross_attn(q, visual, visual, need_weights=False)[0]
        return text + self.mlp(self.norm3(text))


class VideoSpecificPrompt(nn.Module):
    """alpha * decoder(text | visual tokens): the video-specific addition to text features."""

    def __init__(self, dim: int, layers: int, heads: int, alpha: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.ModuleList([PromptGeneratorLayer(dim, heads) for _ in range(layers)])
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha)))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """text [B, N, D], visual [B, P, D] -> [B, N, D]."""
        visual = self.norm(visual)
        for layer in self.decoder:
            text = layer(text, visual)
        return self.alpha * text


class XClipAdapter(TorchAdapter):
    """Cross-frame communication ViT + MIT + video-specific prompts over a frozen text tower."""

    name = "xclip"
    needs_frames = True
    class_objective = "video_to_text"  # cross-entropy over class names (see TorchAdapter.class_objective)
    declared_options = (
        Option("layers", int | None, None, "equip the last N blocks (ViT) / stages + attention pool (ResNet) (none: all)"),
        Option("mit_depth", int, 1, "layers of the multi-frame integration Transformer"),
        Option("centre", bool, True, "the MIT sees frames relative to the clip mean (TemporalTransformer.pool, as in prompt)"),
        Option("identity_init", bool, False, "the MIT block starts as the identity (TemporalTransformer)"),
        Option("difference", float, 0.0, "x (last - first frame's features) added to the pooled embedding"),
        Option("prompt_layers", int, 2, "cross-attention layers of the video-specific prompt generator"),
        Option("alpha_init", float, 0.1, "initial per-channel weight of the video-specific prompts"),
        Option("prompt_on", str, "unit",
               "'unit': add the prompts to normalised text features; 'raw': to raw ones (the paper's code)"),
        Option("tune_vision", bool, True, "fine-tune a copy of the pretrained vision tower (the paper's setting)"),
        Option("vision_lr_scale", float, 0.1, "learning rate of the vision tower copy, x the new parts' rate"),
        Option("lr_scale", float, 0.3, "every part learns at this x the run's rate: at 1e-3 the new parts diverged"),
    )

    def build(self) -> None:
        frozen = self.clip.visual
        self.kind = tower_kind(frozen)
        o = self.options
        points = insertion_points(frozen)  # ViT: each block; ResNet: each stage, then the attention pool
        if self.kind == RESNET:
            points.append(InsertionPoint(points[-1].width, frozen.attnpool.num_heads))
        layers = o["layers"] or len(points)
        if not 1 <= layers <= len(points):
            raise ValueError(f"layers must be in 1..{len(points)}, got {layers}")
        if o["prompt_on"] not in ("unit", "raw"):
            raise ValueError(f"prompt_on must be 'unit' or 'raw', got {o['prompt_on']!r}")
        self.first = len(points) - layers
        if o["tune_vision"]:
            self.visual = copy.deepcopy(frozen).requires_grad_(True)  # initialised from the pretrained tower
        n = len(points)
        self.cct = nn.ModuleList([CrossFrameCommunication(p.width, p.heads, additive=self.kind == RESNET and i < n - 1)
                                  for i, p in enumerate(points) if i >= self.first])
        dim, width = self.embed_dim, points[-1].width
        self.mit = TemporalTransformer(dim, o["mit_depth"], max(1, dim // 64), o["max_frames"],
                                       identity_init=o["identity_init"])
        self.difference = float(o["difference"])
        self.prompts_visual_ln = nn.LayerNorm(width)
        self.prompts_visual_proj = nn.Parameter(torch.randn(width, dim) * width**-0.5)
        self.prompts = VideoSpecificPrompt(dim, o["prompt_layers"], max(1, dim // 64), o["alpha_init"])

    def train(self, mode: bool = True) -> "XClipAdapter":
        super().train(mode)
        if self.options["tune_vision"]:
            freeze_batchnorm(self.visual)  # a ResNet copy keeps its pretrained BatchNorm statistics
        return self

    def vision(self) -> nn.Module:
        return self.visual if self.options["tune_vision"] else self.clip.visual

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        tower = [p for n, p in self.named_parameters() if p.requires_grad and n.startswith("visual.")]
        new = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("visual.")]
        lr = lr * self.options["lr_scale"]
        groups = [{"params": new, "lr": lr}]
        if tower:
            groups.append({"params": tower, "lr": lr * self.options["vision_lr_scale"]})
        return groups

    def tower(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames [B, T, 3, S, S] -> frame features [B, T, D] (not normalised) and visual tokens [B, P, D]."""
        b, t = frames.shape[:2]
        visual = self.vision()
        images = frames.flatten(0, 1).float()
        grad_prefix = torch.is_grad_enabled() and self.options["tune_vision"]
        if self.kind == VIT:
            blocks = visual.transformer.resblocks
            with torch.set_grad_enabled(grad_prefix):  # a frozen prefix needs no graph
                x = vit_tokens(visual, images)
                for block in blocks[: self.first]:
                    x = block(x)
            for cct, block in zip(self.cct, blocks[self.first :]):
                x = cct(block, x, b, t)
            cls, _ = vit_head(visual, x)
            tokens = x[:, 1:]
        else:
            stages = resnet_stages(visual)
            with torch.set_grad_enabled(grad_prefix):
                x = visual.stem(images)
                for stage in stages[: self.first]:
                    x = stage(x)
            for cct, stage in zip(self.cct[:-1], stages[self.first :]):
                x = stage(x)
                x = from_tokens(cct.diffuse(to_tokens(x), b, t), x)
            tokens = to_tokens(x)
            cls = attnpool_with(visual.attnpool, x, self.cct[-1].messages(tokens.mean(dim=1), b, t))
        tokens = self.prompts_visual_ln(tokens) @ self.prompts_visual_proj  # [BT, P, D]
        return cls.reshape(b, t, -1), tokens.reshape(b, t, *tokens.shape[1:]).mean(dim=1)

    def video_from(self, frame: torch.Tensor) -> torch.Tensor:
        return F.normalize(add_difference(self.mit.pool(frame, self.options["centre"]), frame, self.difference), dim=-1)

    def video_embed(self, features: torch.Tensor | None, frames: torch.Tensor | None = None) -> torch.Tensor:
        if frames is None:
            raise ValueError("xclip re-runs the vision tower: it needs frames (needs_frames=True)")
        frame, _ = self.tower(frames)
        return self.video_from(frame)

    def prompted_text(self, texts: Sequence[str], visual: torch.Tensor) -> torch.Tensor:
        """Video-specific text features [B, N, D] (normalised): text + alpha * prompt(text | video),
        with text the unit-norm or the raw text features (`prompt_on`)."""
        text = self.frozen_text(texts, normalise=self.options["prompt_on"] == "unit")
        text = text.unsqueeze(0).expand(visual.shape[0], -1, -1)
        return F.normalize(text + self.prompts(text, visual), dim=-1)

    def scores(self, features: torch.Tensor | None, frames: torch.Tensor | None, texts: Sequence[str]) -> torch.Tensor:
        if frames is None:
            raise ValueError("xclip scores need frames")
        frame, visual = self.tower(frames)
        video = self.video_from(frame)
        return torch.einsum("bd,bnd->bn", video, self.prompted_text(texts, visual))


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [ensemble_spec(XClipAdapter,
                          "cross-frame communication + multi-frame integration + video-specific prompts (Ni et al. 2022)")]


@hookimpl
def streamvl_rerankers() -> list[RerankerSpec]:
    from streamvl.search.rereading import rerank_with_frames

    return [RerankerSpec("xclip-prompts", partial(rerank_with_frames, frames=8),
                         "xclip's video-specific prompts (reads each hit's frames again)")]
