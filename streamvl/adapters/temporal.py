"""Reading time from frozen frame features: a light temporal Transformer, the frame difference, exposure stills."""

from __future__ import annotations

import torch
from torch import nn

from streamvl.adapters.exposure import EXPOSURE_DECAY, EXPOSURE_FRAMES, exposure_indices, recency_weights

CHANGE_FLOOR = 1e-3  # below this mean per-frame change (unit-norm features), a clip counts as still
CHANGE_SCALE = 0.1  # the mean per-frame change the temporal blocks see


class TemporalTransformer(nn.Module):
    """Pre-norm Transformer encoder over [B, T, D] frame features with learnable temporal positions.

    Position embeddings start small (std 0.01) and every block is residual, but a pre-norm block
    adds attention and MLP outputs of LayerNorm-ed (unit-variance) tokens, whatever the input's
    size: with PyTorch's default initialisation, prompt's two blocks over v3's frozen features
    pool to a vector 5x the frame mean's norm (cosine 0.07-0.25 to it). With `identity_init` the
    blocks' output projections (attention and MLP) start at zero, so every block starts as the
    identity and the pooled output as the frame mean plus the mean position embedding; the
    projections' gradients are not zero, so the blocks still train (the zero-initialised
    residual branches of Goyal et al. 2017 and of LiteVL's dynamic temporal scaling).
    """

    def __init__(self, dim: int, depth: int = 1, heads: int = 4, max_frames: int = 64, dropout: float = 0.0,
                 final_norm: bool = False, identity_init: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"temporal transformer width {dim} is not divisible by {heads} heads")
        self.max_frames = max_frames
        self.positions = nn.Parameter(torch.randn(max_frames, dim) * 0.01)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) if depth > 0 else None
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        if identity_init and self.blocks is not None:
            for block in self.blocks.layers:
                for out in (block.self_attn.out_proj, block.linear2):
                    nn.init.zeros_(out.weight)
                    nn.init.zeros_(out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed the {self.max_frames} temporal positions of this adapter")
        x = x + self.positions[:t].to(x.dtype)
        if self.blocks is not None:
            x = self.blocks(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor, centre: bool = False) -> torch.Tensor:
        """Mean-pooled output [B, D] over frames x [B, T, D].

        centre: the blocks see each frame relative to the clip's mean frame, and the mean is
        added back after pooling. Frozen image features are dominated by what is in the frame;
        how it changes is a small residual that a pre-norm block cannot see next to it. Centred,
        the blocks model the change only, and the output is invariant to a shift shared by all
        frames (pool(x + c) = pool(x) + c), so what the clip shows passes through untouched.
        The change is rescaled to a mean per-frame size of CHANGE_SCALE, whatever the backbone:
        small next to what the blocks add (larger settings generalised worse on the shapes
        world's few-shot split), large next to LayerNorm's epsilon.
        """
        if not centre:
            return self(x).mean(dim=1)
        mean = x.mean(dim=1, keepdim=True)
        change = x - mean
        size = change.norm(dim=-1, keepdim=True).mean(dim=1, keepdim=True)
        return self(CHANGE_SCALE * change / (size + CHANGE_FLOOR)).mean(dim=1) + mean[:, 0]


def frame_difference(x: torch.Tensor) -> torch.Tensor:
    """The change [B, D] of frame features x [B, T, D] from a view's first frame to its last.

    A parameter-free motion reading (the feature-space analogue of TSN's RGB difference):
    streamvl-shapes@v3 reads unseen actions from the frame mean plus a multiple of it with
    nothing trained, where the frame mean alone is at chance (bench/bench_class_templates.py).
    Adapters add `difference` x this to their pooled embedding (`add_difference`).
    """
    return x[:, -1] - x[:, 0]


def add_difference(pooled: torch.Tensor, x: torch.Tensor, weight: float) -> torch.Tensor:
    """pooled [B, D] + weight x the frame difference of x [B, T, D]; pooled itself at weight 0."""
    return pooled + weight * frame_difference(x) if weight else pooled


def exposure_stills(frames: torch.Tensor, n: int = EXPOSURE_FRAMES, decay: float = EXPOSURE_DECAY) -> torch.Tensor:
    """Each clip's exposure [B, 3, S, S] from its preprocessed frames [B, T, 3, S, S].

    The recency blend of n evenly spread frames (weight decay ** age), as `zeroshot.clip_exposure`
    makes from raw frames: the still a model pretrained on exposures (streamvl-shapes@v2, @v3)
    reads motion from. Preprocessing is linear (resize, scale, normalise), so blending the
    preprocessed frames gives the preprocessed blend, without its uint8 rounding.
    """
    idx = torch.from_numpy(exposure_indices(frames.shape[1], n))
    w = torch.from_numpy(recency_weights(len(idx), decay)).to(frames.dtype)
    return torch.einsum("k,bkchw->bchw", w, frames[:, idx])
