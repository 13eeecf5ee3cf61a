"""How well a frozen model names unseen actions under each class template, with nothing trained.

For each open-set class split, the held-out test clips of its 6 unseen classes are read three
ways, the frame mean (meanpool), the clip's exposure (streamvl.lab.zeroshot.clip_exposure) and the
frame mean plus `--difference` x the change of the frame features from the first to the last of
8 evenly spread frames (`streamvl.adapters.blocks.frame_difference`, as the adapters' `difference`
option adds it), and scored against the class texts put into each template (`TaskData.with_class_template`). The
first template is the baseline of the ratios ("{}": the class names as they are). This is the
text side an adapter with a frozen text tower (litevl, xclip) trains towards and is tested on.

    python bench/bench_class_templates.py [--model streamvl-shapes@v3] [--seeds 5,6,7] \
        [--templates '{}|a shape {}|a video of a shape {}'] [--difference 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl.adapters.blocks import add_difference  # noqa: E402
from streamvl.training.datasets import ShapesOptions, load_task  # noqa: E402
from streamvl.pipeline.features import DEFAULT_ROOT, FeatureStore, segment_indices  # noqa: E402
from streamvl.models.loading import load_model  # noqa: E402
from streamvl.training.train import prepare  # noqa: E402
from streamvl.lab.zeroshot import clip_exposure  # noqa: E402

TEMPLATES = "{}|a shape {}|an object {}|a video of a shape {}"
FRAMES = 8  # frames per clip for the difference reading, as evaluation and the adapters sample them


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def video_readings(model, task, store, difference: float) -> dict[str, np.ndarray]:
    """Unit-norm [N, D] frame-mean, exposure and frame-difference readings of the task's test clips."""
    data = prepare(model, task.test, store, needs_frames=True)
    mean = np.stack([f.features.mean(axis=0) for f in data.features])
    exposure = model.encode_images(np.stack([clip_exposure(f) for f in data.frames])).float().numpy()
    views = torch.from_numpy(np.stack([f.features[segment_indices(len(f.features), FRAMES)] for f in data.features]))
    change = add_difference(views.mean(dim=1), views, difference).numpy()  # 8 frames as evaluation samples them
    return {"frame mean": unit(mean), "exposure": exposure, f"frame mean + {difference:g} x difference": unit(change)}


def top1(video: np.ndarray, text: np.ndarray, labels: np.ndarray) -> float:
    return float(((video @ text.T).argmax(axis=1) == labels).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="streamvl-shapes@v3")
    p.add_argument("--seeds", default="5,6,7", help="open-set class splits (5-7: the validation splits)")
    p.add_argument("--templates", default=TEMPLATES, help="'|'-separated class templates; the first is the baseline")
    p.add_argument("--difference", type=float, default=8.0, help="weight of the frame difference reading")
    p.add_argument("--test-per-class", type=int, default=32)
    p.add_argument("--cache", default=str(DEFAULT_ROOT))
    args = p.parse_args(argv)
    model = load_model(args.model)
    store = FeatureStore(args.cache, model)
    templates = args.templates.split("|")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    acc: dict[tuple[str, str], list[float]] = {}
    for seed in seeds:
        plain = load_task("shapes:open_set", image_size=model.image_size,
                          shapes=ShapesOptions(seed=seed, test_per_class=args.test_per_class))
        classes = list(plain.test_classes)
        labels = np.array([classes.index(r.label) for r in plain.test])
        readings = video_readings(model, plain, store, args.difference)
        for template in templates:
            texts = plain.with_class_template(template).texts(tuple(classes))
            text = model.encode_text(texts).float().numpy()
            for how, video in readings.items():
                acc.setdefault((template, how), []).append(top1(video, text, labels))
                print(f"== split {seed} {how} {template!r}: top-1 {acc[template, how][-1]:.3f}", flush=True)
    print(f"\n## Zero-shot top-1 on the open-set test clips ({args.model}; class splits {args.seeds}; "
          f"6 unseen classes, chance {1 / 6:.3f})\n")
    print("| class template | reading | top-1 per split | mean (x first template) |")
    print("|---|---|---|---|")
    for (template, how), values in acc.items():
        base = np.mean(acc[templates[0], how])
        print(f"| `{template}` | {how} | {' / '.join(f'{v:.3f}' for v in values)} | "
              f"{np.mean(values):.3f} (x{np.mean(values) / base:.2f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
