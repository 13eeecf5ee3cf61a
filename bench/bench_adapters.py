"""The adapter results table: every seed adapter x shapes-world split x metric, in one process.

For each split, the frame-mean zero-shot baseline (meanpool) is measured first; then each adapter
is trained on the split's train side (checkpoints under --out) and evaluated on its held-out
test side (other seeds, held-out shape-colour pairs, a held-out background family); an adapter
with nothing to train (`exposure`) is evaluated as it is. Prints a markdown table (metrics,
trainable parameters, training time, indexing speed) and the bars of issue #4, and writes
everything to --out/results.json.

    python bench/bench_adapters.py [--adapters prompt,alpro,litevl,xclip] [--splits ...] [--seeds 0,1,2] [--quick]

With --seeds, every split and adapter runs once per seed (other clips, other open-set class
halves, other initialisation and sampling); the table shows the mean over seeds and each
seed's value of the first metric, and the bars are checked on the mean.

Indexing speed: clips/s of the EncodeStage (frame embedding + the adapter) on rendered frames,
window 8 / stride 4, and its ratio to meanpool in the same process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl.training.datasets import DEFAULT_CLASS_TEMPLATE, ShapesOptions, load_task  # noqa: E402
from streamvl.training.evaluate import evaluate  # noqa: E402
from streamvl.pipeline.features import DEFAULT_ROOT, FeatureStore  # noqa: E402
from streamvl.models.loading import load_model  # noqa: E402
from streamvl.plugins import Capability  # noqa: E402
from streamvl.plugins.manager import Plugins  # noqa: E402
from streamvl.training.train import TrainConfig, prepare, seeded_adapter, train  # noqa: E402

SPLITS = {"closed_set": "shapes:closed_set", "few_shot": "shapes:few_shot:8", "open_set": "shapes:open_set",
          "retrieval": "shapes:retrieval", "localisation": "shapes:localisation"}
HEADLINE = {"closed_set": ["top1", "order_pair_top1"], "few_shot": ["top1"], "open_set": ["top1", "chance_top1"],
            "retrieval": ["R@1", "R@5", "MedR"], "localisation": ["mAP@0.3", "mAP@0.5", "mAP@0.7"]}
FRAME_ADAPTERS = {"litevl", "xclip"}


def train_config(adapter: str, split: str, args: argparse.Namespace, seed: int) -> TrainConfig:
    frames_based = adapter in FRAME_ADAPTERS
    steps = args.steps_frames if frames_based else args.steps
    if split == "few_shot":
        steps = max(steps // 2, 1)
    return TrainConfig(steps=steps, batch_size=args.batch_frames if frames_based else args.batch, lr=args.lr,
                       frames=args.frames, log_every=args.log_every, backwards=args.backwards, seed=seed,
                       **augmentation(args, frames_based))


def augmentation(args: argparse.Namespace, frames_based: bool) -> dict:
    """--crop / --colours on frame views, or on feature copies where --copies asks for them (a run of several
    adapters gives each what applies to it; train() refuses the rest)."""
    if frames_based:
        return {"crop": args.crop, "colours": args.colours}
    if args.copies:
        return {"crop": args.crop, "colours": args.colours, "copies": args.copies}
    return {}


def indexing_speed(model, plugins, adapter: str, options: dict, frames: np.ndarray) -> float:
    """Clips/s of EncodeStage.process over rendered frames (window 8, stride 4)."""
    from streamvl.config import IndexConfig
    from streamvl.pipeline.encode import EncodeStage
    from streamvl.types import FrameBatch

    config = IndexConfig(model=model.spec.text, adapters=[adapter], adapter_options={adapter: options},
                         store_frames=False, clips={"window": 8, "stride": 4})
    stage = EncodeStage(config, plugins, model)
    batches = [FrameBatch("s", "bench", np.arange(i, i + 16, dtype=np.float64), frames[i : i + 16], final=i + 16 >= len(frames))
               for i in range(0, len(frames), 16)]
    stage.process(batches[:1])  # warm-up
    stage = EncodeStage(config, plugins, model)
    start, clips = time.perf_counter(), 0
    for b in batches:
        _, rows, _ = stage.process([b])
        clips += rows.num_rows
    return clips / (time.perf_counter() - start)


def headline(metrics: dict, split: str) -> str:
    return ", ".join(f"{k} {metrics[k]:.3f}" if isinstance(metrics.get(k), float) else f"{k} {metrics.get(k)}"
                     for k in HEADLINE[split] if k in metrics)


def bars(results: list[dict]) -> list[str]:
    """Issue #4's bars, checked against the measured numbers."""
    by = {(r["adapter"], r["split"]): r["metrics"] for r in results}
    lines = []
    base = by.get(("meanpool", "closed_set"), {}).get("order_pair_top1")
    for a in ("prompt", "prompt-exposure", "xclip", "litevl"):
        m = by.get((a, "closed_set"))
        if m and base is not None:
            gain = m["order_pair_top1"] - base
            lines.append(f"{'PASS' if gain >= 0.30 else 'FAIL'} {a}: order pairs {m['order_pair_top1']:.3f} vs frame-mean {base:.3f} (+{100 * gain:.1f} points, bar +30)")
        if (m := by.get((a, "few_shot"))):
            lines.append(f"{'PASS' if m['top1'] >= 0.80 else 'FAIL'} {a}: few-shot K=8 top-1 {m['top1']:.3f} (bar 0.80)")
        if (m := by.get((a, "open_set"))):
            ok = m["top1"] >= m["chance_top1"] + 0.20
            lines.append(f"{'PASS' if ok else 'FAIL'} {a}: open-set top-1 {m['top1']:.3f}, chance {m['chance_top1']:.3f} (bar chance + 0.20)")
        if (m := by.get((a, "retrieval"))):
            lines.append(f"{'PASS' if m['R@1'] >= 0.5 else 'FAIL'} {a}: retrieval R@1 {m['R@1']:.3f} (bar 0.50)")
    if (m := by.get(("prompt", "localisation"))):
        lines.append(f"{'PASS' if m['mAP@0.5'] >= 0.6 else 'FAIL'} prompt: localisation mAP@0.5 {m['mAP@0.5']:.3f} (bar 0.60)")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--adapters", default="prompt,alpro,litevl,xclip")
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--steps", type=int, default=400, help="steps for feature-based adapters")
    p.add_argument("--steps-frames", type=int, default=300, help="steps for adapters that need frames")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batch-frames", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--backwards", type=float, default=TrainConfig.backwards, help="share of views played backwards")
    p.add_argument("--crop", type=float, default=TrainConfig.crop, help="frames: random crop side in [crop, 1]")
    p.add_argument("--colours", action="store_true", help="frames, class labels: shuffle each view's RGB channels")
    p.add_argument("--copies", type=int, default=0, help="feature-based adapters: augmented copies of each training "
                   "clip's frozen features (--crop, --colours)")
    p.add_argument("--class-template", default=DEFAULT_CLASS_TEMPLATE,
                   help="sentence class names are put into, e.g. 'a video of a shape {}' (class-name splits)")
    p.add_argument("--option", action="append", default=[], metavar="ADAPTER.KEY=VALUE", help="adapter option")
    p.add_argument("--seed", type=int, default=0, help="shapes split seed (open-set class halves, clips), adapter init "
                   "and training sampling")
    p.add_argument("--seeds", default="", help="comma-separated seeds, e.g. 0,1,2: every split and adapter once per "
                   "seed; the table shows the mean and each seed's value (overrides --seed)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cache", default=str(DEFAULT_ROOT))
    p.add_argument("--out", default="bench/adapters")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--train-per-class", type=int, default=ShapesOptions.train_per_class, help="train clips per class")
    p.add_argument("--test-per-class", type=int, default=ShapesOptions.test_per_class, help="test clips per class")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole table")
    args = p.parse_args(argv)
    args.seed_list = [int(x) for x in args.seeds.split(",") if x.strip()] or [args.seed]
    if args.quick:
        args.steps, args.steps_frames, args.batch, args.batch_frames = 5, 2, 8, 4
    return args


