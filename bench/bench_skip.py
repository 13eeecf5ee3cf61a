"""Skipping what carries no new information: keyframe-only decoding and static-frame repeats.

Part 1, decoding: N copies of a generated 25 fps h264 file (640x360, keyframe every 25 frames,
a noisy scene with a moving object) are decoded and sampled at 1 frame/s (resized to 224) with sampling.decode "all"
(the baseline) and "keyframes"; prints sampled frames/s of wall time, frames decoded, and the
ratio, all in this process. "auto" picks keyframes for these files (interval 1 s <= 1/fps).

Part 2, encoding: one static-camera stream and one with a small moving object (320x240, sensor
noise) through the encode stage (the model is `--model`); prints the thumbnail differences that
separate them and how many images reached the model with the skip on (default threshold) and
off, i.e. the encoder calls saved.

    python bench/bench_skip.py [--files 4] [--seconds 30] [--model streamvl-tiny@random:0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl.config import IndexConfig, SamplingConfig  # noqa: E402
from streamvl.sources import open_source  # noqa: E402
from streamvl.sources.static import thumb_difference, thumbnail  # noqa: E402
from streamvl.types import StreamInfo  # noqa: E402
from tests.videos import make_video  # noqa: E402


def decode_all(paths: list[Path], mode: str) -> tuple[float, int, int]:
    """(wall seconds, frames sampled, frames decoded) over every file, decode mode `mode`."""
    sampling = SamplingConfig(fps=1.0, size=224, batch_frames=16, static_threshold=0, decode=mode)
    start, sampled, decoded = time.perf_counter(), 0, 0
    for path in paths:
        with open_source(StreamInfo(path.stem, str(path)), sampling) as source:
            sampled += sum(len(b) for b in source)
        decoded += int(source.stats["frames_decoded"])
    return time.perf_counter() - start, sampled, decoded


def _counting(encode_images, counts: list[int]):
    """encode_images that also records how many images each call got (whatever tower/precision runs)."""

    def wrapped(frames):
        counts.append(len(frames))
        return encode_images(frames)

    return wrapped


def encoded_images(path: Path, model_spec: str, threshold: float | None) -> tuple[int, int, int]:
    """(frames indexed, images through the model, frames skipped) for one stream through EncodeStage."""
    from streamvl.pipeline.encode import EncodeStage

    config = IndexConfig(model=model_spec, sampling={"fps": 1.0, "static_threshold": threshold})
    stage = EncodeStage(config)
    images = []
    stage.model.encode_images = _counting(stage.model.encode_images, images)
    sampling = config.sampling.model_copy(update={"size": stage.model.image_size})
    frames = skipped = 0
    with open_source(StreamInfo(path.stem, str(path)), sampling) as source:
        for batch in source:
            _, _, progress = stage.process([batch.without_repeat_pixels()])
            frames += len(batch)
            skipped += sum(p.skipped for p in progress)
    return frames, sum(images), skipped


def differences(path: Path) -> list[float]:
    """Thumbnail difference of each 1 frame/s sample from the one before (skip off)."""
    sampling = SamplingConfig(fps=1.0, size=224, static_threshold=0)
    with open_source(StreamInfo(path.stem, str(path)), sampling) as source:
        thumbs = [thumbnail(f) for b in source for f in b.frames]
    return [thumb_difference(a, b) for a, b in zip(thumbs, thumbs[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4, help="generated files for the decode part")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each generated file")
    parser.add_argument("--model", default="streamvl-tiny@random:0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = make_video(root / "cam0.mp4", pattern="moving", size=(640, 360), seconds=args.seconds, gop=25,
                           options={"sc_threshold": "0"}).path
        paths = [first] + [Path(shutil.copy(first, root / f"cam{i}.mp4")) for i in range(1, args.files)]
        decode_all(paths[:1], "all")  # warm-up: libraries, page cache
        t_all, n_all, d_all = decode_all(paths, "all")
        t_key, n_key, d_key = decode_all(paths, "keyframes")
        print(f"decode: {args.files} files x {args.seconds:.0f}s, 640x360 25 fps h264, keyframe every 25 frames, 1 frame/s")
        print(f"  all        {n_all / t_all:8.1f} sampled frames/s  {n_all:5d} sampled  {d_all:6d} decoded  {t_all:6.2f}s")
        print(f"  keyframes  {n_key / t_key:8.1f} sampled frames/s  {n_key:5d} sampled  {d_key:6d} decoded  {t_key:6.2f}s")
        print(f"  ratio keyframes/all  {t_all / t_key:.2f}x faster, {d_all / max(d_key, 1):.1f}x fewer frames decoded")

        static = make_video(root / "static.mp4", pattern="static", seconds=args.seconds).path
        moving = make_video(root / "moving.mp4", pattern="moving", seconds=args.seconds).path
        print(f"encode: 320x240 25 fps, {args.seconds:.0f}s at 1 frame/s, model {args.model}")
        for name, path in (("static", static), ("moving", moving)):
            diff = differences(path)
            print(f"  {name:6} thumbnail difference to the previous sample: min {min(diff):.2f} "
                  f"median {float(np.median(diff)):.2f} max {max(diff):.2f}")
        for name, path in (("static", static), ("moving", moving)):
            frames, off, _ = encoded_images(path, args.model, 0)
            _, on, skipped = encoded_images(path, args.model, SamplingConfig().static_threshold)
            print(f"  {name:6} {frames:4d} frames: model ran on {off:4d} images with the skip off, {on:4d} with it on "
                  f"(skipped {skipped}/{frames}, {off - on} encoder images saved)")


if __name__ == "__main__":
    main()
