"""Zero-shot evaluation of a frozen model on held-out shapes-world clips, through the meanpool adapter.

Four measurements (the README's model card quotes `python jobs/evaluate_zeroshot.py`):

- static: which (shape, colour) is the one object of a held-out clip? Clips come from the TEST
  domain (the shape/colour combos held out of the video splits' training sides, half of them on
  the checker background, which pretraining never shows) with odd seeds
  (`item_seed(seed, "test", action, i)`), one object and no distractors, every action but
  change_colour (whose colour changes mid-clip). Each of the 60 combos gets the prompts
  STATIC_TEMPLATES (averaged text embeddings). Shape and colour are classified with CLIP-style
  prompt ensembles: a shape's class embedding is the normalised mean over all colours (and
  templates) of "a {colour} {shape}", a colour's the mean over all shapes; shape+colour picks one
  of the 60 combo prompts. For transparency the result also gives the shape and colour read off
  the combo logits (logsumexp over the other attribute).
- order: for each ORDER_PAIRS pair (A, B), clips of A and of B, each scored against two prompts
  naming its own object ("a video of a red star moving left" / "... moving right"). A frame
  average cannot see order, so this should sit near chance (0.5): the gap video adapters close.
- actions: which of the 13 actions is a one-object held-out clip doing? Each clip is scored
  against the 13 prompts ORDER_TEMPLATE naming its own object, read two ways: the frame mean,
  and an *exposure* of the clip (`recency_blend` of EXPOSURE_FRAMES evenly spread frames, weight
  EXPOSURE_DECAY ** age: the still a model pretrained on action exposures reads motion from,
  made without knowing when in the clip the action happens). Nothing is trained: this is what
  the frozen towers alone know of actions.

- pose: is the object in a single frame upright, tilted left, tilted right or inverted
  (synthetic.pose_name)? First frames of held-out clips of actions that keep the angle
  (POSE_ACTIONS, circles left out), prompts POSES naming the object; `side_top1` is left vs right
  among the tilted ones. A video adapter can only tell a clockwise turn from a counter-clockwise
  one if its frame features carry the pose.

Frames are rendered by the generator directly at the model's input size (no video encoding and
no resize), 16 frames at 8 fps per clip; frame embeddings go through the meanpool adapter
(L2-normalised mean of L2-normalised frame embeddings) and text through the plain text tower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from streamvl.training.metrics import accuracy, per_class_accuracy
from streamvl.lab.synthetic import (
    ACTIONS,
    COLOURS,
    EXPOSURE_DECAY,
    EXPOSURE_FRAMES,
    ORDER_PAIRS,
    SHAPES,
    TEST,
    ClipSpec,
    ObjectState,
    RenderConfig,
    action_phrase,
    exposure_indices,
    item_seed,
    iter_frames,
    pose_name,
    recency_blend,
    render_clip,
    sample_clip,
    tilt,
)

if TYPE_CHECKING:
    import torch

    from streamvl.models.loading import LoadedModel

STATIC_ACTIONS: tuple[str, ...] = tuple(a for a in ACTIONS if a != "change_colour")
STATIC_TEMPLATES: tuple[str, ...] = ("a {colour} {shape}", "a picture of a {colour} {shape}")
ORDER_TEMPLATE = "a video of a {colour} {shape} {phrase}"
COMBOS: tuple[tuple[str, str], ...] = tuple(product(SHAPES, COLOURS))  # index = shape * len(COLOURS) + colour
_CLIPS_PER_CALL = 32  # clips rendered and encoded together
POSE_ACTIONS: tuple[str, ...] = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink", "bounce")  # angle kept
POSE_TEMPLATE = "a {colour} {shape} {pose}"
# Pose classes, each with two phrasings (ensembled); see synthetic.pose_name.
POSES: tuple[tuple[str, str], ...] = (
    ("upright", "upright"),
    ("tilted to the left", "tilted slightly to the left"),
    ("tilted to the right", "tilted slightly to the right"),
    ("inverted", "inverted"),
)


@dataclass(frozen=True)
class EvalConfig:
    """How many held-out clips to build and how: item seeds are item_seed(seed, "test", action, i)."""

    seed: int = 0
    per_action: int = 50  # static: clips per action (12 actions)
    per_order_action: int = 50  # order: clips per action of each pair (10 actions)
    per_action_class: int = 20  # actions: clips per action (13 actions)
    n_frames: int = 16
    fps: float = 8.0


def heldout_clips(actions: Sequence[str], per_action: int, size: int, config: EvalConfig) -> list[ClipSpec]:
    """One-object TEST-domain clips rendered at `size` x `size`, `per_action` of each action, odd seeds."""
    render = RenderConfig(size, size, config.fps, config.n_frames)
    return [
        sample_clip(item_seed(config.seed, "test", a, i), a, domain=TEST, render=render, n_distractors=0)
        for a in actions for i in range(per_action)
    ]


def actor(spec: ClipSpec) -> ObjectState:
    """The acting object as it starts the clip's first event."""
    return spec.objects[spec.events[0].obj]


