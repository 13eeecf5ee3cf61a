"""Memory of the image tower under the batch sizes a live encoder sees, in a fresh process per setting.

    python bench/bench_encoder_memory.py [--model default] [--calls 300] [--settings sizes 1-64,...]

A live encode actor gets frames of every stream in one call: any batch size from 1 to
runtime.encode_batch (64), since static frames are skipped and streams arrive at their own pace.
Settings (same seeded sizes in each):
  fixed 64            every call 64 frames (the floor: one shape)
  sizes 1-64 raw      sizes 1..64, each run at its own size (what the encoder did before issue 43)
  sizes 1-64 padded   the same sizes padded to streamvl.models.loading.padded_batch (8 sizes), as now
Prints RssAnon (private heap, MiB) at 0/10/20/50/100% of the calls and the end / 20% ratio (after
warm-up), with the load average. torch at 2 threads (the encode actor's runtime.torch_threads).
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
setting, calls, spec, threads = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
import streamvl.models.loading as loading
if setting == "sizes 1-64 raw":
    loading.padded_batch = lambda n: n
model = loading.load_model(spec, "auto")
def anon():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:")) / 1024
rng = np.random.default_rng(0)
frames = rng.integers(0, 255, size=(64, 240, 320, 3), dtype=np.uint8)
sizes = rng.integers(1, 65, size=calls)
samples, t0 = [], time.perf_counter()
for i in range(calls):
    model.encode_images(frames[: 64 if setting == "fixed 64" else int(sizes[i])])
    samples.append(anon())
print(json.dumps({"anon": samples, "precision": model.precision.precision, "seconds": time.perf_counter() - t0}))
"""

SETTINGS = ["fixed 64", "sizes 1-64 raw", "sizes 1-64 padded"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {SETTINGS}")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.settings.split(",")]
    if unknown := set(chosen) - set(SETTINGS):
        parser.error(f"unknown settings {sorted(unknown)}")
    print(f"{args.model}, {args.calls} calls, {args.threads} torch threads; RssAnon MiB at 0/10/20/50/100% of the calls")
    print(f"{'setting':<18} {'0%':>6} {'10%':>6} {'20%':>6} {'50%':>6} {'100%':>6} {'100%/20%':>9} {'calls/s':>8}  load")
    for label in chosen:
        env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), label, str(args.calls), args.model, str(args.threads)],
                             env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"bench child failed:\n{out.stderr[-3000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        a = got["anon"]
        at = [a[min(len(a) - 1, int(q * (len(a) - 1)))] for q in (0, 0.1, 0.2, 0.5, 1.0)]
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{label:<18} {' '.join(f'{x:6.1f}' for x in at)} {at[-1] / at[2]:9.3f} {args.calls / got['seconds']:8.2f}"
              f"  {load} ({got['precision']})")


if __name__ == "__main__":
    main()