def shapes_options(args: argparse.Namespace, seed: int) -> ShapesOptions:
    if args.quick:
        return ShapesOptions(seed=seed, train_per_class=2, test_per_class=1, streams=(1, 1), stream_seconds=30.0)
    return ShapesOptions(seed=seed, train_per_class=args.train_per_class, test_per_class=args.test_per_class)


def adapter_options(items: list[str]) -> dict[str, dict]:
    """ADAPTER.KEY=VALUE strings -> {adapter: {key: value}} (values parsed as JSON where they can be)."""
    options: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        name, _, opt = key.partition(".")
        try:
            options.setdefault(name, {})[opt] = json.loads(value)
        except json.JSONDecodeError:
            options.setdefault(name, {})[opt] = value
    return options


def shapes_vocabulary(options: dict[str, dict]) -> dict[str, dict]:
    """alpro tags with the shapes world's colour-shape pairs here, unless --option alpro.entities=... says otherwise."""
    from streamvl.lab.synthetic import shape_entities

    options.setdefault("alpro", {}).setdefault("entities", shape_entities())
    return options


def zero_shot_row(spec, adapter, name: str, ctx: dict, task, test_feats, split: str, seed: int) -> dict:
    """An adapter with nothing to train, evaluated on the test side as it is."""
    args, model, store = ctx["args"], ctx["model"], ctx["store"]
    test = test_feats if not spec.needs_frames else prepare(model, task.test, store, True, print)
    t0 = time.perf_counter()
    metrics = evaluate(spec, adapter, model, task, test, args.frames)
    print(f"== {name} (zero-shot) {split} seed {seed}: {headline(metrics, split)}")
    return {"adapter": name, "split": split, "seed": seed, "metrics": metrics, "trainable": 0,
            "train_seconds": 0.0, "eval_seconds": time.perf_counter() - t0}


