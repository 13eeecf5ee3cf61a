"""open_clip's self-attention as two plain nn.Linear layers, so that quantisers see its projections.

nn.MultiheadAttention keeps its packed q/k/v input projection as a bare parameter (not an nn.Linear)
and its output projection as NonDynamicallyQuantizableLinear: torch's dynamic int8 quantisation skips
both, leaving a third of a transformer block's weights in fp32. At query time (one short text) those
fp32 weights are what the text tower spends its time reading. `split_attention` swaps each plain
batch-first self-attention of an open_clip transformer for `SplitAttention`, which computes the same
thing from nn.Linear layers sharing the original parameters (no copy), and returns the undo.
"""

from __future__ import annotations

import functools
from typing import Any, Callable


def split_attention(transformer: Any) -> Callable[[], None]:
    """Replace, in place, every ResidualAttentionBlock's plain self-attention in `transformer` with a
    SplitAttention sharing its weights; returns the undo (puts the nn.MultiheadAttention modules back).
    Blocks whose attention is not plain batch-first self-attention with biases are left as they are."""
    swapped = []
    for block in transformer.modules():
        attn = getattr(block, "attn", None)
        if type(block).__name__ == "ResidualAttentionBlock" and plain_self_attention(attn):
            block.attn = split_attention_class()(attn)
            swapped.append((block, attn))

    def undo() -> None:
        for block, attn in swapped:
            block.attn = attn

    return undo


def plain_self_attention(attn: Any) -> bool:
    """True for an nn.MultiheadAttention SplitAttention reproduces: batch first, one packed q/k/v
    projection with bias, no extra key/value bias or zero attention."""
    import torch

    return (isinstance(attn, torch.nn.MultiheadAttention) and attn.batch_first and attn._qkv_same_embed_dim
            and attn.in_proj_bias is not None and attn.out_proj.bias is not None and attn.bias_k is None
            and not attn.add_zero_attn and attn.dropout == 0.0)


@functools.cache
def split_attention_class() -> type:
    """The SplitAttention module class (made on first use: torch is imported lazily)."""
    import torch
    import torch.nn.functional as F

    class SplitAttention(torch.nn.Module):
        """What a plain batch-first nn.MultiheadAttention computes for self-attention (q = k = v),
        from an nn.Linear for the packed q/k/v projection and one for the output projection."""

        def __init__(self, attn: torch.nn.MultiheadAttention) -> None:
            super().__init__()
            dim = attn.embed_dim
            self.heads = attn.num_heads
            self.in_proj = torch.nn.Linear(dim, 3 * dim, device="meta")
            self.in_proj.weight, self.in_proj.bias = attn.in_proj_weight, attn.in_proj_bias
            self.out_proj = torch.nn.Linear(dim, dim, device="meta")
            self.out_proj.weight, self.out_proj.bias = attn.out_proj.weight, attn.out_proj.bias

        def forward(self, query: torch.Tensor, key: Any = None, value: Any = None, need_weights: bool = False,
                    attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
            if (key is not None and key is not query) or (value is not None and value is not query):
                raise ValueError("SplitAttention computes self-attention only: key and value must be the query")
            n, length, dim = query.shape
            qkv = self.in_proj(query).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
            return self.out_proj(out.transpose(1, 2).reshape(n, length, dim)), None

    return SplitAttention
