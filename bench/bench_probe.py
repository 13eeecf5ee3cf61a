"""What frozen frame features carry of each order pair: a swept-area probe per model, in one process.

For each model and order pair, a logistic classifier is trained on the swept areas of the
centred frame-feature sequences of --train clips per action (train domain) and tested on
--test clips per action of the held-out test domain (streamvl.lab.probes). The first model is the
baseline of the ratios. A pair the probe cannot read from many clips is one no feature-based
adapter reads from few.

    python bench/bench_probe.py [--models streamvl-shapes@v1,streamvl-shapes@v3] [--pairs rotate_cw/rotate_ccw,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl.models.loading import load_model  # noqa: E402
from streamvl.lab.probes import probe_pair  # noqa: E402

PAIRS = "rotate_cw/rotate_ccw,move_left/move_right,grow/shrink,appear/disappear"


def by_shape(r) -> str:
    return ", ".join(f"{s} {a:.2f}" for s, a in r.by_shape.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="streamvl-shapes@v1,streamvl-shapes@v2,streamvl-shapes@v3")
    p.add_argument("--pairs", default=PAIRS, help="comma-separated A/B order pairs")
    p.add_argument("--train", type=int, default=200, help="train-domain clips per action")
    p.add_argument("--test", type=int, default=64, help="held-out test-domain clips per action")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--backwards", action="store_true", help="also train on every clip played backwards (its pair's "
                   "other action), as adapter training does")
    args = p.parse_args(argv)
    pairs = [tuple(x.split("/")) for x in args.pairs.split(",") if x]
    rows = []
    for spec in [m for m in args.models.split(",") if m]:
        model = load_model(spec)
        for pair in pairs:
            t0 = time.perf_counter()
            r = probe_pair(model, pair, args.train, args.test, seed=args.seed, backwards=args.backwards)
            rows.append((spec, r))
            print(f"== {spec} {pair[0]}/{pair[1]}: test {r.test_accuracy:.3f} (train {r.train_accuracy:.3f}; {by_shape(r)}) "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    base = {r.pair: r.test_accuracy for spec, r in rows if spec == rows[0][0]}
    back = " and each played backwards" if args.backwards else ""
    print(f"\n## Swept-area probe of frozen frame features ({args.train} train-domain clips per action{back}, "
          f"{args.test} held-out test-domain clips per action, chance 0.5)\n")
    print("| model | pair | test accuracy (x first model) | train accuracy | test accuracy by acting shape |")
    print("|---|---|---|---|---|")
    for spec, r in rows:
        print(f"| {spec} | {r.pair[0]} / {r.pair[1]} | {r.test_accuracy:.3f} (x{r.test_accuracy / base[r.pair]:.2f}) | "
              f"{r.train_accuracy:.3f} | {by_shape(r)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