def run_split(ctx: dict, split: str, seed: int) -> list[dict]:
    """The frame-mean baseline and every adapter trained and evaluated on one split of one seed."""
    args, model, store, plugins, log = ctx["args"], ctx["model"], ctx["store"], ctx["plugins"], print
    task = load_task(SPLITS[split], image_size=model.image_size, shapes=shapes_options(args, seed),
                     class_template=args.class_template)
    test_feats = prepare(model, task.test, store, needs_frames=False, log=log)
    rows = []
    if split != "localisation":
        t0 = time.perf_counter()
        meanpool = plugins.adapter("meanpool")
        metrics = evaluate(meanpool, meanpool.build(model, {}), model, task, test_feats, args.frames)
        rows.append({"adapter": "meanpool", "split": split, "seed": seed, "metrics": metrics, "trainable": 0,
                     "train_seconds": 0.0, "eval_seconds": time.perf_counter() - t0})
        log(f"== meanpool (zero-shot) {split}: {headline(metrics, split)}")
    for name in ctx["adapters"]:
        spec = plugins.adapter(name)
        if split == "localisation" and (not spec.can(Capability.LOCALISES) or spec.needs_frames):
            continue  # only prompt has a class-agnostic proposal head over features (Ju et al.'s localisation)
        adapter = seeded_adapter(spec, model, ctx["options"].get(name, {}), seed)
        if not spec.can(Capability.TRAINABLE):  # a zero-shot adapter (exposure): measured as it is
            rows.append(zero_shot_row(spec, adapter, name, ctx, task, test_feats, split, seed))
            continue
        config = train_config(name, split, args, seed)
        train_data = prepare(model, task.train, store, spec.needs_frames, log)
        log(f"== training {name} on {task.name}: {config}")
        report = train(spec, adapter, task, train_data, config, log)
        suffix = f"-s{seed}" if len(args.seed_list) > 1 else ""
        ckpt = adapter.save(ctx["out"] / f"{name}-{split}{suffix}.safetensors",
                            {"data": task.name, "kind": task.kind, "classes": list(task.train_classes),
                             "class_texts": dict(task.class_texts), "class_template": args.class_template,
                             "train": report.summary()})
        test = test_feats if not spec.needs_frames else prepare(model, task.test, store, True, log)
        t0 = time.perf_counter()
        metrics = evaluate(spec, adapter, model, task, test, args.frames)
        rows.append({"adapter": name, "split": split, "seed": seed, "metrics": metrics, "checkpoint": str(ckpt),
                     "trainable": report.parameters["trainable"], "train_seconds": report.seconds,
                     "train_steps": config.steps, "batch": config.batch_size,
                     "backbone_unchanged": report.backbone_unchanged, "eval_seconds": time.perf_counter() - t0})
        log(f"== {name} {split} seed {seed}: {headline(metrics, split)} ({report.seconds:.0f}s training)")
        if metrics.get("order_pair_top1_by_pair"):
            log("   order pairs, each clip's own class over its reverse: "
                + ", ".join(f"{p} {a:.2f}" for p, a in metrics["order_pair_top1_by_pair"].items()))
        if metrics.get("confusions"):
            log("   most confused (true -> predicted x clips): "
                + ", ".join(f"{t} -> {q} x{n}" for t, q, n in metrics["confusions"]))
    return rows


