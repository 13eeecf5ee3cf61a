"""models/attention.py: open_clip's self-attention rebuilt from nn.Linear layers computes what
nn.MultiheadAttention computes, shares its weights, and leaves attention it cannot reproduce alone."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from open_clip.transformer import Transformer  # noqa: E402

from streamvl.models.attention import split_attention  # noqa: E402


def tower(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(width=64, layers=2, heads=4, batch_first=True).eval()
    for p in model.parameters():  # open_clip zero-initialises nothing here, but make biases non-trivial too
        torch.nn.init.normal_(p, std=0.2)
    return model


@pytest.mark.parametrize("causal", [False, True])
def test_split_attention_matches_multihead_attention(causal):
    model, x = tower(), torch.randn(3, 7, 64)
    mask = torch.full((7, 7), float("-inf")).triu(1) if causal else None
    with torch.no_grad():
        before = model(x, attn_mask=mask)
        undo = split_attention(model)
        assert all(type(b.attn).__name__ == "SplitAttention" for b in model.resblocks)
        after = model(x, attn_mask=mask)
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
        undo()
        assert all(type(b.attn) is torch.nn.MultiheadAttention for b in model.resblocks)
        assert torch.equal(model(x, attn_mask=mask), before)


def test_split_attention_shares_the_weights_instead_of_copying_them():
    model = tower()
    original = model.resblocks[0].attn
    split_attention(model)
    split = model.resblocks[0].attn
    assert split.in_proj.weight is original.in_proj_weight and split.in_proj.bias is original.in_proj_bias
    assert split.out_proj.weight is original.out_proj.weight


def test_attention_it_cannot_reproduce_is_left_alone_and_cross_attention_is_refused():
    model = tower()
    model.resblocks[1].attn.add_zero_attn = True  # not plain: SplitAttention does not model it
    split_attention(model)
    assert type(model.resblocks[0].attn).__name__ == "SplitAttention"
    assert type(model.resblocks[1].attn) is torch.nn.MultiheadAttention
    x = torch.randn(1, 5, 64)
    with pytest.raises(ValueError, match="self-attention only"):
        model.resblocks[0].attn(x, torch.randn(1, 5, 64), torch.randn(1, 5, 64))
