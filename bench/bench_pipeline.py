"""Pipeline vs bare encoder on the same generated video, in one process.

Prints: bare open_clip images/s (a plain loop over the same sampled frames), pipeline
frames/s end to end (decode -> encode -> adapters -> LanceDB through Ray), their ratio, and
peak RSS of this driver and of the Ray workers.

    python bench/bench_pipeline.py [--seconds 600] [--fps 4] [--model SPEC]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl import api  # noqa: E402
from streamvl.config import IndexConfig  # noqa: E402
from streamvl.models import load_model  # noqa: E402
from streamvl.sources import open_source  # noqa: E402
from tests.videos import make_video  # noqa: E402


def sampled_frames(info, config: IndexConfig) -> np.ndarray:
    with open_source(info, config.sampling) as source:
        return np.concatenate([b.frames for b in source if len(b)])


def bare_encoder(model, frames: np.ndarray, batch: int) -> float:
    """images/s of a plain loop: preprocess + encode_image, no pipeline."""
    import torch

    torch.set_num_threads(2)
    model.encode_images(frames[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        model.encode_images(frames[i : i + batch])
    return len(frames) / (time.perf_counter() - start)


class RssSampler(threading.Thread):
    """Polls the RSS of this process and of Ray actor processes (by class) while a run goes on."""

    def __init__(self, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.every, self.peak_mb, self._done = every, {}, threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                name = "driver" if proc.info["pid"] == os.getpid() else cmd.split("ray::", 1)[1].split()[0].split(".")[0] if "ray::" in cmd else None
                if name and proc.info["memory_info"]:
                    self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), proc.info["memory_info"].rss / 2**20)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return self.peak_mb


def run_pipeline(info, config: IndexConfig) -> tuple[float, int, dict[str, float]]:
    sampler = RssSampler()
    sampler.start()
    start = time.perf_counter()
    report = api.index([info], config)
    seconds = time.perf_counter() - start
    return report.frames / seconds, report.frames, sampler.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the generated video")
    parser.add_argument("--fps", type=float, default=4.0, help="sampling rate")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="streamvl-bench-"))
    long = make_video(work / "long.mp4", seconds=args.seconds, fps=25, size=(640, 360), pattern="noise").path
    short = make_video(work / "short.mp4", seconds=args.seconds / 5, fps=25, size=(640, 360), pattern="noise").path
    config = IndexConfig(db=str(work / "db"), model=args.model, sampling={"fps": args.fps})
    model = load_model(config.model)
    config = config.model_copy(update={"sampling": config.sampling.model_copy(update={"size": model.image_size})})
    short_info, long_info = api.discover([str(short), str(long)])

    frames = sampled_frames(long_info, config)
    bare = bare_encoder(model, frames, config.runtime.encode_batch)
    _, short_frames, short_rss = run_pipeline(short_info, config)
    pipeline, n, long_rss = run_pipeline(long_info, config)

    print(f"model                  {model.name}")
    print(f"video                  {args.seconds:.0f}s 640x360 25fps h264 noise, sampled at {args.fps} fps -> {len(frames)} frames")
    print(f"bare encoder           {bare:8.1f} images/s  (plain open_clip loop over the same frames)")
    print(f"pipeline end to end    {pipeline:8.1f} frames/s  (decode+encode+adapters+LanceDB on Ray, incl. actor start)")
    print(f"ratio pipeline/bare    {pipeline / bare:8.2f}")
    print(f"peak RSS MiB           {'process':<14}{short_frames:>6} frames {n:>8} frames   ratio")
    for name in sorted(long_rss):
        a, b = short_rss.get(name, float("nan")), long_rss[name]
        print(f"                       {name:<14}{a:13.0f} {b:15.0f}   {b / a:5.2f}")


if __name__ == "__main__":
    main()
