"""Held-out zero-shot numbers of a model through the meanpool baseline, as JSON.

    python jobs/evaluate_zeroshot.py [--model default] [--per-action 50] [--out result.json]

Static: shape / colour / shape+colour top-1 on one-object held-out clips (TEST domain, odd
seeds). Order: top-1 between the two actions of each ORDER_PAIRS pair (chance 0.5). Actions:
13-way top-1 from the frame mean and from an exposure of the clip (chance 0.077). Pose: 4-way
pose of single frames (upright / tilted left / tilted right / inverted) and left-vs-right. See
streamvl/zeroshot.py for exactly what is rendered and which prompts are used. Also runs as a
Ray job (`ray job submit --working-dir . -- python jobs/evaluate_zeroshot.py`).
"""

import argparse
import json
import sys
import time

import torch

from streamvl.models.loading import load_model
from streamvl.lab.zeroshot import EvalConfig, evaluate


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="jobs/evaluate_zeroshot.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="model spec (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0, help="split seed of the held-out items")
    p.add_argument("--per-action", type=int, default=50, help="static clips per action (12 actions); pose clips per action (7 actions)")
    p.add_argument("--per-order-action", type=int, default=50, help="order clips per action (10 actions)")
    p.add_argument("--per-action-class", type=int, default=20, help="action clips per action (13 actions)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    start = time.monotonic()
    result = evaluate(load_model(a.model), EvalConfig(seed=a.seed, per_action=a.per_action,
                                                      per_order_action=a.per_order_action,
                                                      per_action_class=a.per_action_class))
    result["seconds"] = round(time.monotonic() - start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