def aggregate(results: list[dict]) -> list[dict]:
    """One row per (adapter, split): numeric metrics averaged over its seeds, each seed's metrics kept.

    A metric some seeds lack (order pairs on an open-set half holding one side of a pair) is
    averaged over the seeds that have it.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["adapter"], r["split"]), []).append(r)
    rows = []
    for (adapter, split), rs in groups.items():
        numeric = dict.fromkeys(k for r in rs for k, v in r["metrics"].items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool))
        rows.append({**rs[0], "metrics": {k: float(np.mean([r["metrics"][k] for r in rs if k in r["metrics"]]))
                                          for k in numeric},
                     "seeds": [r["seed"] for r in rs], "per_seed": [r["metrics"] for r in rs],
                     "train_seconds": float(np.mean([r["train_seconds"] for r in rs]))})
    return rows


def row_metrics(row: dict) -> str:
    """The split's headline metrics (the mean over seeds), then each seed's first headline metric."""
    text = headline(row["metrics"], row["split"])
    if len(row["seeds"]) > 1:
        key = next(k for k in HEADLINE[row["split"]] if k in row["metrics"])
        each = " / ".join(f"{m[key]:.3f}" for m in row["per_seed"])
        text += f" (mean of seeds {', '.join(map(str, row['seeds']))}; {key} {each})"
    return text


def print_table(model_name: str, seeds: list[int], rows: list[dict], speed: dict[str, float]) -> None:
    print(f"\n## Results ({model_name}; shapes seeds {', '.join(map(str, seeds))}; held-out test splits)\n")
    print("| adapter | split | metrics (test) | trainable params | train steps x batch | train time (s) | index clips/s (x meanpool) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        a = r["adapter"]
        steps = f"{r['train_steps']} x {r.get('batch', 0)}" if "train_steps" in r else "zero-shot"
        print(f"| {a} | {r['split']} | {row_metrics(r)} | {r['trainable']:,} | {steps} | "
              f"{r['train_seconds']:.0f} | {speed[a]:.1f} (x{speed[a] / speed['meanpool']:.2f}) |")
    print("\n## Bars (on the mean over seeds)\n")
    for line in bars(rows):
        print(f"- {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    if model.warning():
        print(f"WARNING: {model.warning()}")
    ctx = {"args": args, "model": model, "store": FeatureStore(args.cache, model), "plugins": Plugins(), "out": out,
           "adapters": [a for a in args.adapters.split(",") if a], "options": shapes_vocabulary(adapter_options(args.option))}
    results: list[dict] = []
    meta = {"model": model.name, "shapes": [asdict(shapes_options(args, s)) for s in args.seed_list]}
    for seed in args.seed_list:
        for split in [s for s in args.splits.split(",") if s]:
            results += run_split(ctx, split, seed)
            (out / "results.json").write_text(json.dumps({**meta, "results": results}, indent=1))

    from streamvl.lab.synthetic import render_clip, sample_stream

    frames = render_clip(sample_stream(1, 32.0, width=model.image_size, height=model.image_size, fps=8.0))[:256]
    speed = {n: indexing_speed(model, ctx["plugins"], n, ctx["options"].get(n, {}), frames)
             for n in ["meanpool", *ctx["adapters"]]}
    rows = aggregate(results)
    print_table(model.name, args.seed_list, rows, speed)
    (out / "results.json").write_text(json.dumps({**meta, "results": results, "table": rows,
                                                  "index_clips_per_s": speed, "bars": bars(rows)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
