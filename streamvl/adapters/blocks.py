"""Building blocks for trainable video adapters on a frozen open_clip model (plain torch, no Ray).

`TorchAdapter` is the base class of the trainable seed adapters (prompt, xclip, litevl, alpro):
it satisfies the `VideoAdapter` contract (encode_video / encode_text, inference only) and adds
what training and evaluation need: `video_embed` / `text_embed` / `scores` with gradients, a
learnable temperature, a default symmetric NCE loss, parameter counts and safetensors
checkpoints with a JSON config beside them.

The frozen backbone (`LoadedModel.model`) is held as a plain attribute, never registered as a
submodule: the adapter's `state_dict()` is exactly its own (new) state, and an optimiser built
from `trainable_parameters()` cannot touch the backbone.

Helpers that reach into open_clip's towers without forking them:
  `prompted_text_features`  the text transformer on token embeddings with prompt vectors inserted
  `vit_tokens` / `vit_head` the vision tower split at its residual blocks (for wrapping them)
  `TemporalTransformer`     a light Transformer over frame features with temporal positions
  `exposure_stills`         one still per clip that carries its motion, from its frames
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvl.adapters.exposure import EXPOSURE_DECAY, EXPOSURE_FRAMES, exposure_indices, recency_weights

if TYPE_CHECKING:
    from streamvl.models.loading import LoadedModel

CHECKPOINT_FORMAT = "streamvl-adapter/1"
MAX_LOGIT_SCALE = 100.0


# ---------------------------------------------------------------- batches and losses


def module_digest(module: nn.Module) -> str:
    """sha256 over every tensor of a module's state dict (names, dtypes, shapes, bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class TrainBatch:
    """One training step's inputs: B clips against N texts.

    features [B, T, D] frozen frame embeddings; frames [B, T, 3, S, S] preprocessed (only for
    adapters that need frames); positives bool [B, N]: clip b matches text n. class_texts: the
    texts are the task's class names (recognition), not one caption per clip (retrieval).
    """

    features: torch.Tensor
    frames: torch.Tensor | None
    texts: list[str]
    positives: torch.Tensor
    class_texts: bool = False


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


# ---------------------------------------------------------------- open_clip surgery


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


# ---------------------------------------------------------------- the base adapter


