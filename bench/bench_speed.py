"""Every speed figure of the performance section, in one command: runs the benches one after another.

  encoder    bench_encoder.py   ViT-B/32 image tower, fast path vs plain open_clip fp32 eager on real
                                frames; cosine to fp32; shapes-world metrics of the shipped model
  skip       bench_skip.py      keyframe-only vs full decoding; encoder images saved on static scenes
  pipeline   bench_pipeline.py  end to end over a set of files vs the bare fast encoder; RSS along a
                                1-hour input
  capacity   bench_capacity.py  concurrent 1 frame/s live cameras kept in real time (half static)
  queries    bench_queries.py   end-to-end text queries on a 1M-row clips table: p50/p99, recall@10

Each part runs in its own process (so one's memory does not weigh on the next) and prints its
own baseline and ratios; run them on an otherwise idle machine.

    python bench/bench_speed.py [--only encoder,capacity] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PARTS: dict[str, list[str]] = {
    "encoder": ["bench_encoder.py"],
    "skip": ["bench_skip.py"],
    "pipeline": ["bench_pipeline.py"],
    "capacity": ["bench_capacity.py", "--streams", "40", "--minutes", "3"],
    "queries": ["bench_queries.py"],
}
QUICK: dict[str, list[str]] = {  # a smoke run of every part in a few minutes (figures not comparable)
    "encoder": ["--frames", "64", "--rounds", "1", "--batches", "64", "--per-action", "4"],
    "pipeline": ["--files", "2", "--seconds", "30", "--hour-seconds", "300"],
    "capacity": ["--streams", "4", "--minutes", "0.5", "--warmup", "30"],
    "queries": ["--rows", "100000"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small inputs: checks that every part runs")
    args = parser.parse_args()
    parts = args.only.split(",") if args.only else list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        sys.exit(f"unknown parts {unknown}; choose from {list(PARTS)}")
    failed = []
    for part in parts:
        script, *extra = PARTS[part]
        if args.quick:
            extra = [a for a in extra if part != "capacity"] + QUICK.get(part, [])
        print(f"\n===== {part}: {script} {' '.join(extra)}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / script), *extra])
        print(f"===== {part}: {time.monotonic() - start:.0f}s, exit {code}", flush=True)
        if code:
            failed.append(part)
    if failed:
        sys.exit(f"parts that failed: {failed}")


if __name__ == "__main__":
    main()