def meanpool_adapter(model: "LoadedModel") -> Any:
    """The meanpool baseline adapter, from the same first-party plugin the pipeline uses.

    Only the built-in is registered: a broken third-party entry point must not stop an evaluation.
    """
    from streamvl.plugins.manager import Plugins, build_plugin_manager

    return Plugins(build_plugin_manager(entry_points=False, builtins=True)).adapter("meanpool").build(model, {})


def _rendered(model: "LoadedModel", specs: Sequence[ClipSpec]) -> Iterator[tuple[np.ndarray, "torch.Tensor"]]:
    """Chunks of clips: frames uint8 [B, T, H, W, 3] and their image embeddings [B, T, D]."""
    for lo in range(0, len(specs), _CLIPS_PER_CALL):
        frames = np.stack([render_clip(s) for s in specs[lo : lo + _CLIPS_PER_CALL]])
        b, t = frames.shape[:2]
        yield frames, model.encode_images(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, -1)


def video_embeddings(model: "LoadedModel", adapter: Any, specs: Sequence[ClipSpec]) -> "torch.Tensor":
    """[N, D] clip embeddings: every frame through the image tower, then the adapter's pooling."""
    import torch

    out = []
    for _, feats in _rendered(model, specs):
        with torch.inference_mode():
            out.append(adapter.encode_video(feats).float())
    return torch.cat(out)


def prompt_embeddings(adapter: Any, prompts: Sequence[Sequence[str]]) -> "torch.Tensor":
    """[C, D]: per class, the normalised mean of its prompts' text embeddings (prompt ensembling)."""
    import torch.nn.functional as F

    flat = [p for group in prompts for p in group]
    emb = adapter.encode_text(flat).float().reshape(len(prompts), len(prompts[0]), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def _logits(model: "LoadedModel", video: "torch.Tensor", text: "torch.Tensor") -> np.ndarray:
    scale = float(model.model.logit_scale.detach().exp())
    return (scale * video @ text.T).double().numpy()


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - top).sum(axis=axis)) + top.squeeze(axis)


