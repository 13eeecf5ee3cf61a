"""Pipeline vs bare fast encoder on the same frames, and memory over a 1-hour input, in one process.

Generates --files shapes-world h264 videos (320x240, 25 fps, keyframe every second). Prints:
  bare encoder   images/s of the model's own fast path (the precision indexing uses) in a plain
                 loop over exactly the frames the pipeline samples (decode excluded)
  pipeline       frames/s end to end (decode -> encode -> adapters -> LanceDB through Ray) over
                 the set of files, in steady state (first frame committed -> last) and including
                 actor start-up; and the ratio of each to the bare encoder
  memory         peak RSS of the driver and of every actor kind, and RSS sampled along a run over
                 a 1-hour input (--hour-seconds; the same video looped by remuxing), last/first

    python bench/bench_pipeline.py [--files 4] [--seconds 120] [--fps 4] [--model ViT-B-32@random:0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_live import camera_video  # noqa: E402
from bench.capacity_cameras import loop_video  # noqa: E402
from bench.procs import CpuMeter, process_kind  # noqa: E402
from streamvl import api  # noqa: E402
from streamvl.config import IndexConfig  # noqa: E402
from streamvl.models.loading import load_model  # noqa: E402
from streamvl.sources import open_source  # noqa: E402


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def sampled_frames(infos, config: IndexConfig) -> np.ndarray:
    frames = []
    for info in infos:
        with open_source(info, config.sampling) as source:
            frames += [b.frames for b in source if len(b)]
    return np.concatenate(frames)


def bare_encoder(model, frames: np.ndarray, batch: int) -> float:
    """images/s of a plain loop over the frames through the model's encode_images (no pipeline)."""
    model.encode_images(frames[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        model.encode_images(frames[i : i + batch])
    return len(frames) / (time.perf_counter() - start)


class RssSampler(threading.Thread):
    """Polls the RSS of this process and of Ray actor processes (by class) while a run goes on."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.peak_mb, self.series, self._done = every, {}, [], threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            now, sample = time.monotonic(), {}
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                name = process_kind(cmd, proc.info["pid"], os.getpid())
                if name and not name.startswith("IDLE") and proc.info["memory_info"]:
                    mb = proc.info["memory_info"].rss / 2**20
                    sample[name] = max(sample.get(name, 0.0), mb)
                    self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), mb)
            self.series.append((now, sample))

    def stop(self) -> "RssSampler":
        self._done.set()
        self.join()
        return self


def run_pipeline(infos, config: IndexConfig) -> tuple[int, float, float, RssSampler, int]:
    """frames, seconds including start-up, steady-state seconds (first frame committed -> end), RSS;
    prints the cores each part used in the steady state. The frames of the first commit happened
    before the steady state began, so the last value returned, the steady state's frames, leaves
    them out (counting them overstated the steady rate by one encoder call)."""
    sampler, meter = RssSampler(), CpuMeter()
    sampler.start()
    first: list[float] = []
    first_frames: list[int] = []

    def on_frames(n: int) -> None:
        if not first:
            first.append(time.perf_counter())
            first_frames.append(n)
            meter.start()

    polling = threading.Event()

    def poll() -> None:
        while not polling.wait(0.5):
            if first:
                meter.poll()

    threading.Thread(target=poll, daemon=True).start()
    start = time.perf_counter()
    report = api.index(infos, config, on_frames=on_frames)
    end = time.perf_counter()
    polling.set()
    if first:
        print("  cores used in the steady state: " + "  ".join(f"{k} {v:.2f}" for k, v in sorted(meter.stop().items())),
              flush=True)
    steady_frames = report.frames - (first_frames[0] if first_frames else 0)
    return report.frames, end - start, end - (first[0] if first else start), sampler.stop(), steady_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each generated video")
    parser.add_argument("--fps", type=float, default=4.0, help="sampling rate")
    parser.add_argument("--model", default="ViT-B-32@random:0")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--decode", default="auto", choices=["all", "keyframes", "auto"],
                        help="sampling.decode (auto: keyframes only when the 1 s GOP covers every sample)")
    parser.add_argument("--batch-frames", type=int, help="sampling.batch_frames (default: the config's)")
    parser.add_argument("--no-skip-run", action="store_true", help="leave out the run with the static skip on")
    parser.add_argument("--hour-seconds", type=float, default=3600.0, help="length of the memory run's input (0 skips)")
    parser.add_argument("--hour-fps", type=float, default=1.0, help="sampling rate of the memory run")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="streamvl-bench-"))
    t0 = time.perf_counter()
    paths = [camera_video(work / f"cam{i}.mp4", seed=i, seconds=args.seconds, fps=25, size=(320, 240))
             for i in range(args.files)]
    print(f"generated {args.files} x {args.seconds:.0f}s videos in {time.perf_counter() - t0:.0f}s", flush=True)
    config = IndexConfig(db=str(work / "db"), model=args.model, precision=args.precision,
                         sampling={"fps": args.fps, "decode": args.decode}
                         | ({"batch_frames": args.batch_frames} if args.batch_frames else {}))
    model = load_model(config.model, config.precision)
    config = config.model_copy(update={"sampling": config.sampling.model_copy(update={"size": model.image_size})})
    infos = api.discover([str(p) for p in paths])

    frames = sampled_frames(infos, config)
    bare = bare_encoder(model, frames, config.runtime.encode_batch)
    print(f"bare fast encoder      {bare:8.1f} images/s over {len(frames)} frames; {load()}", flush=True)
    # the ratio compares like with like: every sampled frame through the model (static skip off)
    every = config.model_copy(update={"sampling": config.sampling.model_copy(update={"static_threshold": 0.0})})
    n, total_s, steady_s, rss, steady_n = run_pipeline(infos, every)
    print(f"pipeline steady state  {steady_n / steady_s:8.1f} frames/s; {load()}", flush=True)
    after = bare_encoder(model, frames, config.runtime.encode_batch)  # the machine may have changed meanwhile
    print(f"bare fast encoder      {after:8.1f} images/s again after the pipeline; {load()}", flush=True)
    if not args.no_skip_run:
        skip_config = config.model_copy(update={"db": str(work / "db-skip")})
        _, _, skip_s, _, skip_n = run_pipeline(infos, skip_config)

    print(f"model                  {model.name}, image tower {model.precision.precision}")
    print(f"input                  {args.files} files x {args.seconds:.0f}s 320x240 25fps h264 (shapes world), "
          f"sampled at {args.fps:g} fps (decode {args.decode}, {config.sampling.batch_frames}-frame decoder batches) "
          f"-> {len(frames)} frames")
    bare = (bare + after) / 2
    print(f"bare fast encoder      {bare:8.1f} images/s  (model.encode_images loop over the same frames, mean of "
          f"before and after the pipeline)")
    print(f"pipeline steady state  {steady_n / steady_s:8.1f} frames/s  ratio {steady_n / steady_s / bare:5.2f}  (goal >= 0.95; "
          f"static skip off: the model sees every frame, as in the bare loop); {load()}")
    if not args.no_skip_run:
        print(f"  with static skip     {skip_n / skip_s:8.1f} frames/s  ratio {skip_n / skip_s / bare:5.2f}  "
              f"(default threshold {config.sampling.static_threshold}: near-identical frames reuse an embedding)")
    print(f"pipeline incl. start   {n / total_s:8.1f} frames/s  ratio {n / total_s / bare:5.2f}  "
          f"({total_s - steady_s:.1f}s of actor start-up and model load)")
    print("peak RSS MiB           " + "  ".join(f"{k} {v:.0f}" for k, v in sorted(rss.peak_mb.items())))
    if args.hour_seconds:
        memory_run(args, work, paths[0], config)


def memory_run(args, work: Path, video: Path, config: IndexConfig) -> None:
    """RSS per actor along a run over one long input; flat memory shows as last/first near 1."""
    long = loop_video(video, work / "hour.mp4", max(1, int(round(args.hour_seconds / args.seconds))))
    info = api.discover([str(long)], ["hour"])
    config = config.model_copy(update={"db": str(work / "db-hour"),
                                       "sampling": config.sampling.model_copy(update={"fps": args.hour_fps})})
    n, total_s, steady_s, rss, _ = run_pipeline(info, config)
    t1 = rss.series[-1][0]
    t0 = t1 - steady_s  # frames flowing from here on: start-up and model load are not the steady state
    series = [(t, s) for t, s in rss.series if s and t >= t0]
    print(f"memory run             {n} frames from a {args.hour_seconds / 60:.0f}-min input at {args.hour_fps:g} fps "
          f"in {total_s:.0f}s")
    print("RSS MiB                process          at 10%   25%   50%   75%  100% of the steady run   last/10%")
    for name in sorted(rss.peak_mb):
        points = [np.mean([s[name] for t, s in series if name in s and abs(t - (t0 + f * (t1 - t0))) <= 0.05 * (t1 - t0)]
                          or [np.nan]) for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
        print(f"                       {name:<16}" + "".join(f"{m:6.0f}" for m in points) + f"   {points[-1] / points[0]:17.2f}")


if __name__ == "__main__":
    main()
