"""What keeping a thumbnail of every sampled frame costs: time per frame next to what the source
already spends on that frame (decode + the model's resize), bytes per frame, and both per hour of
video at 1 sampled frame per second (the default rate).

For each resolution a generated video (a textured static scene with sensor noise and a moving
square: JPEG sizes like a real camera's, not a flat test card) is decoded once; every frame is
then resized for the model (SquareResizer, 224 px) and thumbnailed (frame_thumbnail, 256 px
wide, JPEG q75), each timed alone in this process (the fastest of 3 passes each).

    python bench/bench_thumbnails.py [--frames 120]

Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl.pipeline.thumbnails import DEFAULT_WIDTH, frame_thumbnail  # noqa: E402
from streamvl.sources.resize import SquareResizer  # noqa: E402
from tests.videos import make_video  # noqa: E402

SIZES = ((640, 360), (1280, 720), (1920, 1080))


def timed(fn, items, repeats: int = 3) -> tuple[float, list]:
    """Mean ms per item of the fastest of `repeats` passes (the machine may be shared and busy)."""
    best, out = float("inf"), []
    for _ in range(repeats):
        out, t0 = [], time.perf_counter()
        for item in items:
            out.append(fn(item))
        best = min(best, (time.perf_counter() - t0) * 1000 / len(items))
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    print(f"thumbnail: {DEFAULT_WIDTH} px wide JPEG q75; baseline: decode + model resize (224 px) of the same frame")
    print(f"{'source':>10}  {'decode':>8}  {'resize':>8}  {'thumbnail':>9}  {'ratio':>6}  {'per s':>6}  {'bytes':>7}  "
          f"{'CPU s/hour':>10}  {'MB/hour':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in SIZES:
            path = make_video(Path(tmp) / f"{w}x{h}.mp4", size=(w, h), fps=25, seconds=args.frames / 25,
                              pattern="moving").path
            decode_ms = float("inf")
            for _ in range(3):
                with av.open(str(path)) as c:
                    t0 = time.perf_counter()
                    frames = list(c.decode(video=0))
                    decode_ms = min(decode_ms, (time.perf_counter() - t0) * 1000 / len(frames))
            resize_ms, _ = timed(SquareResizer(224), frames)
            thumb_ms, jpegs = timed(frame_thumbnail, frames)
            size = float(np.mean([len(j) for j in jpegs]))
            print(f"{w:>5}x{h:<4}  {decode_ms:6.2f}ms  {resize_ms:6.2f}ms  {thumb_ms:7.2f}ms  "
                  f"{thumb_ms / (decode_ms + resize_ms):5.2f}x  {thumb_ms / (25 * decode_ms + resize_ms):5.2f}x  "
                  f"{size / 1024:5.1f}KB  {thumb_ms * 3600 / 1000:10.1f}  "
                  f"{size * 3600 / 2**20:8.1f}")
    print("ratio: thumbnail time / (decode + resize) of one frame; per s: / what a second of 25 fps video costs the "
          "source at 1 sampled frame/s (25 decodes + 1 resize); per hour: at 1 sampled frame/s (a repeat frame of a "
          "static scene reuses the last thumbnail: no cost)")


if __name__ == "__main__":
    main()