def evaluate_static(model: "LoadedModel", config: EvalConfig = EvalConfig(), adapter: Any = None) -> dict[str, Any]:
    """Top-1 shape, colour and shape+colour accuracy on held-out one-object clips (see module doc)."""
    import torch.nn.functional as F

    adapter = adapter if adapter is not None else meanpool_adapter(model)
    specs = heldout_clips(STATIC_ACTIONS, config.per_action, model.image_size, config)
    prompts = [[t.format(colour=c, shape=s) for t in STATIC_TEMPLATES] for s, c in COMBOS]
    video, text = video_embeddings(model, adapter, specs), prompt_embeddings(adapter, prompts)
    logits = _logits(model, video, text)
    grid_text = text.reshape(len(SHAPES), len(COLOURS), -1)
    shape_text, colour_text = F.normalize(grid_text.mean(dim=1), dim=-1), F.normalize(grid_text.mean(dim=0), dim=-1)
    truth = [actor(s) for s in specs]
    shape_y = np.array([SHAPES.index(o.shape) for o in truth])
    colour_y = np.array([list(COLOURS).index(o.colour) for o in truth])
    grid = logits.reshape(len(specs), len(SHAPES), len(COLOURS))
    combined_ok = grid.reshape(len(specs), -1).argmax(axis=1) == shape_y * len(COLOURS) + colour_y
    backgrounds = np.array([s.background.family for s in specs])
    return {
        "n_clips": len(specs),
        "shape_top1": accuracy(_logits(model, video, shape_text), shape_y),
        "colour_top1": accuracy(_logits(model, video, colour_text), colour_y),
        "combined_top1": accuracy(logits, shape_y * len(COLOURS) + colour_y),
        "shape_top1_from_combos": accuracy(_logsumexp(grid, axis=2), shape_y),
        "colour_top1_from_combos": accuracy(_logsumexp(grid, axis=1), colour_y),
        "combined_top1_by_background": {b: float(combined_ok[backgrounds == b].mean()) for b in sorted(set(backgrounds))},
        "classes": len(COMBOS),
        "templates": list(STATIC_TEMPLATES),
    }


def _order_prompts(obj: ObjectState, pair: tuple[str, str]) -> list[str]:
    return [ORDER_TEMPLATE.format(colour=obj.colour, shape=obj.shape, phrase=action_phrase(a)) for a in pair]


def evaluate_order(model: "LoadedModel", config: EvalConfig = EvalConfig(), adapter: Any = None) -> dict[str, Any]:
    """Top-1 between the two actions of each order pair, prompts naming the clip's own object."""
    adapter = adapter if adapter is not None else meanpool_adapter(model)
    per_pair, hits, total = {}, 0.0, 0
    for pair in ORDER_PAIRS:
        specs = heldout_clips(pair, config.per_order_action, model.image_size, config)
        video = video_embeddings(model, adapter, specs)
        text = adapter.encode_text([p for s in specs for p in _order_prompts(actor(s), pair)]).float()
        scores = (video[:, None, :] * text.reshape(len(specs), 2, -1)).sum(-1).double().numpy()
        labels = np.array([pair.index(s.events[0].action) for s in specs])
        per_pair[f"{pair[0]}/{pair[1]}"] = accuracy(scores, labels)
        hits, total = hits + per_pair[f"{pair[0]}/{pair[1]}"] * len(specs), total + len(specs)
    return {"n_clips": total, "top1": hits / total, "chance": 0.5, "by_pair": per_pair, "template": ORDER_TEMPLATE}


def clip_exposure(frames: np.ndarray, n: int = EXPOSURE_FRAMES, decay: float = EXPOSURE_DECAY) -> np.ndarray:
    """One still of a clip's frames [T, H, W, 3]: the recency blend of n evenly spread frames."""
    return recency_blend(frames[exposure_indices(len(frames), n)], decay)


