"""Contrastive pretraining of a tiny open_clip model on shapes-world stills.

Everything follows from PretrainConfig: the init (torch seed + the seeded token embedding of
streamvl.models.weights), the data (batch `step` is drawn from numpy seed [seed, step]) and the
schedule. Stills come from the PRETRAIN domain (every shape-colour combo, never the held-out
checker background; `domain="train"` also withholds the held-out combos), rendered at the
model's input size; captions are `static_caption` or its terser variant `short_static_caption` (some objects named by shape or colour alone): shape,
colour, size, position and background, never a motion or order word. Half of each batch is
pairs of stills that differ in one object's shape only (hard negatives: without them colour and
position are enough to tell captions apart and shape is never learned). The model is open_clip's own CLIP module trained with open_clip.ClipLoss.

With `motion_p` (v2), that share of each batch is instead *exposures* (clips.exposure: one
action as one still whose fading traces show where the object came from, as motion blur does in
a photograph) captioned with the action ("a red star moves left"); order-pair actions come with
their time reverse. Web-scale CLIP learns action words from such stills; v1 never sees one.

With `pose_pairs` / `pose_p` (v3), still captions also name poses ("a red star tilted to the
left": world.pose_name, the tilt from upright within the shape's symmetry period), and a share
of the stills are pairs that differ only in one object's pose (tilt mirrored, or turned by half
the symmetry period). Nothing else asks the image tower for orientation, and without it a
frame-feature adapter has nothing to tell a clockwise turn from a counter-clockwise one by.

The token embedding gets no weight decay, so AdamW leaves every row that never received a
gradient bit-identical to its seeded init; `export` checks that and stores only changed rows.
Matmuls run in bfloat16 autocast (CPU AMX) with math attention, the fastest combination on
the 2-core build machine; the master weights stay float32.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from streamvl.lab.synthetic import (
    ACTIONS,
    DOMAINS,
    POSE_BOUNDS,
    SHAPES,
    ClipSpec,
    Domain,
    SceneState,
    clip_captions,
    exposure,
    render_frame,
    reverse_action,
    reverse_clip,
    sample_clip,
    sample_still_scene,
    short_static_caption,
    static_caption,
    tilt,
    with_tilt,
)

ABOUT = ("streamvl-tiny contrastively pretrained from scratch on procedurally generated shapes-world stills "
         "with static captions (shape, colour, size, position, background). Not a general-purpose model.")


def about(config: "PretrainConfig") -> str:
    """The model card line of a recipe's export: what the model was trained from and on."""
    posed = bool(config.pose_pairs or config.pose_p)
    if not config.motion_p and config.init is None and not posed:
        return ABOUT
    start = f"streamvl-tiny continued from {config.init}" if config.init else "streamvl-tiny pretrained from scratch"
    motion = (" and on exposures of one action each (fading traces of the motion) with the action's caption"
              if config.motion_p else "")
    pose = ", background, pose" if posed else ", background"
    return (f"{start}, contrastively, on procedurally generated shapes-world stills with static captions (shape, "
            f"colour, size, position{pose}){motion}. Not a general-purpose model.")


@dataclass(frozen=True)
class PretrainConfig:
    """The whole recipe. `seed`, `steps` (the schedule's length) and `stop_after` fix the result;
    `minutes` is a wall-clock safety cap whose stopping step is recorded (steps_done), so a capped
    run is reproduced by the same recipe with stop_after=steps_done."""

    arch: str = "streamvl-shapes"
    domain: str = "pretrain"  # "train" also withholds the held-out shape-colour combos (strict variant)
    name: str = "v1"
    seed: int = 0
    steps: int = 3200
    batch: int = 256
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 150
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    short_caption_p: float = 0.5
    shape_pairs: float = 0.5  # fraction of a batch made of (scene, same scene with one shape changed) pairs
    partial_p: float = 0.3  # in short captions of unpaired stills: chance an object is named by shape or colour only
    grey_p: float = 0.0  # chance a still (or a shape-swap pair) is shown in greyscale with a colourless caption
    motion_p: float = 0.0  # share of a batch that is exposures of one action (clips.exposure) with its caption
    pose_pairs: float = 0.0  # fraction of the stills that are (scene, same scene with one object's pose changed) pairs
    pose_p: float = 0.0  # in captions of the other stills: chance an object's pose is named ("tilted to the left")
    init: str | None = None  # a compact model spec to continue from (its token init seed must be `seed`)
    data_seed: int | None = None  # seed of the batches when it differs from `seed` (e.g. when continuing)
    bf16: bool = True
    threads: int = 2
    eval_every: int = 250
    eval_per_action: int = 6
    minutes: float | None = None
    stop_after: int | None = None  # stop after this many steps of the `steps`-long schedule
    storage_dtype: str = "float16"

    @property
    def last_step(self) -> int:
        """The step count a complete run of this recipe reaches."""
        return self.stop_after or self.steps


