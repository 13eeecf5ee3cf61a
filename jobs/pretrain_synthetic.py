"""Pretrain the shipped tiny CLIP from a seed: `python jobs/pretrain_synthetic.py --out DIR`.

Also a Ray job (a plain script; it does not use Ray itself):
    ray job submit --working-dir . -- python jobs/pretrain_synthetic.py --out /abs/path/out
(give an absolute --out: a job runs in a copy of the working dir). The defaults are the recipe of
the shipped default model streamvl-shapes@v1; streamvl-shapes@v2 continues it:
    --init streamvl-shapes@v1 --motion-p 0.25 --steps 800 --lr 1e-4 --warmup 50 --data-seed 1 --name v2
and streamvl-shapes@v3 continues v2 with pose captions:
    --init streamvl-shapes@v2 --motion-p 0.25 --shape-pairs 0.35 --pose-pairs 0.45 --pose-p 0.5
    --steps 2000 --lr 3e-4 --warmup 50 --data-seed 2 --name v3
Each JSON records its recipe under training.recipe.
Writes OUT/<arch>-<name>.safetensors + .json (compact format, see streamvl/weights.py) and
OUT/train_log.jsonl. To ship: copy both files into streamvl/assets/.
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from streamvl.lab.pretrain import PretrainConfig, train
from streamvl.lab.pretrain_export import export


def parse(argv: list[str]) -> tuple[PretrainConfig, Path, bool]:
    defaults = PretrainConfig()
    p = argparse.ArgumentParser(prog="jobs/pretrain_synthetic.py", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=defaults.seed, help="init and data seed")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps (the schedule's length)")
    p.add_argument("--batch", type=int, default=defaults.batch, help="stills per step")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap: stop early (result then incomplete)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps of the --steps schedule")
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--grey-p", type=float, default=defaults.grey_p, help="share of greyscale stills with colourless captions")
    p.add_argument("--motion-p", type=float, default=defaults.motion_p,
                   help="share of each batch that is exposures of one action with its caption (v2: 0.25)")
    p.add_argument("--shape-pairs", type=float, default=defaults.shape_pairs,
                   help="fraction of the stills that are pairs differing only in one object's shape")
    p.add_argument("--pose-pairs", type=float, default=defaults.pose_pairs,
                   help="fraction of the stills that are pairs differing only in one object's pose (v3: 0.45)")
    p.add_argument("--pose-p", type=float, default=defaults.pose_p,
                   help="chance that another still's caption names an object's pose (v3: 0.5)")
    p.add_argument("--init", default=None, help="continue from this compact model spec (v2: streamvl-shapes@v1)")
    p.add_argument("--data-seed", type=int, default=None, help="seed of the batches, if not --seed (when continuing)")
    p.add_argument("--warmup", type=int, default=defaults.warmup, help="warm-up steps")
    p.add_argument("--domain", choices=["pretrain", "train"], default=defaults.domain,
                   help="pretrain: every shape-colour combo; train: also withhold the held-out combos (strict variant)")
    p.add_argument("--arch", default=defaults.arch, help="open_clip architecture (a streamvl model config)")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between held-out checks")
    p.add_argument("--dtype", choices=["float16", "float32"], default=defaults.storage_dtype, help="storage dtype")
    p.add_argument("--name", default=defaults.name, help="weights name: the spec becomes ARCH@NAME")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--checkpoints", action="store_true", help="also export the model at every evaluation (OUT/checkpoints)")
    a = p.parse_args(argv)
    config = PretrainConfig(arch=a.arch, domain=a.domain, seed=a.seed, grey_p=a.grey_p, motion_p=a.motion_p, shape_pairs=a.shape_pairs, pose_pairs=a.pose_pairs,
                            pose_p=a.pose_p, init=a.init, data_seed=a.data_seed,
                            warmup=a.warmup, steps=a.steps, batch=a.batch,
                            minutes=a.minutes, stop_after=a.stop_after, lr=a.lr, eval_every=a.eval_every,
                            storage_dtype=a.dtype, name=a.name)
    return config, Path(a.out), a.checkpoints


def main(argv: list[str]) -> None:
    config, out, checkpoints = parse(argv)
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"recipe": asdict(config), "out": str(out)}), flush=True)
    with open(out / "train_log.jsonl", "w") as log:
        snapshot = (lambda r: export(r, config, out / "checkpoints", suffix=f"-step{r.steps_done}")) if checkpoints else None
        result = train(config, log=lambda rec: (log.write(json.dumps(rec) + "\n"), log.flush()), on_eval=snapshot)
    weights, sidecar = export(result, config, out)
    print(json.dumps({"weights": str(weights), "json": str(sidecar), "bytes": weights.stat().st_size,
                      "steps_done": result.steps_done, "complete": result.steps_done == config.last_step,
                      "minutes": round(result.seconds / 60, 1), "images_per_s": round(result.images_per_s, 1)}))


if __name__ == "__main__":
    main(sys.argv[1:])
