"""Capacity: how many concurrent 1 frame/s live streams one 2-core box keeps in real time.

Every stream is a real live source: Debian's ffmpeg plays a generated h264 video at real time
(`-re`, looped, stream copy) as MPEG-TS on tcp://127.0.0.1:PORT, one ffmpeg per stream. Half the
streams (--static-share) show a static scene (a still shapes-world frame with sensor noise), the
rest moving shapes. The streamvl runtime indexes all of them at --fps for --minutes with
--model at --precision; the same process then reports, per stream, frames indexed against the
real-time expectation and the lag (now - arrival of the last committed frame), plus how many
streams kept up, encoder work saved on static scenes, and peak RSS per actor.

A stream keeps up when it indexed >= 95% of the frames real time offers after warm-up and its
lag stayed under --max-lag seconds in the measured part of the run.

    python bench/bench_capacity.py [--streams 40] [--minutes 3] [--model ViT-B-32@random:0]

Needs Debian's ffmpeg (apt-get install ffmpeg). Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_live import camera_video  # noqa: E402
from bench.procs import process_kind  # noqa: E402
from streamvl.config import IndexConfig  # noqa: E402
from streamvl.lab.synthetic.clips import iter_frames, sample_stream  # noqa: E402
from streamvl.types import StreamInfo  # noqa: E402
from tests.live_servers import FFMPEG, free_port  # noqa: E402


def static_video(path: Path, seed: int, seconds: float, fps: int, size: tuple[int, int]) -> Path:
    """A still shapes-world scene with per-frame sensor noise, h264, a keyframe every second."""
    import av

    spec = sample_stream(seed, 1.0, width=size[0], height=size[1], fps=float(fps))
    still = next(iter(iter_frames(spec)))[1].astype(np.int16)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": str(fps), "preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            noisy = np.clip(still + rng.normal(0, 2.0, still.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(noisy, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class TsCamera:
    """One ffmpeg serving a looping video as real-time MPEG-TS to the first tcp:// client."""

    def __init__(self, video: Path, log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        log = open(log_dir / f"{name}.log", "wb")
        self.proc = subprocess.Popen(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
             "-c", "copy", "-f", "mpegts", f"{self.url}?listen=1"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Until ffmpeg listens (checked without connecting: its listener serves one client only)."""
        deadline = time.monotonic() + timeout
        while not any(c.laddr.port == self.port and c.status == psutil.CONN_LISTEN
                      for c in psutil.net_connections("tcp4")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ffmpeg camera on {self.url} did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def actor_rss(root: psutil.Process, peak: dict[str, float]) -> None:
    """Fold the RSS of the driver and every `ray::` worker into per-kind peaks (MiB)."""
    for proc in [root, *root.children(recursive=True), *psutil.process_iter()]:
        try:
            cmd = " ".join(proc.cmdline())
            name = process_kind(cmd, proc.pid, root.pid)
            if name and not name.startswith("IDLE"):
                peak[name] = max(peak.get(name, 0.0), proc.memory_info().rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            pass


def run(args, urls: list[str], work: Path) -> tuple[dict, dict, dict[str, float], float, dict]:
    """Index every url for args.minutes: reports, lag samples after warm-up, peak RSS, seconds, stream states."""
    import ray

    from streamvl.runtime.driver import IndexRun

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    config = IndexConfig(db=str(work / "db"), model=args.model, precision=args.precision,
                         sampling={"fps": args.fps, "decode": args.decode}, store_frames=True,
                         runtime={"decode_cpus": 0.01, "sink_cpus": 0.01, "encode_batch": 64})
    streams = [StreamInfo(f"{'static' if i < args.static else 'moving'}{i:02d}", url) for i, url in enumerate(urls)]
    run_ = IndexRun(streams, config, None).start()
    root, peak, lags = psutil.Process(), {}, {s.stream_id: [] for s in streams}
    frames_at_warm: dict[str, int] = {}
    start = time.monotonic()
    warm, end = start + args.warmup, start + args.warmup + args.minutes * 60
    next_sample = start + 5
    while time.monotonic() < end:
        run_.step()
        now = time.monotonic()
        if now >= warm and not frames_at_warm:
            frames_at_warm = {s: r.frames for s, r in run_.reports.items()}
        if now >= next_sample:
            next_sample = now + 5
            actor_rss(root, peak)
            if frames_at_warm:
                for sid, report in run_.reports.items():
                    lags[sid].append(report.lag_s if report.lag_s is not None else float("inf"))
                done = sum(r.frames for r in run_.reports.values())
                print(f"  {(now - start) / 60:4.1f} min  frames {done}  worst lag "
                      f"{max((l[-1] for l in lags.values() if l), default=0):.1f}s", flush=True)
    seconds = time.monotonic() - warm
    run_.flush_records()
    reports = {s: vars(r) | {"warm_frames": frames_at_warm.get(s, 0)} for s, r in run_.reports.items()}
    states = run_.store.stream_states()
    ray.shutdown()
    return reports, lags, peak, seconds, {s.stream_id: s for s in states}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--static-share", type=float, default=0.5)
    parser.add_argument("--minutes", type=float, default=3.0, help="measured time after warm-up")
    parser.add_argument("--warmup", type=float, default=45.0, help="seconds before measuring (actors start, model loads)")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--model", default="ViT-B-32@random:0")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--decode", default="keyframes", choices=["all", "keyframes", "auto"],
                        help="live cameras send a keyframe every second, so keyframes lose no 1 frame/s sample")
    parser.add_argument("--camera-fps", type=int, default=25)
    parser.add_argument("--camera-size", default="320x240")
    parser.add_argument("--max-lag", type=float, default=10.0, help="seconds of lag a stream that keeps up may reach")
    args = parser.parse_args()
    if not Path(FFMPEG).exists():
        sys.exit("needs Debian's ffmpeg: apt-get install ffmpeg")
    args.static = int(round(args.streams * args.static_share))

    work = Path(tempfile.mkdtemp(prefix="streamvl-capacity-"))
    size = tuple(int(x) for x in args.camera_size.split("x"))
    moving = [camera_video(work / f"moving{i}.mp4", seed=i, seconds=60.0, fps=args.camera_fps, size=size) for i in range(2)]
    still = [static_video(work / f"static{i}.mp4", seed=i, seconds=60.0, fps=args.camera_fps, size=size) for i in range(2)]
    cameras = [TsCamera((still if i < args.static else moving)[i % 2], work, f"cam{i}") for i in range(args.streams)]
    try:
        for cam in cameras:
            cam.wait_listening()
        print(f"{args.streams} live tcp:// MPEG-TS cameras ({args.static} static, {args.camera_size} h264 "
              f"{args.camera_fps} fps, ffmpeg -re), {args.fps:g} frame/s each, decode {args.decode}, "
              f"{os.cpu_count()} cores, {args.model} at {args.precision}", flush=True)
        reports, lags, peak, seconds, rows = run(args, [c.url for c in cameras], work)
    finally:
        for cam in cameras:
            cam.stop()
    report(args, reports, lags, peak, seconds, rows)
    for sid, r in sorted(reports.items()):
        if r.get("error"):
            print(f"{sid}: {r['error']}")
    shutil.rmtree(work, ignore_errors=True)


def report(args, reports: dict, lags: dict, peak: dict[str, float], seconds: float, states: dict) -> None:
    expected = seconds * args.fps
    kept = []
    print(f"\nmeasured {seconds / 60:.1f} min after {args.warmup:.0f}s warm-up; expected ~{expected:.0f} frames per stream")
    print(f"{'stream':<10}{'frames':>8}{'of exp.':>9}{'lag p50':>9}{'lag max':>9}{'skipped':>9}  status")
    for sid in sorted(reports):
        r, lag = reports[sid], lags.get(sid) or [float("inf")]
        got = r["frames"] - r["warm_frames"]
        ok = got >= 0.95 * expected and max(lag) <= args.max_lag and r["status"] == "running"
        kept.append(ok)
        skipped = states[sid].frames_skipped if sid in states else "n/a"
        print(f"{sid:<10}{got:>8}{got / expected:>9.2f}{np.median(lag):>9.1f}{max(lag):>9.1f}{skipped!s:>9}  "
              f"{r['status']}{'' if ok else '  (fell behind)'}")
    print(f"\nstreams kept in real time   {sum(kept)} of {len(kept)} (goal >= 40)")
    print("peak RSS MiB                " + "  ".join(f"{k} {v:.0f}" for k, v in sorted(peak.items())))


if __name__ == "__main__":
    main()