@dataclass
class PretrainResult:
    """What a run produced: the trained module, steps done, timings and the log."""

    model: Any
    steps_done: int
    seconds: float  # wall time, periodic evaluations included
    images_per_s: float  # training throughput, evaluations excluded
    token_ids_seen: set[int]
    history: list[dict[str, Any]] = field(default_factory=list)


# -- data ---------------------------------------------------------------------------------------


def shape_variant(scene: SceneState, rng: np.random.Generator, domain: Domain) -> SceneState | None:
    """The scene with one object's shape changed (to a combo of `domain` not already in it), all else equal."""
    i = int(rng.integers(len(scene.objects)))
    obj, used = scene.objects[i], {o.combo for o in scene.objects}
    options = [s for s in SHAPES if s != obj.shape and domain.allows(s, obj.colour) and (s, obj.colour) not in used]
    if not options:
        return None
    objects = list(scene.objects)
    objects[i] = replace(obj, shape=options[int(rng.integers(len(options)))])
    return replace(scene, objects=tuple(objects))


def pose_variant(scene: SceneState, rng: np.random.Generator) -> tuple[SceneState, SceneState] | None:
    """The scene twice, all else equal, with one non-circle object in two poses; None when every object is a circle.

    Half of the pairs mirror a tilt (left <-> right); the other half turn the object by half its
    symmetry period (upright <-> inverted, slightly left <-> tilted right). Mirroring alone teaches
    the side, but the side flips both at upright and at inverted, so a turn's direction needs both.
    """
    turnable = [i for i, o in enumerate(scene.objects) if tilt(o) is not None and o.alpha >= 0.5]
    if not turnable:
        return None
    i = turnable[int(rng.integers(len(turnable)))]
    if rng.random() < 0.5:
        t = float(rng.uniform(POSE_BOUNDS[0], POSE_BOUNDS[2])) * (1 if rng.random() < 0.5 else -1)
        poses = (t, -t)
    else:
        t = float(rng.uniform(-1.0, 1.0))
        poses = (t, t + 1.0 if t < 0 else t - 1.0)
    pair = []
    for side in poses:
        objects = list(scene.objects)
        objects[i] = with_tilt(objects[i], side)
        pair.append(replace(scene, objects=tuple(objects)))
    return pair[0], pair[1]


def _caption(scene: SceneState, rng: np.random.Generator, short: bool, partial: float = 0.0, grey: bool = False,
             pose_p: float = 0.0) -> str:
    if grey:
        return short_static_caption(scene, rng, name_colours=False, pose_p=pose_p)
    return short_static_caption(scene, rng, partial, pose_p=pose_p) if short else static_caption(scene, rng, pose_p)


def _pair(first: SceneState, second: SceneState, rng: np.random.Generator, short: bool, grey: bool,
          pose_p: float) -> list[tuple[SceneState, str, bool]]:
    """Both scenes captioned with the same phrasing draws, so the captions differ only where the scenes do."""
    state = rng.bit_generator.state
    caption = _caption(first, rng, short, grey=grey, pose_p=pose_p)
    rng.bit_generator.state = state
    return [(first, caption, grey), (second, _caption(second, rng, short, grey=grey, pose_p=pose_p), grey)]


