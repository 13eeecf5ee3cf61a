"""Reaching into open_clip's vision towers without forking them: insertion points and a hooked forward pass.

  `vit_tokens` / `vit_head`  a VisionTransformer split at its residual blocks (for wrapping them)
  `insertion_points`         where an adapter may insert modules (ViT blocks, ModifiedResNet stages)
  `run_tower`                the tower's forward pass with a hook at each insertion point
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def check_vit(visual: nn.Module) -> None:
    """Adapters that wrap the vision tower's blocks need open_clip's VisionTransformer layout."""
    missing = [a for a in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
               if not hasattr(visual, a)]
    if missing:
        raise ValueError(f"vision tower {type(visual).__name__} is not an open_clip VisionTransformer (missing {missing})")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok" \
            or getattr(visual, "final_ln_after_pool", False):
        raise ValueError("vision tower must pool its class token (pool_type='tok', no attentional pooler)")
    if not getattr(visual.transformer, "batch_first", True):
        raise ValueError("vision transformer must be batch_first")


def vit_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images [N, 3, S, S] -> input tokens [N, 1 + P, C] of the first residual block (CLS first)."""
    return visual._embeds(images)


def vit_head(visual: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output tokens [N, 1 + P, C] of the last block -> (image features [N, D], patch features [N, P, D]).

    Image features are computed exactly as `visual(images)` computes them (so, with the original
    blocks, bit-identical); patch features go through the same final LayerNorm and projection
    (not L2-normalised).
    """
    pooled, _ = visual._pool(tokens)
    patches = visual.ln_post(tokens[:, 1:])
    if visual.proj is not None:
        pooled, patches = pooled @ visual.proj, patches @ visual.proj
    return pooled, patches


VIT, RESNET = "vit", "resnet"


def tower_kind(visual: nn.Module) -> str:
    """'vit' (open_clip VisionTransformer) or 'resnet' (open_clip ModifiedResNet, e.g. RN50 or the shipped
    shapes-world model); anything else is refused by adapters that wrap the tower's stages."""
    if all(hasattr(visual, a) for a in ("stem", "layer1", "layer2", "layer3", "layer4", "attnpool")):
        return RESNET
    check_vit(visual)
    return VIT


@dataclass(frozen=True)
class InsertionPoint:
    """Where an adapter may insert a module: tokens of this width (and a sensible head count)."""

    width: int
    heads: int


def resnet_stages(visual: nn.Module) -> list[nn.Module]:
    return [visual.layer1, visual.layer2, visual.layer3, visual.layer4]


def stage_width(stage: nn.Module) -> int:
    last = stage[-1]
    return int(last.conv3.out_channels if hasattr(last, "conv3") else last.bn3.num_features)


def insertion_points(visual: nn.Module) -> list[InsertionPoint]:
    """ViT: the input of each residual block. ResNet: the output of each of the four stages."""
    if tower_kind(visual) == VIT:
        return [InsertionPoint(visual.transformer.width, b.attn.num_heads) for b in visual.transformer.resblocks]
    return [InsertionPoint(w, max(1, w // 64)) for w in map(stage_width, resnet_stages(visual))]


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """A feature map [N, C, H, W] as tokens [N, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(like.shape)


def attnpool_dense(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-position embeddings [N, H*W, D] of a ModifiedResNet's attention pool: each spatial token
    through the pool's value and output projections (the MaskCLIP reading of dense CLIP features)."""
    tokens = to_tokens(x) + pool.positional_embedding[1:].to(x.dtype)
    return pool.c_proj(pool.v_proj(tokens))


def attnpool_with(pool: nn.Module, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """The attention pool's output when `extra` tokens [N, E, C] join its keys and values."""
    t = torch.cat([to_tokens(x).mean(dim=1, keepdim=True), to_tokens(x)], dim=1) + pool.positional_embedding.to(x.dtype)
    t = torch.cat([t, extra], dim=1).transpose(0, 1)  # (1 + HW + E) N C
    out, _ = F.multi_head_attention_forward(
        query=t[:1], key=t, value=t, embed_dim_to_check=t.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
    return out[0]


Hook = Any  # Callable[[torch.Tensor], torch.Tensor] on tokens [N, L, C], or None


def run_tower(visual: nn.Module, images: torch.Tensor, hooks: Sequence[Hook], first: int = 0,
              frozen_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images [N, 3, S, S] -> (image features [N, D], dense features [N, P, D], final tokens [N, P, C]).

    hooks[k] (one per insertion point, or None) maps tokens [N, L, C] to tokens at point k. With
    every hook None, image features are exactly `visual(images)`. Points before `first` take no
    hook; with frozen_prefix they run without an autograd graph (nothing trainable there).
    """
    kind = tower_kind(visual)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_prefix):
        if kind == VIT:
            x = vit_tokens(visual, images)
            for block in visual.transformer.resblocks[:first]:
                x = block(x)
        else:
            x = visual.stem(images)
            for stage in resnet_stages(visual)[:first]:
                x = stage(x)
    if kind == VIT:
        for hook, block in zip(hooks[first:], visual.transformer.resblocks[first:]):
            x = block(hook(x) if hook is not None else x)
        pooled, dense = vit_head(visual, x)
        return pooled, dense, x[:, 1:]
    for hook, stage in zip(hooks[first:], resnet_stages(visual)[first:]):
        x = stage(x)
        if hook is not None:
            x = from_tokens(hook(to_tokens(x)), x)
    return visual.attnpool(x), attnpool_dense(visual.attnpool, x), to_tokens(x)


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep BatchNorm layers on their pretrained statistics (eval mode) inside a module being trained."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