def action_embeddings(model: "LoadedModel", adapter: Any, specs: Sequence[ClipSpec]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """[N, D] frame-mean embeddings and [N, D] exposure embeddings of the same clips."""
    import torch
    import torch.nn.functional as F

    means, stills = [], []
    for frames, feats in _rendered(model, specs):
        with torch.inference_mode():
            means.append(adapter.encode_video(feats).float())
        stills.append(F.normalize(model.encode_images(np.stack([clip_exposure(f) for f in frames])).float(), dim=-1))
    return torch.cat(means), torch.cat(stills)


def evaluate_actions(model: "LoadedModel", config: EvalConfig = EvalConfig(), adapter: Any = None) -> dict[str, Any]:
    """13-way action top-1 from the frame mean and from the clip's exposure (see module doc)."""
    adapter = adapter if adapter is not None else meanpool_adapter(model)
    specs = heldout_clips(ACTIONS, config.per_action_class, model.image_size, config)
    phrases = ["changing colour" if a == "change_colour" else action_phrase(a) for a in ACTIONS]  # no colour-free phrase
    prompts = [ORDER_TEMPLATE.format(colour=actor(s).colour, shape=actor(s).shape, phrase=p) for s in specs for p in phrases]
    text = adapter.encode_text(prompts).float().reshape(len(specs), len(ACTIONS), -1)
    labels = np.array([ACTIONS.index(s.events[0].action) for s in specs])
    out: dict[str, Any] = {"n_clips": len(specs), "chance": 1 / len(ACTIONS), "template": ORDER_TEMPLATE,
                           "exposure": f"{EXPOSURE_FRAMES} evenly spread frames, weight {EXPOSURE_DECAY} ** age"}
    by_action: dict[str, dict[str, float]] = {a: {} for a in ACTIONS}
    for name, video in zip(("frame_mean", "exposure"), action_embeddings(model, adapter, specs)):
        scores = (video[:, None, :] * text).sum(-1).double().numpy()
        out[f"{name}_top1"] = accuracy(scores, labels)
        for a, acc in per_class_accuracy(scores, labels, ACTIONS).items():
            by_action[a][name] = acc
    out["by_action"] = by_action
    return out


def pose_class(obj: ObjectState) -> int:
    """Index into POSES of the object's pose: upright, left, right (any amount of tilt) or inverted."""
    name = pose_name(obj) or "upright"
    return next(i for i, words in enumerate(POSES) if name in words)


def evaluate_pose(model: "LoadedModel", config: EvalConfig = EvalConfig(), adapter: Any = None) -> dict[str, Any]:
    """4-way pose top-1 on the first frame of held-out clips whose actor keeps its angle, and
    left-vs-right top-1 on those tilted to a side (what telling rotation directions apart needs)."""
    import torch

    adapter = adapter if adapter is not None else meanpool_adapter(model)
    specs = [s for s in heldout_clips(POSE_ACTIONS, config.per_action, model.image_size, config) if tilt(actor(s)) is not None]
    stills = np.stack([next(iter_frames(s))[1] for s in specs])  # the first frame only
    with torch.inference_mode():
        video = adapter.encode_video(model.encode_images(stills)[:, None]).float()
    prompts = [[POSE_TEMPLATE.format(colour=actor(s).colour, shape=actor(s).shape, pose=p) for p in words]
               for s in specs for words in POSES]
    text = prompt_embeddings(adapter, prompts)
    scores = (video[:, None, :] * text.reshape(len(specs), len(POSES), -1)).sum(-1).double().numpy()
    labels = np.array([pose_class(actor(s)) for s in specs])
    side = (labels == 1) | (labels == 2)
    return {
        "n_stills": len(specs), "top1": accuracy(scores, labels), "majority": float(np.bincount(labels).max() / len(labels)),
        "by_pose": per_class_accuracy(scores, labels, [words[0] for words in POSES]),
        "side_top1": accuracy(scores[side][:, 1:3], labels[side] - 1), "side_n": int(side.sum()), "side_chance": 0.5,
        "template": POSE_TEMPLATE,
    }


def evaluate(model: "LoadedModel", config: EvalConfig = EvalConfig()) -> dict[str, Any]:
    """The four measurements plus what was measured, JSON-ready."""
    adapter = meanpool_adapter(model)
    return {
        "model": model.spec.text,
        "weights_sha256": model.weights_sha256,
        "adapter": "meanpool",
        "frames": f"{config.n_frames} frames at {config.fps:g} fps rendered directly at "
                  f"{model.image_size}x{model.image_size} (no video encoding, no resize)",
        "heldout": "TEST domain (combos held out of the video splits, unseen checker background on half), odd seeds, "
                   "one object per clip",
        "config": asdict(config),
        "static": evaluate_static(model, config, adapter),
        "order": evaluate_order(model, config, adapter),
        "actions": evaluate_actions(model, config, adapter),
        "pose": evaluate_pose(model, config, adapter),
    }
