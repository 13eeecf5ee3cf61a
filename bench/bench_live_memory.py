"""Memory of every process of a long live run: is each one flat after warm-up?

Starts --streams live cameras (real RTSP on 127.0.0.1: one GStreamer RTSP server with a mount per
camera, RTP over TCP, as bench_capacity; half of them static scenes; --cameras tcp: one `ffmpeg -re`
per camera serving MPEG-TS on tcp://127.0.0.1, which serves one connection only, so a stream that
reconnects after a stall loses its camera for good), indexes them with
the streamvl runtime for --minutes (sink processes never replaced unless --sink-recycle-s), and
every --print-s prints the load average, frames, worst lag and each process's RSS and RssAnon
(its private heap): driver, encoder, the three sinks by table, the decoders (sum, min, max), and
Ray's raylet and GCS. At the end: per process, the median RssAnon of the samples in the 5 minutes
after warm-up (--warmup-min) and in the last 5 minutes (a sample inside a sink's upkeep is a
transient peak, so the median is the floor; the peaks are printed beside it), their ratio (goal:
< 1.05) and the slope after warm-up in MiB/min.

    python bench/bench_live_memory.py [--streams 40] [--minutes 60] [--warmup-min 10]

Process ids come from the actors themselves (pid()), so other Ray instances on the machine are
never counted. Needs Debian's ffmpeg. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_live import camera_video  # noqa: E402
from bench.capacity_cameras import live_cameras, static_video  # noqa: E402
from bench.procs import rss_parts  # noqa: E402
from streamvl.config import IndexConfig  # noqa: E402
from streamvl.types import StreamInfo  # noqa: E402
from tests.live_servers import FFMPEG  # noqa: E402


def ray_pids(run) -> dict[str, int]:
    """label -> pid of every process of this run: driver, its raylet and GCS, encoder, sinks, decoders."""
    import ray

    pids = {"driver": os.getpid()}
    for child in psutil.Process().children(recursive=True):
        try:
            name = child.name()
        except psutil.NoSuchProcess:
            continue
        if name in ("raylet", "gcs_server"):
            pids[name] = child.pid
    asks = {"encoder": run.encoder.pid.remote()}
    asks |= {f"sink {table}": sink.pid.remote() for table, sink in run.sinks.items()}
    asks |= {f"decoder {i:02d}": d.actor.pid.remote() for i, d in enumerate(run.backend._decoders.values())}
    for label, ref in asks.items():
        try:
            pids[label] = ray.get(ref, timeout=30)
        except Exception:  # noqa: BLE001 (a decoder being restarted: counted at the next sample)
            pass
    return pids


def sample(pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """label -> (RSS, RssAnon) MiB."""
    got = {}
    for label, pid in pids.items():
        try:
            parts = rss_parts(pid)
        except FileNotFoundError:
            continue
        got[label] = (parts["anon"] + parts["file"] + parts["shmem"], parts["anon"])
    return got


def grouped(snapshot: dict[str, tuple[float, float]]) -> dict[str, float]:
    """RssAnon per process, decoders folded into their sum."""
    out = {k: v[1] for k, v in snapshot.items() if not k.startswith("decoder")}
    dec = [v[1] for k, v in snapshot.items() if k.startswith("decoder")]
    if dec:
        out[f"decoders ({len(dec)}, sum)"] = sum(dec)
    return out


def print_sample(minute: float, snapshot: dict[str, tuple[float, float]], run, lags: list[float]) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    frames = sum(r.frames for r in run.reports.values())
    print(f"--- {minute:5.1f} min  load {load}  frames {frames}  worst lag {max(lags, default=0):.1f}s  "
          f"writes waiting {len(run.committer.queue)} groups, {len(run.recorder.refs())} stream records", flush=True)
    dec = [v for k, v in snapshot.items() if k.startswith("decoder")]
    for label, (rss, anon) in sorted(snapshot.items()):
        if not label.startswith("decoder"):
            print(f"    {label:<18} RSS {rss:7.1f}  RssAnon {anon:7.1f} MiB", flush=True)
    if dec:
        anon = [a for _, a in dec]
        print(f"    decoders ({len(dec):>2})      RSS sum {sum(r for r, _ in dec):7.1f}  RssAnon sum {sum(anon):7.1f}, "
              f"min {min(anon):.1f} max {max(anon):.1f} MiB", flush=True)


def report(series: dict[str, list[tuple[float, float]]], warmup_min: float, window_min: float = 5.0) -> None:
    """Per process: RssAnon in the first window_min after warm-up and in the last window_min, as
    medians (the floor: a sample inside a sink's upkeep is a transient peak, not growth) and as
    peaks (upkeep peaks must not grow either), their ratios (goal: < 1.05), and the slope."""
    print(f"\nRssAnon MiB, medians (and peaks) of the samples in the {window_min:g} min after warm-up ({warmup_min:g} min) "
          f"and in the last {window_min:g} min")
    print(f"  {'process':<22} {'after warm-up':>22} {'at the end':>22} {'end/warm-up':>14} {'peaks':>8} {'MiB/min':>9}")
    for label, points in sorted(series.items()):
        late = np.array([(t, m) for t, m in points if t >= warmup_min])
        if len(late) < 3:
            print(f"  {label:<22} (too few samples after warm-up)")
            continue
        first = late[late[:, 0] <= late[0, 0] + window_min, 1]
        last = late[late[:, 0] >= late[-1, 0] - window_min, 1]
        ratio, peaks = np.median(last) / np.median(first), last.max() / first.max()
        slope = np.polyfit(late[:, 0], late[:, 1], 1)[0]
        flag = "" if ratio < 1.05 else "   >= 5%"
        print(f"  {label:<22} {np.median(first):10.1f} ({first.max():7.1f}) {np.median(last):12.1f} ({last.max():7.1f}) "
              f"{ratio:12.3f} {peaks:10.3f} {slope:+9.3f}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--static-share", type=float, default=0.5)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warmup-min", type=float, default=10.0, help="growth is measured from here")
    parser.add_argument("--print-s", type=float, default=300.0, help="print every process's memory this often")
    parser.add_argument("--sample-s", type=float, default=30.0, help="memory samples for the final table")
    parser.add_argument("--cameras", choices=("rtsp", "tcp"), default="rtsp",
                        help="one GStreamer RTSP server (rtsp), or an ffmpeg -re per camera serving one connection (tcp)")
    parser.add_argument("--model", default="ViT-B-32@random:0")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--index-min-rows", type=int, default=2000,
                        help="clips rows before the sink builds the ANN index (2000: ~3 min at 40 streams, inside warm-up)")
    parser.add_argument("--sink-recycle-s", type=float, default=0.0, help="replace the sinks this often (0: never)")
    args = parser.parse_args()
    if not Path(FFMPEG).exists():
        sys.exit("needs Debian's ffmpeg: apt-get install ffmpeg")
    import ray

    from streamvl.runtime.driver import IndexRun

    work = Path(tempfile.mkdtemp(prefix="streamvl-livemem-"))
    size = (320, 240)
    moving = [camera_video(work / f"moving{i}.mp4", seed=i, seconds=60.0, fps=25, size=size) for i in range(2)]
    still = [static_video(work / f"static{i}.mp4", seed=i, seconds=60.0, fps=25, size=size) for i in range(2)]
    n_static = int(round(args.streams * args.static_share))
    cameras = live_cameras(args.cameras, moving, still, args.streams, n_static, 60.0, (args.minutes + 5) * 60, work)
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        cameras.wait_ready(timeout=180.0)
        from streamvl.runtime.cluster import keep_on_loopback  # 127.0.0.1 only
        keep_on_loopback()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 _node_ip_address="127.0.0.1")
        config = IndexConfig(db=str(work / "db"), model=args.model, precision=args.precision,
                             sampling={"fps": 1.0, "decode": "keyframes"}, store_frames=True,
                             store={"index_min_rows": args.index_min_rows},
                             runtime={"decode_cpus": 0.01, "sink_cpus": 0.01, "encode_batch": 64,
                                      "sink_recycle_s": args.sink_recycle_s})
        kind = "rtsp:// cameras (GStreamer, RTP over TCP" if args.cameras == "rtsp" else "tcp:// cameras (ffmpeg -re, MPEG-TS"
        print(f"{args.streams} live {kind}; {n_static} static, 320x240 h264 25 fps), 1 frame/s each, "
              f"{args.model} at {args.precision}, {args.minutes:g} min, sinks replaced every "
              f"{args.sink_recycle_s:g} s (0: never), {os.cpu_count()} cores", flush=True)
        run = IndexRun([StreamInfo(f"cam{i:02d}", url, transport=cameras.transport) for i, url in enumerate(cameras.urls)],
                       config, None).start()
        start = time.monotonic()
        pids, next_sample, next_print = {}, start + 5, start + args.print_s
        while (now := time.monotonic()) < start + args.minutes * 60:
            run.step()
            if now >= next_sample:
                next_sample = now + args.sample_s
                if len(pids) < args.streams + 7 or run.sink_recycles:  # + driver, raylet, GCS, encoder, 3 sinks
                    pids = ray_pids(run)
                snap = sample(pids)
                minute = (now - start) / 60
                for label, anon in grouped(snap).items():
                    series[label].append((minute, anon))
                if now >= next_print or len(series["driver"]) == 1:
                    next_print = now + args.print_s if now >= next_print else next_print
                    lags = [r.lag_s for r in run.reports.values() if r.lag_s is not None]
                    print_sample(minute, snap, run, lags)
        frames = {s: r.frames for s, r in run.reports.items()}
        status = defaultdict(list)
        for sid, r in sorted(run.reports.items()):
            status[r.status].append(sid)
        print(f"\nstreams by status: " + "; ".join(f"{k} {len(v)}" + (f" ({', '.join(v)})" if k != 'running' else "")
                                              for k, v in status.items()))
        print(f"ran {(time.monotonic() - start) / 60:.1f} min; frames per stream min {min(frames.values())} "
              f"max {max(frames.values())}; sink replacements {run.sink_recycles}; restarts "
              f"{sum(r.restarts for r in run.reports.values())}; load {os.getloadavg()}")
        report(series, args.warmup_min)
        ray.shutdown()
    finally:
        cameras.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
