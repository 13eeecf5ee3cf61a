"""Probes of what frozen frame features hold: can a trained classifier read an order pair from them?

Zero-shot figures (streamvl.lab.zeroshot) say what a model's towers agree on; a probe says what
its frame features carry at all, whatever any text says. For an order pair (rotate cw / ccw,
move left / right, ...), a logistic classifier is trained on the *swept areas* of the centred
frame-feature sequences of many train-domain clips and tested on held-out test-domain clips
(held-out shape-colour combos and background, as every video split's test side).

The swept area (sum over t of x_t x_{t+1}^T - x_{t+1} x_t^T, in the top principal planes) is an
order statistic: it changes sign exactly when a clip plays backwards, so it separates a pair
that no frame and no unordered set of frames separates, and it reads the sense of a turn, which
no linear function of the frames can when a rotation's start angle is uniform (averaged over
start angles, any linear read-out of a rotating code is zero). Plain numpy + torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from streamvl.models.loading import LoadedModel


@dataclass(frozen=True)
class ProbeResult:
    """Train and test accuracy of one pair's probe, and test accuracy per acting shape."""

    pair: tuple[str, str]
    train_clips: int
    test_clips: int
    train_accuracy: float
    test_accuracy: float
    by_shape: dict[str, float]


def centred_sequences(features: np.ndarray) -> np.ndarray:
    """[N, T, D] frame features -> [N, T, D]: each frame minus its clip's mean frame, scaled to a
    unit mean per-frame norm (what the clip shows is removed; how it changes is kept)."""
    change = features - features.mean(axis=1, keepdims=True)
    size = np.linalg.norm(change, axis=-1).mean(axis=1)[:, None, None]
    return (change / (size + 1e-6)).astype(np.float32)


def principal_axes(sequences: np.ndarray, k: int) -> np.ndarray:
    """[D, k] top principal directions of the frames of centred sequences [N, T, D] (of the train side)."""
    frames = sequences.reshape(-1, sequences.shape[-1])
    _, _, vt = np.linalg.svd(frames - frames.mean(axis=0), full_matrices=False)
    return vt[:k].T.astype(np.float32)


def swept_areas(sequences: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """[N, T, D] -> [N, k(k-1)/2]: the signed area the sequence sweeps in every plane of two axes,
    sum over t of (x_t x_{t+1}^T - x_{t+1} x_t^T).

    An order statistic: it changes sign exactly when the clip is played backwards, is blind to a
    shift shared by all frames, and reads a turn's sense in a rotation-equivariant code (where any
    linear function of the frames averages to zero over the start angle)."""
    z = sequences @ axes  # [N, T, k]
    outer = np.einsum("nti,ntj->nij", z[:, :-1], z[:, 1:])
    area = outer - outer.transpose(0, 2, 1)
    rows, cols = np.triu_indices(axes.shape[1], 1)
    return area[:, rows, cols].astype(np.float32)


def fit_linear(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 200,
               weight_decay: float = 1e-3) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic-regression probe [K classes] fitted by full-batch L-BFGS; returns a predict(x) callable."""
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    layer = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=epochs, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(xt), yt) + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return layer(torch.from_numpy(z)).argmax(dim=1).numpy()

    return predict


def pair_clips(pair: Sequence[str], partition: str, n: int, seed: int = 5, size: int = 64) -> tuple[list, np.ndarray]:
    """n clips of each action of the pair (train domain for 'train', test domain for 'test'), rendered
    at size x size: specs and labels."""
    from streamvl.lab.synthetic import TEST, TRAIN, RenderConfig, sample_clip
    from streamvl.lab.synthetic.splits import item_seed

    domain = TRAIN if partition == "train" else TEST
    specs, labels = [], []
    for label, action in enumerate(pair):
        for i in range(n):
            render = RenderConfig(width=size, height=size)
            specs.append(sample_clip(item_seed(seed, partition, action, i), action, domain=domain, render=render))
            labels.append(label)
    return specs, np.array(labels)


def clip_feature_sequences(model: "LoadedModel", specs: Sequence, frames: int = 8) -> np.ndarray:
    """Frozen frame features [N, frames, D] of clips (rendered at the model's input size), evenly spread frames."""
    from streamvl.pipeline.features import embed_frames, segment_indices
    from streamvl.lab.synthetic import render_clip

    out = []
    for spec in specs:
        rendered = render_clip(spec)
        out.append(embed_frames(model, rendered[segment_indices(len(rendered), frames)]))
    return np.stack(out)


def probe_pair(model: "LoadedModel", pair: tuple[str, str], n_train: int = 200, n_test: int = 64,
               frames: int = 8, seed: int = 5, axes_k: int = 32, backwards: bool = False) -> ProbeResult:
    """Train a logistic probe on the swept areas (in the train side's top `axes_k` principal planes)
    of train-domain clips of the pair; measure it on held-out test-domain clips.

    backwards: the train side also holds every clip played backwards, labelled as the pair's
    other action (what adapter training's backwards views add, streamvl.training.train.backwards)."""
    train_specs, y_train = pair_clips(pair, "train", n_train, seed, model.image_size)
    test_specs, y_test = pair_clips(pair, "test", n_test, seed, model.image_size)
    s_train = centred_sequences(clip_feature_sequences(model, train_specs, frames))
    if backwards:
        s_train, y_train = np.concatenate([s_train, s_train[:, ::-1]]), np.concatenate([y_train, 1 - y_train])
    s_test = centred_sequences(clip_feature_sequences(model, test_specs, frames))
    axes = principal_axes(s_train, axes_k)
    x_train, x_test = swept_areas(s_train, axes), swept_areas(s_test, axes)
    predict = fit_linear(x_train, y_train, seed)
    hits = predict(x_test) == y_test
    shapes = [s.objects[s.events[0].obj].shape for s in test_specs]
    by_shape = {sh: float(np.mean([h for h, s in zip(hits, shapes) if s == sh])) for sh in sorted(set(shapes))}
    return ProbeResult(tuple(pair), len(y_train), len(y_test), float(np.mean(predict(x_train) == y_train)),
                       float(np.mean(hits)), by_shape)
