"""Reproducibility of the shipped model: re-run its pretraining recipe and compare on the static bar.

Reads the recipe (seed, steps, batch, ...) from the shipped JSON, retrains from scratch with
jobs/pretrain_synthetic.py's code path (about 35-40 minutes on 2 idle cores; longer when the
machine is shared), then evaluates the shipped and the reproduced model with the same held-out
clips and prints both, the difference in points and whether the weights are bit-identical. It
also keeps a float32 copy of the reproduction and evaluates it: the cost of float16 storage.
The bar: every static number (shape, colour, shape+colour top-1) within 2 points.

    python bench/bench_pretrain_repro.py [--out DIR] [--per-action 50]
    python bench/bench_pretrain_repro.py --reuse DIR   # evaluate an earlier reproduction only

Exit status 1 when the bar is missed. Too long for CI: this is a bench, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl.models import loading as models  # noqa: E402
from streamvl.lab.pretrain import PretrainConfig, train  # noqa: E402
from streamvl.lab.pretrain_export import export  # noqa: E402
from streamvl.lab.zeroshot import EvalConfig, evaluate_static  # noqa: E402

SPEC = models.DEFAULT_SPEC
KEYS = ("shape_top1", "colour_top1", "combined_top1")
BAR_POINTS = 2.0


def shipped_record() -> dict:
    stem = models.SHIPPED[SPEC]
    return json.loads((models.ASSET_DIR / f"{stem}.json").read_text())


def reproduce(record: dict, out: Path) -> Path:
    """Retrain with the shipped recipe (no time cap) into `out`; returns the weights file."""
    # a run stopped by its time cap is reproduced by stopping at the same step
    recipe = dict(record["training"]["recipe"], minutes=None, stop_after=record["training"]["steps_done"])
    config = PretrainConfig(**recipe)
    start = time.monotonic()
    result = train(config, log=lambda rec: print(json.dumps(rec), flush=True))
    weights, _ = export(result, config, out)
    export(result, config, out, dtype="float32", suffix="-fp32")  # what float16 storage costs, measured below
    print(f"retrained {result.steps_done} steps in {(time.monotonic() - start) / 60:.1f} min "
          f"({result.images_per_s:.0f} images/s) -> {weights}", flush=True)
    return weights


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="where the reproduction goes (default: a temp dir)")
    p.add_argument("--reuse", help="skip training: compare the reproduction already in this dir")
    p.add_argument("--per-action", type=int, default=50)
    a = p.parse_args(argv)
    record = shipped_record()
    if a.reuse:
        weights = Path(a.reuse) / f"{models.SHIPPED[SPEC]}.safetensors"
    else:
        weights = reproduce(record, Path(a.out or tempfile.mkdtemp(prefix="streamvl-repro-")))
    config = EvalConfig(per_action=a.per_action)
    shipped = evaluate_static(models.load_model(SPEC), config)
    again_model = models.load_model(f"{record['arch']}@{weights}")
    again = evaluate_static(again_model, config)
    diff = {k: round(100 * (again[k] - shipped[k]), 2) for k in KEYS}
    fp32_path = weights.with_name(weights.stem + "-fp32.safetensors")
    fp32 = evaluate_static(models.load_model(f"{record['arch']}@{fp32_path}"), config) if fp32_path.exists() else None
    report = {
        "shipped": {k: shipped[k] for k in KEYS},
        "reproduced": {k: again[k] for k in KEYS},
        "diff_points": diff,
        "n_clips": shipped["n_clips"],
        "reproduced_float32_storage": {k: fp32[k] for k in KEYS} if fp32 else None,
        "bit_identical": json.loads(weights.with_suffix(".json").read_text())["sha256"] == record["sha256"],
        "bar": f"|diff| <= {BAR_POINTS} points on each",
        "pass": all(abs(d) <= BAR_POINTS for d in diff.values()),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