def greyscale(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> the same image in greyscale (ITU-R BT.601 luma in all three channels)."""
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _style(config: PretrainConfig, rng: np.random.Generator) -> tuple[bool, bool]:
    """(short caption?, greyscale?) for one still or pair; no draw for grey when grey_p is 0."""
    return rng.random() < config.short_caption_p, bool(config.grey_p) and rng.random() < config.grey_p


def _scenes(config: PretrainConfig, rng: np.random.Generator) -> list[tuple[SceneState, str, bool]]:
    """(scene, caption) for one batch: shape-swap pairs first, captioned with the same phrasing draws.

    Colour, size and position alone tell almost any two captions of a batch apart, so without
    the pairs the contrastive loss barely asks for shape; a pair differs only in one shape word.
    Pair captions always name colour and shape; the other stills' short captions may name an
    object by one attribute (config.partial_p), which helps unseen colour-shape pairs.
    A greyscale still (config.grey_p) gets a caption without colour words: shape must then be
    read from form alone, which is what carries over to colour-shape pairs never seen in training.
    Pose pairs (config.pose_pairs, v3) differ only in one object's pose and name every pose, in
    short captions of at most two objects so that every pose word fits the 32-token context.
    """
    out: list[tuple[SceneState, str, bool]] = []
    domain = DOMAINS[config.domain]
    while len(out) < round(config.batch * config.shape_pairs) - 1:
        scene = sample_still_scene(rng, domain)
        variant = shape_variant(scene, rng, domain)
        if variant is None:
            continue
        out += _pair(scene, variant, rng, *_style(config, rng), config.pose_p)
    end = len(out) + round(config.batch * config.pose_pairs)
    while len(out) < end - 1:
        pair = pose_variant(sample_still_scene(rng, domain, max_objects=2), rng)
        if pair is not None:
            out += _pair(*pair, rng, True, _style(config, rng)[1], pose_p=1.0)
    while len(out) < config.batch:
        scene = sample_still_scene(rng, domain)
        short, grey = _style(config, rng)
        out.append((scene, _caption(scene, rng, short, config.partial_p, grey, config.pose_p), grey))
    return out


def _motion(config: PretrainConfig, rng: np.random.Generator, n: int) -> list[tuple[ClipSpec, str]]:
    """n (one-action clip, caption) items; an order-pair action comes with its time reverse.

    A clip and its reverse differ only in the direction of their traces, and their captions only
    in the action words ("moves left" / "moves right"), so the pair asks for exactly those words.
    """
    out: list[tuple[ClipSpec, str]] = []
    domain = DOMAINS[config.domain]
    while len(out) < n:
        action = ACTIONS[int(rng.integers(len(ACTIONS)))]
        spec = sample_clip(int(rng.integers(2**31)), action, domain=domain)
        k = int(rng.integers(4))
        out.append((spec, _phrasing(spec, k)))
        if reverse_action(action) != action and len(out) < n:
            back = reverse_clip(spec)
            out.append((back, _phrasing(back, k)))
    return out


def _phrasing(spec: ClipSpec, k: int) -> str:
    captions = clip_captions(spec)
    return captions[k % len(captions)]


def sample_batch(config: PretrainConfig, step: int, size: int) -> tuple[np.ndarray, list[str]]:
    """Batch `step`: uint8 [B, size, size, 3] stills of config.domain and one caption each: static
    captions, then (config.motion_p) exposures of one action with that action's caption."""
    rng = np.random.default_rng([config.seed if config.data_seed is None else config.data_seed, step])
    n_motion = round(config.batch * config.motion_p)
    scenes = _scenes(replace(config, batch=config.batch - n_motion), rng)
    motion = _motion(config, rng, n_motion)
    images = [render_frame(scene, size, size) for scene, _, _ in scenes]
    images = [greyscale(im) if grey else im for im, (_, _, grey) in zip(images, scenes)]
    images += [exposure(spec, size, size) for spec, _ in motion]
    return np.stack(images), [caption for _, caption, _ in scenes] + [caption for _, caption in motion]


# -- model and optimiser ------------------------------------------------------------------------


def build_model(arch: str, seed: int) -> Any:
    """A fresh open_clip module: torch-seeded init, token embedding from the seeded numpy init."""
    import torch

    from streamvl.models.loading import bare_model
    from streamvl.models.weights import TOKEN_KEY, seeded_token_embedding

    torch.manual_seed(seed)
    model = bare_model(arch)
    model.output_dict = True
    token = model.get_parameter(TOKEN_KEY)
    with torch.no_grad():
        token.copy_(seeded_token_embedding(seed, *token.shape))
    return model


def initial_model(config: PretrainConfig) -> tuple[Any, set[int]]:
    """The module training starts from, and the token rows it has already moved away from the seeded init.

    From scratch: build_model. With `config.init`: that model's weights, trainable again; the rows
    its own training changed count as seen, so the export check still holds every other row to
    the seeded init of `config.seed`.
    """
    if config.init is None:
        return build_model(config.arch, config.seed), set()
    from streamvl.models.loading import load_model
    from streamvl.models.weights import TOKEN_KEY, changed_rows

    model = build_model(config.arch, config.seed)
    model.load_state_dict(load_model.__wrapped__(config.init).model.state_dict())
    moved = set(changed_rows(model.get_parameter(TOKEN_KEY).detach(), config.seed).tolist())
    return model, moved


_NO_DECAY = ("token_embedding", "positional_embedding", "class_embedding", "logit_scale")


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on biases, norms, embeddings (incl. tokens) or the logit scale."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        (plain if p.ndim < 2 or any(k in name for k in _NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def lr_at(config: PretrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to min_lr at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


# -- training -----------------------------------------------------------------------------------


def _quick_eval(model: Any, config: PretrainConfig) -> dict[str, float]:
    """Held-out static zero-shot on a few clips per action (monitoring only: nothing is selected on it)."""
    from streamvl.models.loading import ModelSpec, wrap_model
    from streamvl.lab.zeroshot import EvalConfig, evaluate_static

    view = wrap_model(model, ModelSpec(f"{config.arch}@{config.name}", config.arch, "training", ""), freeze=False)
    result = evaluate_static(view, EvalConfig(per_action=config.eval_per_action))
    keys = ("shape_top1", "colour_top1", "combined_top1", "shape_top1_from_combos")
    return {k: round(result[k], 4) for k in keys}


def train(config: PretrainConfig, log: Callable[[dict[str, Any]], None] = lambda rec: None,
          on_eval: Callable[["PretrainResult"], None] | None = None) -> PretrainResult:
    """Run the recipe; `log` receives one record per evaluation (step, loss, lr, images/s, zero-shot),
    `on_eval` a snapshot of the run so far (e.g. to write a checkpoint; it must not change the model)."""
    import open_clip
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from tqdm import tqdm

    from streamvl.models.loading import preprocess_frames

    torch.set_num_threads(config.threads)
    model, seen = initial_model(config)
    model.train()
    pp = open_clip.get_model_preprocess_cfg(model)
    size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size)
    tokenizer = open_clip.get_tokenizer(config.arch)
    optim = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    history: list[dict[str, Any]] = []
    losses: list[float] = []
    start, eval_seconds, done = time.monotonic(), 0.0, 0
    bar = tqdm(range(config.last_step), desc="pretrain", unit="step", mininterval=5.0)
    for step in bar:
        if config.minutes is not None and time.monotonic() - start > 60 * config.minutes:
            bar.write(f"stopping at step {step}: the {config.minutes} minute cap was reached (recipe incomplete)")
            break
        images, captions = sample_batch(config, step, size)
        tokens = tokenizer(captions)
        seen.update(torch.unique(tokens).tolist())
        x = preprocess_frames(images, size, pp["mean"], pp["std"])
        for group in optim.param_groups:
            group["lr"] = lr_at(config, step)
        with sdpa_kernel(SDPBackend.MATH), torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            out = model(x, tokens)
            loss = loss_fn(out["image_features"].float(), out["text_features"].float(), out["logit_scale"].float())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optim.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        done = step + 1
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
        if done % config.eval_every == 0 or done == config.last_step:
            train_seconds = time.monotonic() - start - eval_seconds
            record = {"step": done, "loss": round(float(np.mean(losses[-50:])), 4), "lr": lr_at(config, step),
                      "images_per_s": round(done * config.batch / train_seconds, 1),
                      "minutes": round((time.monotonic() - start) / 60, 2)}
            t0 = time.monotonic()
            record |= _quick_eval(model, config)
            model.train()
            eval_seconds += time.monotonic() - t0
            history.append(record)
            log(record)
            if on_eval is not None:
                on_eval(PretrainResult(model, done, time.monotonic() - start, 0.0, set(seen), list(history)))
            bar.write(json.dumps(record))
    bar.close()
    seconds = time.monotonic() - start
    rate = done * config.batch / max(seconds - eval_seconds, 1e-9)
    return PretrainResult(model.eval(), done, seconds, rate, seen, history)
