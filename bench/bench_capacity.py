"""Capacity: how many concurrent 1 frame/s live streams one 2-core box keeps in real time.

Every stream is a real live source on 127.0.0.1 (bench/capacity_cameras.py): RTSP from one
GStreamer server with a mount per camera (default; TCP interleaved), or `--cameras tcp`, one
ffmpeg per camera sending MPEG-TS. Half the streams (--static-share) show a static scene (a still
shapes-world frame with sensor noise), the rest moving shapes. The streamvl runtime indexes all
of them at --fps with --model at --precision, the decoders of --streams-per-decoder streams
sharing one process.

A stream keeps up when it indexed >= 95% of the frames real time offers after warm-up and its
lag (now - arrival of its last committed frame) stayed under --max-lag seconds; a trial passes
when every stream keeps up. Each trial prints the load average and where the CPU went while it
was measured: CPU seconds per second (cores) of the decoders, the encoder, the sinks, the
driver, Ray's own processes, the cameras, and everything else on the machine.

    python bench/bench_capacity.py --streams 40 [--minutes 3]          # one run, a row per stream
    python bench/bench_capacity.py --find-ceiling [--start 16]         # doubling, then bisection
    python bench/bench_capacity.py --compare 48                        # a process per stream vs shared, same N

Needs Debian's ffmpeg, and for rtsp GStreamer's RTSP server (python3-gi). Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_live import camera_video  # noqa: E402
from bench.capacity_cameras import RtspCameras, TsCameras, loop_video, static_video  # noqa: E402
from bench.procs import CpuMeter  # noqa: E402
from streamvl.config import IndexConfig  # noqa: E402
from streamvl.types import StreamInfo  # noqa: E402
from tests.live_servers import FFMPEG  # noqa: E402


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def make_videos(args, work: Path) -> tuple[list[Path], list[Path]]:
    """Two moving and two static videos, long enough for one trial when not looped (rtsp)."""
    size = tuple(int(x) for x in args.camera_size.split("x"))
    base = 60.0
    moving = [camera_video(work / f"moving{i}.mp4", seed=i, seconds=base, fps=args.camera_fps, size=size) for i in range(2)]
    still = [static_video(work / f"static{i}.mp4", seed=i, seconds=base, fps=args.camera_fps, size=size) for i in range(2)]
    if args.cameras == "rtsp":  # GStreamer does not loop: each video must outlast a trial
        times = int((args.warmup + args.minutes * 60 + 180) // base) + 1
        moving = [loop_video(v, v.with_name(f"long-{v.name}"), times) for v in moving]
        still = [loop_video(v, v.with_name(f"long-{v.name}"), times) for v in still]
    return moving, still


def trial(args, n: int, per_decoder: int, videos, work: Path, rows: bool = False) -> dict:
    """Index n live cameras for args.warmup + args.minutes; returns kept count, lags and CPU by kind."""
    import ray

    from streamvl.runtime.driver import IndexRun

    moving, still = videos
    static = int(round(n * args.static_share))
    cams = (RtspCameras if args.cameras == "rtsp" else TsCameras)(
        [(still if i < static else moving)[i % 2] for i in range(n)], work)
    db = Path(tempfile.mkdtemp(prefix="db-", dir=work))
    run_ = None
    try:
        cams.wait_ready()
        for attempt in range(3):  # Ray gives its raylet 30 s to start: not always enough on a loaded machine
            try:
                from streamvl.runtime.cluster import keep_on_loopback  # 127.0.0.1 only
                keep_on_loopback()
                ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
                         _node_ip_address="127.0.0.1")
                break
            except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
                if attempt == 2 or "timed out during startup" not in str(exc):
                    raise
                ray.shutdown()
        config = IndexConfig(db=str(db), model=args.model, precision=args.precision,
                             sampling={"fps": args.fps, "decode": args.decode}, store_frames=True,
                             runtime={"decode_cpus": 0.01, "sink_cpus": 0.01, "encode_batch": args.encode_batch,
                                      "streams_per_decoder": per_decoder})
        streams = [StreamInfo(f"{'static' if i < static else 'moving'}{i:03d}", url, transport=cams.transport)
                   for i, url in enumerate(cams.urls)]
        run_ = IndexRun(streams, config, None).start()
        meter = CpuMeter()
        lags = {s.stream_id: [] for s in streams}
        start = time.monotonic()
        warm, end = start + args.warmup, start + args.warmup + args.minutes * 60
        at_warm: dict[str, tuple[int, int]] = {}
        next_sample = warm
        while time.monotonic() < end:
            run_.step()
            now = time.monotonic()
            if now >= warm and not at_warm:
                at_warm = {s: (r.frames, r.skipped) for s, r in run_.reports.items()}
                meter.start()
            if at_warm and now >= next_sample:
                next_sample = now + 5
                for sid, report in run_.reports.items():
                    lags[sid].append(report.lag_s if report.lag_s is not None else float("inf"))
        cores, rss = meter.stop(), meter.rss()
        seconds = time.monotonic() - warm
        reports = {s: vars(r).copy() for s, r in run_.reports.items()}
    finally:
        if run_ is not None:
            run_.close()
        if ray.is_initialized():
            ray.shutdown()
        cams.stop()
        shutil.rmtree(db, ignore_errors=True)
    expected = seconds * args.fps
    kept, frames, encoded, worst = 0, 0, 0, 0.0
    table = []
    for sid in sorted(reports):
        r, lag = reports[sid], lags[sid] or [float("inf")]
        got, skipped = r["frames"] - at_warm.get(sid, (0, 0))[0], r["skipped"] - at_warm.get(sid, (0, 0))[1]
        ok = got >= 0.95 * expected and max(lag) <= args.max_lag and r["status"] == "running"
        kept += ok
        frames, encoded, worst = frames + got, encoded + got - skipped, max(worst, max(lag))
        table.append(f"{sid:<10}{got:>8}{got / expected:>9.2f}{np.median(lag):>9.1f}{max(lag):>9.1f}{skipped:>9}  "
                     f"{r['status']}{'' if ok else '  (fell behind)'}{'  ' + r['error'] if r.get('error') else ''}")
    if rows:
        print(f"{'stream':<10}{'frames':>8}{'of exp.':>9}{'lag p50':>9}{'lag max':>9}{'skipped':>9}  status")
        print("\n".join(table))
    return {"n": n, "kept": kept, "seconds": seconds, "frames_s": frames / seconds, "encoded_s": encoded / seconds,
            "worst_lag": worst, "cores": cores, "rss": rss, "load": load(), "per_decoder": per_decoder}


def show(result: dict) -> None:
    r = result
    verdict = "PASS" if r["kept"] == r["n"] else "fail"
    print(f"{r['n']:>4} streams ({r['per_decoder']} per decoder process): {r['kept']:>4} kept  {verdict}  "
          f"{r['frames_s']:6.1f} frames/s indexed, {r['encoded_s']:5.1f}/s through the model, worst lag "
          f"{r['worst_lag']:.1f}s over {r['seconds']:.0f}s; {r['load']}", flush=True)
    order = ["DecodeHost", "DecodeActor", "EncodeActor", "SinkActor", "driver", "ray", "cameras", "other (machine)"]
    parts = sorted(r["cores"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    print("      cores used: " + "  ".join(f"{k} {v:.2f}" for k, v in parts), flush=True)
    ours = sum(v for k, v in r["cores"].items() if k != "other (machine)")
    decode = r["cores"].get("DecodeHost", 0.0) + r["cores"].get("DecodeActor", 0.0)
    estimate = (f", so 2 idle cores would carry ~{2 * r['n'] / ours:.0f} such streams if every part scaled with them"
                if r["kept"] == r["n"] and ours else "")  # a trial that fell behind did not do all its work
    print(f"      per stream: {1000 * ours / r['n']:.1f} ms CPU/s in all (decode {1000 * decode / r['n']:.1f}){estimate}; "
          "RSS MiB " + "  ".join(f"{k} {v:.0f}" for k, v in sorted(r["rss"].items())), flush=True)


def find_ceiling(args, videos, work: Path) -> None:
    """Double the streams until a trial fails, then bisect between the last pass and the first failure."""
    passed, failed, n = 0, None, args.start
    while failed is None and n <= args.max_streams:
        result = trial(args, n, args.streams_per_decoder, videos, work)
        show(result)
        if result["kept"] == n:
            passed, best, n = n, result, n * 2
        else:
            failed = n
    failed = failed or n
    while failed - passed > max(args.resolution, passed * args.resolution_share):
        n = (passed + failed) // 2
        result = trial(args, n, args.streams_per_decoder, videos, work)
        show(result)
        if result["kept"] == n:
            passed, best = n, result
        else:
            failed = n
    print(f"\nceiling: {passed} streams kept in real time (first failure at {failed}); goal >= 150; {load()}")
    if passed:
        print("at the ceiling:")
        show(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=40, help="one run of this many streams (a row per stream)")
    parser.add_argument("--find-ceiling", action="store_true", help="search the most streams kept in real time")
    parser.add_argument("--compare", type=int, metavar="N", help="N streams with a process per stream, then shared")
    parser.add_argument("--start", type=int, default=16, help="first trial of the search")
    parser.add_argument("--max-streams", type=int, default=512)
    parser.add_argument("--resolution", type=int, default=8, help="bisect until first failure - last pass <= this ...")
    parser.add_argument("--resolution-share", type=float, default=0.1, help="... or this share of the last pass")
    parser.add_argument("--static-share", type=float, default=0.5)
    parser.add_argument("--minutes", type=float, default=3.0, help="measured time after warm-up (search: try 1)")
    parser.add_argument("--warmup", type=float, default=45.0, help="seconds before measuring (decoders connect)")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--model", default="ViT-B-32@random:0")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    parser.add_argument("--decode", default="keyframes", choices=["all", "keyframes", "auto"],
                        help="live cameras send a keyframe every second, so keyframes lose no 1 frame/s sample")
    parser.add_argument("--streams-per-decoder", type=int, default=16, help="runtime.streams_per_decoder")
    parser.add_argument("--encode-batch", type=int, default=64, help="runtime.encode_batch")
    parser.add_argument("--cameras", default="rtsp", choices=["rtsp", "tcp"])
    parser.add_argument("--camera-fps", type=int, default=25)
    parser.add_argument("--camera-size", default="320x240")
    parser.add_argument("--max-lag", type=float, default=10.0, help="seconds of lag a stream that keeps up may reach")
    args = parser.parse_args()
    if not Path(FFMPEG).exists():
        sys.exit("needs Debian's ffmpeg: apt-get install ffmpeg")

    work = Path(tempfile.mkdtemp(prefix="streamvl-capacity-"))
    try:
        videos = make_videos(args, work)
        print(f"live {args.cameras} cameras on 127.0.0.1 ({args.static_share:.0%} static, {args.camera_size} h264 "
              f"{args.camera_fps} fps, 1 s GOP), {args.fps:g} frame/s each, decode {args.decode}, {os.cpu_count()} "
              f"cores, {args.model} at {args.precision}, encode batch {args.encode_batch}; warm-up {args.warmup:.0f}s, "
              f"measured {args.minutes:g} min per trial; {load()}", flush=True)
        if args.find_ceiling:
            find_ceiling(args, videos, work)
        elif args.compare:
            for per_decoder in (1, args.streams_per_decoder):
                show(trial(args, args.compare, per_decoder, videos, work))
        else:
            show(trial(args, args.streams, args.streams_per_decoder, videos, work, rows=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
