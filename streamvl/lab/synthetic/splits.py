"""Evaluation splits over the shapes world: closed-set, few-shot, open-set, retrieval, localisation.

Train and test never share:
- seeds: an item's seed is odd in test partitions and even in train ones (`item_seed`);
- (shape, colour) combos: world.HELD_OUT_COMBOS (circle/green, square/orange, triangle/blue,
  star/purple, cross/red, heart/yellow) appear in no train item at all (not as distractor, not
  as the result of change_colour); in test items every acting object wears one of them;
- backgrounds: the "checker" family is never in train; half of the test items use it.
Items are specs (cheap): frames are rendered on demand. Everything is deterministic by seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from streamvl.errors import ConfigError
from streamvl.lab.synthetic.actions import ACTIONS
from streamvl.lab.synthetic.clips import ClipSpec, GTSegment, RenderConfig, clip_captions, sample_composition, sample_stream, segments
from streamvl.lab.synthetic.world import TEST, TRAIN, Domain

SPLITS: tuple[str, ...] = ("closed_set", "few_shot", "open_set", "retrieval", "localisation")
FEW_SHOT_K: tuple[int, ...] = (2, 4, 8, 16)
_PARTITION_BIT = {"train": 0, "test": 1}
_DOMAIN = {"train": TRAIN, "test": TEST}


@dataclass(frozen=True)
class SplitItem:
    """One clip or stream: its seed, label, captions (first canonical), spec, and GT segments (streams)."""

    seed: int
    label: str
    captions: tuple[str, ...]
    spec: ClipSpec
    segments: tuple[GTSegment, ...] = ()


@dataclass(frozen=True)
class Split:
    """Train and test items of one task; classes are the labels each side may use."""

    name: str
    seed: int
    train: tuple[SplitItem, ...]
    test: tuple[SplitItem, ...]
    train_classes: tuple[str, ...]
    test_classes: tuple[str, ...]
    k: int | None = None


def item_seed(split_seed: int, partition: str, key: str, index: int) -> int:
    """Seed of item `index` of `key` (a class name or task) in a partition; parity marks the partition.

    It does not depend on the split kind, so few-shot K=2 items are the first two of K=4, and
    a class's train items are the same in closed-set, few-shot and open-set splits.
    """
    state = np.random.SeedSequence([split_seed, zlib.crc32(key.encode()), index]).generate_state(2, np.uint32)
    return ((int(state[0]) << 30 | int(state[1]) >> 2) << 1) | _PARTITION_BIT[partition]


def open_set_classes(seed: int = 0) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Disjoint (train, test) action classes, 7 / 6, a seeded random half as in Ju et al. 2022."""
    order = np.random.default_rng([seed, 7]).permutation(len(ACTIONS))
    names = [ACTIONS[i] for i in order]
    return tuple(sorted(names[:7], key=ACTIONS.index)), tuple(sorted(names[7:], key=ACTIONS.index))


def _clip_item(seed: int, actions: tuple[str, ...], domain: Domain, render: RenderConfig) -> SplitItem:
    spec = sample_composition(seed, actions, domain=domain, render=render)
    return SplitItem(seed, spec.label, clip_captions(spec), spec)


def _per_class(split_seed: int, partition: str, classes: tuple[str, ...], n: int, render: RenderConfig) -> tuple[SplitItem, ...]:
    domain = _DOMAIN[partition]
    return tuple(_clip_item(item_seed(split_seed, partition, c, i), (c,), domain, render) for c in classes for i in range(n))


def _retrieval(split_seed: int, partition: str, n: int, render: RenderConfig, p_compose: float = 0.3) -> tuple[SplitItem, ...]:
    """n clips, 30% of them two-step compositions: order must matter for text -> clip retrieval."""
    items = []
    for i in range(n):
        seed = item_seed(split_seed, partition, "retrieval", i)
        rng = np.random.default_rng([seed, 3])
        k = 2 if rng.uniform() < p_compose else 1
        actions = tuple(ACTIONS[j] for j in rng.choice(len(ACTIONS), size=k, replace=False))
        items.append(_clip_item(seed, actions, _DOMAIN[partition], render))
    return tuple(items)


def _streams(split_seed: int, partition: str, n: int, seconds: float, render: RenderConfig) -> tuple[SplitItem, ...]:
    items = []
    for i in range(n):
        seed = item_seed(split_seed, partition, "localisation", i)
        spec = sample_stream(seed, seconds, domain=_DOMAIN[partition], width=render.width, height=render.height, fps=render.fps)
        items.append(SplitItem(seed, "stream", (), spec, segments(spec)))
    return tuple(items)


def make_split(
    name: str,
    seed: int = 0,
    *,
    k: int | None = None,
    train_per_class: int = 16,
    test_per_class: int = 8,
    render: RenderConfig = RenderConfig(),
    streams: tuple[int, int] = (4, 4),
    stream_seconds: float = 120.0,
) -> Split:
    """Build a split by name (see SPLITS).

    closed_set: all actions, train_per_class / test_per_class clips each.
    few_shot: k (2, 4, 8 or 16) train clips per class, nested across k; the closed-set test set.
    open_set: disjoint class halves from `open_set_classes(seed)`.
    retrieval: train_per_class * 13 clips per side, 30% ordered compositions of two actions.
    localisation: streams = (n_train, n_test) long streams of stream_seconds with GT segments.
    """
    if name == "closed_set":
        train = _per_class(seed, "train", ACTIONS, train_per_class, render)
        return Split(name, seed, train, _per_class(seed, "test", ACTIONS, test_per_class, render), ACTIONS, ACTIONS)
    if name == "few_shot":
        if k not in FEW_SHOT_K:
            raise ConfigError(f"few_shot needs k in {FEW_SHOT_K}, got {k}")
        train = _per_class(seed, "train", ACTIONS, k, render)
        return Split(name, seed, train, _per_class(seed, "test", ACTIONS, test_per_class, render), ACTIONS, ACTIONS, k)
    if name == "open_set":
        base, novel = open_set_classes(seed)
        train = _per_class(seed, "train", base, train_per_class, render)
        return Split(name, seed, train, _per_class(seed, "test", novel, test_per_class, render), base, novel)
    if name == "retrieval":
        n_train, n_test = train_per_class * len(ACTIONS), test_per_class * len(ACTIONS)
        train, test = _retrieval(seed, "train", n_train, render), _retrieval(seed, "test", n_test, render)
        labels = tuple(sorted({it.label for it in train + test}))
        return Split(name, seed, train, test, labels, labels)
    if name == "localisation":
        train = _streams(seed, "train", streams[0], stream_seconds, render)
        return Split(name, seed, train, _streams(seed, "test", streams[1], stream_seconds, render), ACTIONS, ACTIONS)
    raise ConfigError(f"unknown split {name!r}; known: {SPLITS}")
