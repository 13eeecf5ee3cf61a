"""Prompting open_clip's frozen text tower: learnable vectors around each tokenised text (plain torch).

  `prompted_text_features`  the text transformer on token embeddings with prompt vectors inserted
  `word_embeddings`         token embeddings of a template, to start prompt vectors from (CoOp)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from streamvl.models.loading import LoadedModel


def clip_module(model: "LoadedModel") -> nn.Module:
    """The open_clip CLIP module; text helpers need the plain CLIP layout (token_embedding, transformer)."""
    clip = model.model
    for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask"):
        if not hasattr(clip, attr):
            raise ValueError(f"model {model.spec.text!r}: text tower lacks {attr!r} (need an open_clip CLIP, not CustomTextCLIP)")
    return clip


def prompt_positions(token_ids: torch.Tensor, n_prefix: int, n_postfix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each slot of the prompted sequence reads from, and the new end-of-text positions.

    The source bank per row is [SOT, prefix(P), words..., EOT, pads..., postfix(Q)] laid out as
    cat(token_emb[:, :1], prefix, token_emb[:, 1:], postfix) (length L + P + Q). The output row is
    [SOT, prefix, words, postfix, EOT, pads] cut to L; over-long texts lose their last words so the
    EOT token always fits. Returns gather indices [N, L] and EOT positions [N].
    """
    n, length = token_ids.shape
    eot = token_ids.argmax(dim=-1)  # open_clip's convention: EOT has the highest id
    room = length - 2 - n_prefix - n_postfix
    if room < 1:
        raise ValueError(f"{n_prefix}+{n_postfix} prompt vectors leave no room in a context of {length} tokens")
    index = torch.empty(n, length, dtype=torch.long)
    new_eot = torch.empty(n, dtype=torch.long)
    for i in range(n):
        words = min(int(eot[i]) - 1, room)
        seq = [0] + list(range(1, 1 + n_prefix))  # SOT, prefix
        seq += [1 + n_prefix + j for j in range(words)]  # words (bank offset: SOT + prefix)
        seq += [length + n_prefix + j for j in range(n_postfix)]  # postfix
        new_eot[i] = len(seq)
        seq.append(n_prefix + int(eot[i]))  # EOT
        pad = n_prefix + int(eot[i]) + 1
        seq += [min(pad + j, length + n_prefix - 1) for j in range(length - len(seq))]  # pads (zeros' embedding)
        index[i] = torch.tensor(seq[:length])
    return index, new_eot


def prompted_text_features(clip: nn.Module, token_ids: torch.Tensor, prefix: torch.Tensor | None,
                           postfix: torch.Tensor | None) -> torch.Tensor:
    """Text features [N, D] (not normalised) with learnable vectors around each tokenised text.

    The frozen text transformer runs on token embeddings with prefix [P, W] / postfix [Q, W]
    inserted; the feature is taken at the shifted EOT position and projected as open_clip does.
    Gradients flow through the frozen transformer into the prompt vectors. With no prompt
    vectors this equals `clip.encode_text(token_ids)`.
    """
    emb = clip.token_embedding(token_ids)  # [N, L, W]
    n, length, width = emb.shape
    p = 0 if prefix is None else prefix.shape[0]
    q = 0 if postfix is None else postfix.shape[0]
    parts = [emb[:, :1]]
    if p:
        parts.append(prefix.to(emb.dtype).unsqueeze(0).expand(n, -1, -1))
    parts.append(emb[:, 1:])
    if q:
        parts.append(postfix.to(emb.dtype).unsqueeze(0).expand(n, -1, -1))
    bank = torch.cat(parts, dim=1)  # [N, L + P + Q, W]
    index, eot = prompt_positions(token_ids, p, q)
    x = bank.gather(1, index.to(bank.device).unsqueeze(-1).expand(-1, -1, width))
    x = x + clip.positional_embedding.to(x.dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    x = x[torch.arange(n, device=x.device), eot.to(x.device)]
    proj = clip.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def word_embeddings(model: "LoadedModel", words: str) -> torch.Tensor:
    """Token embeddings [P, W] of a text's tokens (without start and end of text), detached.

    Prompt vectors started from them make the prompted text read exactly like `words {}` at the
    first step (CoOp's initialisation from a template, Zhou et al. 2022).
    """
    ids = model.tokenizer([words])[0]
    tokens = ids[1 : int(ids.argmax())]  # open_clip's convention: EOT has the highest id
    if not len(tokens):
        raise ValueError(f"prompt words {words!r} have no tokens")
    return clip_module(model).token_embedding.weight[tokens].detach().float().clone()