def checkpoint_config_path(path: str | Path) -> Path:
    """The JSON config beside a checkpoint: adapter.safetensors -> adapter.json."""
    return Path(path).with_suffix(".json")


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a checkpoint (adapter name, options, backbone, classes, training report)."""
    cfg_path = checkpoint_config_path(path)
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read adapter checkpoint config {cfg_path}: {exc}") from exc
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{cfg_path} is not a streamvl adapter checkpoint (format {config.get('format')!r})")
    return config


class TorchAdapter(nn.Module):
    """Base class of the trainable adapters. Subclasses set `name`, `defaults` and implement
    `build()`, `video_embed()` and (unless the plain text tower is right) `text_embed()`.

    options: the subclass's `defaults` overridden by a checkpoint's saved options, then by the
    options given (unknown keys are an error). `checkpoint` (a .safetensors path) loads trained
    weights and refuses a checkpoint trained on another backbone.
    """

    name: ClassVar[str] = ""
    needs_frames: ClassVar[bool] = False
    # Objective on class-name texts: "symmetric" NCE, or "video_to_text" cross-entropy over the
    # classes. The text->video half asks each class text to pick its clips out of the batch,
    # which frozen appearance dominates; an adapter whose only trainable path is the video tower
    # can satisfy it only by erasing appearance, and collapses every clip to one vector.
    class_objective: ClassVar[str] = "symmetric"
    defaults: ClassVar[dict[str, Any]] = {}
    common: ClassVar[dict[str, Any]] = {"template": "{}", "max_frames": 64}

    def __init__(self, model: "LoadedModel", options: dict[str, Any] | None = None) -> None:
        super().__init__()
        options = dict(options or {})
        checkpoint = options.pop("checkpoint", None)
        saved = read_checkpoint_config(checkpoint) if checkpoint else {}
        if saved and saved.get("adapter") != self.name:
            raise ValueError(f"checkpoint {checkpoint} holds adapter {saved.get('adapter')!r}, not {self.name!r}")
        known = {**self.common, **self.defaults}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown {self.name} option(s) {unknown}; known: {sorted(known)} and 'checkpoint'")
        self.options: dict[str, Any] = {**known, **saved.get("options", {}), **options}
        self.backbone = model  # a LoadedModel (not an nn.Module): never registered, never saved
        self.embed_dim = model.embed_dim
        self.checkpoint_info: dict[str, Any] = saved
        self._text_cache: dict[str, torch.Tensor] = {}
        self.build()
        # the learnable temperature starts at the backbone's (CLIP's 1/0.07 when it has none)
        start = model.model.logit_scale.detach().exp() if hasattr(model.model, "logit_scale") else torch.tensor(1 / 0.07)
        self.logit_scale = nn.Parameter(start.clamp(max=MAX_LOGIT_SCALE).log().reshape(()).float().clone())
        if checkpoint:
            self.load_weights(checkpoint, saved)
        self.eval()

    # -- to implement

    def build(self) -> None:
        """Create the adapter's own modules from self.options."""

    def video_embed(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, D] frame features (and frames) -> [B, D] L2-normalised, with gradients."""
        raise NotImplementedError

    def text_embed(self, texts: Sequence[str]) -> torch.Tensor:
        """N texts -> [N, D] L2-normalised. Default: the frozen text tower with `template` (cached)."""
        return self.frozen_text(texts)

    # -- shared behaviour

    def number_option(self, key: str) -> float:
        """A numeric option's value, or a ValueError naming the adapter and the option."""
        value = self.options[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.name} option {key!r} must be a number, got {value!r}")
        return float(value)

    @property
    def clip(self) -> nn.Module:
        return self.backbone.model

    def frozen_text(self, texts: Sequence[str], normalise: bool = True) -> torch.Tensor:
        """Frozen text features [N, D], cached per text (plain tensors, usable under autograd).

        normalise=False gives the text tower's raw output, whose norm is the backbone's (about 20
        for the shapes-world models): what X-CLIP's code adds its prompts to (xclip prompt_on="raw").
        """
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors even when called under inference_mode
                tokens = self.backbone.tokenizer([self.options["template"].format(t) for t in missing])
                feats = self.clip.encode_text(tokens).float()
            self._text_cache.update({t: f.clone() for t, f in zip(missing, feats)})
        if not texts:
            return torch.zeros(0, self.embed_dim)
        feats = torch.stack([self._text_cache[t] for t in texts])
        return F.normalize(feats, dim=-1) if normalise else feats

    def scores(self, features: torch.Tensor, frames: torch.Tensor | None, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarities [B, N] of B clips and N texts (with gradients where trainable)."""
        return self.video_embed(features, frames) @ self.text_embed(texts).t()

    def scale(self) -> torch.Tensor:
        """The learnable inverse temperature, clamped like CLIP's."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Default objective: symmetric NCE between clips and texts (class_objective on class names)."""
        logits = self.scale() * self.scores(batch.features, batch.frames, batch.texts)
        if batch.class_texts and self.class_objective == "video_to_text":
            loss = video_to_text_nce(logits, batch.positives)
            return loss, {"v2t": float(loss.detach())}
        loss = symmetric_nce(logits, batch.positives)
        return loss, {"nce": float(loss.detach())}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups; subclasses give pretrained-initialised parts a smaller rate."""
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the trainable parameters' gradients to a total norm (an ensemble clips per member)."""
        torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), max_norm)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable adapter parameters, and the total including the frozen backbone."""
        own = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters())
        backbone = sum(p.numel() for p in self.clip.parameters())
        return {"trainable": trainable, "adapter": own, "backbone": backbone, "total": own + backbone}

    def encode_video(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """VideoAdapter contract: inference-only video embeddings [B, D]."""
        self.eval()
        with torch.no_grad():
            return self.video_embed(None if features is None else features.float(), None if frames is None else frames.float())

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """VideoAdapter contract: inference-only text embeddings [N, D]."""
        self.eval()
        with torch.no_grad():
            return self.text_embed(list(texts))

    # -- checkpoints

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write weights (safetensors) and the JSON config beside them; returns the weights path."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"format": CHECKPOINT_FORMAT, "adapter": self.name})
        config = {
            "format": CHECKPOINT_FORMAT,
            "adapter": self.name,
            "options": self.options,
            "backbone": {"model": self.backbone.spec.text, "weights_sha256": self.backbone.weights_sha256},
            **(extra or {}),
        }
        checkpoint_config_path(path).write_text(json.dumps(config, indent=1, default=str))
        return path

    def load_weights(self, path: str | Path, config: dict[str, Any]) -> None:
        from safetensors.torch import load_file

        want = config.get("backbone", {}).get("weights_sha256")
        if want and want != self.backbone.weights_sha256:
            raise ValueError(f"checkpoint {path} was trained on backbone {config['backbone'].get('model')!r} "
                             f"(weights {want}), not on {self.backbone.spec.text!r} ({self.backbone.weights_sha256})")
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"cannot read adapter weights {path}: {exc}") from exc
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {path} does not fit {self.name} with options {self.options}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
