"""Contrastive objectives over clip-text logits [B, N] with a positives mask (plain torch)."""

from __future__ import annotations

import torch


def video_to_text_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each clip over the texts [B, N] (its positives as one set): with class
    names as texts, the usual recognition objective (X-CLIP's)."""
    positives = positives.bool()
    if not positives.any(dim=1).all():
        raise ValueError("every clip needs at least one positive text")
    neg_inf = torch.finfo(logits.dtype).min
    return (logits.logsumexp(1) - logits.masked_fill(~positives, neg_inf).logsumexp(1)).mean()


def symmetric_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric (video->text and text->video) NCE over logits [B, N] with a positives mask.

    Several positives per row or column (a class shared by clips, a caption repeated) count as
    one positive set (MIL-NCE). Texts with no positive clip in the batch (classes absent from
    it) take part as negatives in the video->text term only.
    """
    v2t = video_to_text_nce(logits, positives)
    positives = positives.bool()
    neg_inf = torch.finfo(logits.dtype).min
    cols = positives.any(dim=0)
    lt, pt = logits.t()[cols], positives.t()[cols]
    t2v = lt.logsumexp(1) - lt.masked_fill(~pt, neg_inf).logsumexp(1)
    return (v2t + t2v.mean()) / 2
