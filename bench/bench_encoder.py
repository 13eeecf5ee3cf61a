"""Image-tower speed and quality: streamvl's fast path vs plain open_clip fp32 eager, same frames.

Frames are sampled from the real clips in ../shared/data/videos (or --videos), resized by the
source to the model's input size. Both arms run in this process, interleaved round by round,
with the same torch thread count the encode actor uses. Prints images/s per arm and batch size,
the ratio, the cosine of every fast-path embedding to its fp32 embedding, and shapes-world
zero-shot metrics of the shipped model at fp32 vs the fast path (points of difference).

    python bench/bench_encoder.py [--model ViT-B-32@random:0] [--paths auto,bf16,int8] [--frames 256]

Every path in --paths is loaded (its probe check and, for int8, its compile run at load) and
measured against the same fp32 eager arm in the same rounds: images/s, x fp32, cosine to fp32 on
the real frames, and the fraction of --peak-tflops reached at --gflop-per-image. The load average
is printed with every figure (the machine is shared).

ViT-B/32 has no pretrained weights on this machine: its speed is weight-independent, and the
cosine check on random weights exercises the same arithmetic; the shapes-world check uses the
shipped (trained) model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamvl import api  # noqa: E402
from streamvl.config import SamplingConfig  # noqa: E402
from streamvl.models.loading import LoadedModel, load_model  # noqa: E402
from streamvl.models.precision import min_cosine  # noqa: E402
from streamvl.sources import open_source  # noqa: E402

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def real_frames(videos: Path, size: int, count: int) -> np.ndarray:
    """Up to `count` frames sampled evenly in time from every clip in `videos`, at size x size."""
    streams = api.discover([str(videos)])
    if not streams:
        raise SystemExit(f"no videos in {videos}")
    sampling = SamplingConfig(fps=8.0, size=size)
    frames = []
    for info in streams:
        with open_source(info, sampling) as source:
            frames += [b.frames for b in source if len(b)]
    all_frames = np.concatenate(frames)
    pick = np.linspace(0, len(all_frames) - 1, min(count, len(all_frames))).round().astype(int)
    return all_frames[pick]


def plain_fp32(model: LoadedModel, frames: np.ndarray) -> np.ndarray:
    """Plain open_clip: preprocess, then encode_image in fp32 eager mode."""
    import torch

    with torch.inference_mode():
        return model.model.encode_image(model.preprocess(frames), normalize=True).numpy()


def fast(model: LoadedModel, frames: np.ndarray) -> np.ndarray:
    return model.encode_images(frames).numpy()


def images_per_s(embed, model: LoadedModel, frames: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        embed(model, frames[i : i + batch])
    return len(frames) / (time.perf_counter() - start)


def load_average() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def matmul_peaks(rounds: int = 3, m: int = 3200, k: int = 768, n: int = 3072) -> dict[str, float]:
    """This CPU's measured matmul rate (GFLOP/s, best of `rounds`) at fp32, bf16 and int8, on a ViT-B/32
    MLP-shaped product (64 images x 50 tokens, 768 -> 3072): fp32 and bf16 through torch.matmul (oneDNN),
    int8 through oneDNN's int8 linear (u8 x s8 -> fp32 on VNNI / AMX-INT8), the kernel the int8 tower runs."""
    import torch

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 2 * m * k * n / min(times) / 1e9

    a, b = torch.randn(m, k), torch.randn(k, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    peaks = {"fp32": best(lambda: a @ b), "bf16": best(lambda: a16 @ b16)}
    try:
        qx = torch.randint(0, 255, (m, k), dtype=torch.uint8)
        qw = torch.ops.onednn.qlinear_prepack(torch.randint(-127, 127, (n, k), dtype=torch.int8), [m, k])
        scales, zeros = torch.full((n,), 0.01), torch.zeros(n, dtype=torch.int64)
        peaks["int8"] = best(lambda: torch.ops.onednn.qlinear_pointwise(
            qx, 0.02, 128, qw, scales, zeros, None, 1.0, 0, torch.float32, "none", [], ""))
    except (AttributeError, RuntimeError) as exc:  # a torch build without oneDNN int8
        print(f"int8 matmul peak unavailable: {exc}")
    return peaks


def speed(base: LoadedModel, paths: dict[str, LoadedModel], frames: np.ndarray, batches: list[int], rounds: int,
          gflop: float, peak: float, cpu_peaks: dict[str, float]) -> None:
    """Median images/s of fp32 eager and every path per batch size, rounds interleaved so load drifts hit all."""
    plain_fp32(base, frames[:8])
    for quick in paths.values():
        fast(quick, frames[:8])  # warm-up (oneDNN primitive caches)
    print(f"{'batch':>6} {'path':<14}{'img/s':>8} {'x fp32':>7} {'TFLOP/s':>8} {'of peak':>8} {'of CPU':>7}  "
          f"load (1/5/15 min)")
    for batch in batches:
        rates: dict[str, list[float]] = {name: [] for name in ["fp32 eager", *paths]}
        for _ in range(rounds):
            rates["fp32 eager"].append(images_per_s(plain_fp32, base, frames, batch))
            for name, quick in paths.items():
                rates[name].append(images_per_s(fast, quick, frames, batch))
        base_rate = statistics.median(rates["fp32 eager"])
        for name, values in rates.items():
            rate = statistics.median(values)
            tflops = rate * gflop / 1000
            own = cpu_peaks.get(name.rpartition(":")[2] if ":" in name else "fp32")
            of_cpu = f"{tflops * 1000 / own:>7.1%}" if own else f"{'-':>7}"
            print(f"{batch:>6} {name:<14}{rate:>8.1f} {rate / base_rate:>7.2f} {tflops:>8.3f} {tflops / peak:>8.1%} "
                  f"{of_cpu}  {load_average()}")


def cosine_report(base: LoadedModel, name: str, quick: LoadedModel, frames: np.ndarray) -> None:
    a, b = plain_fp32(base, frames), fast(quick, frames)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"cosine to fp32 {name:<14} min {min_cosine(a, b):.5f}  p1 {np.percentile(cos, 1):.5f}  "
          f"mean {cos.mean():.5f}  ({len(frames)} real frames; guard >= 0.99)")


def shapes_report(spec: str, precision: str, per_action: int) -> None:
    """Zero-shot held-out metrics of the shipped model through both arms."""
    from streamvl.lab.zeroshot import EvalConfig, evaluate

    config = EvalConfig(per_action=per_action, per_order_action=per_action)
    base, quick = load_model(spec), load_model(spec, precision)
    ra, rb = evaluate(base, config), evaluate(quick, config)
    rows = [("shape top-1", "static", "shape_top1"), ("colour top-1", "static", "colour_top1"),
            ("shape+colour top-1", "static", "combined_top1"), ("order pairs top-1", "order", "top1")]
    print(f"shapes world ({spec}, {ra['static']['n_clips']} + {ra['order']['n_clips']} held-out clips, meanpool)")
    print(f"  {'metric':<20}{'fp32':>8}{quick.precision.precision:>8}{'points':>8}")
    for name, part, key in rows:
        x, y = ra[part][key], rb[part][key]
        print(f"  {name:<20}{x:>8.3f}{y:>8.3f}{100 * (y - x):>+8.1f}")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32@random:0", help="model for speed and cosine")
    parser.add_argument("--paths", default="auto,int8", help="precisions to compare with fp32 eager, comma-separated "
                        "(auto, bf16, int8, fp32 = streamvl's own fp32 path)")
    parser.add_argument("--shapes-precision", default="", help="precisions for the shapes-world check (default: --paths)")
    parser.add_argument("--gflop-per-image", type=float, default=4.4, help="model GFLOP per image (ViT-B/32 at 224: 4.4)")
    parser.add_argument("--peak-tflops", type=float, default=4.7,
                        help="peak to report the fraction of (default 4.7: the AMX-BF16 peak of 2 Sapphire-Rapids-class cores)")
    parser.add_argument("--videos", type=Path, default=SHARED_VIDEOS)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--batches", default="16,64,256", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the encode actor's default)")
    parser.add_argument("--shapes-model", default="default", help="trained model for the shapes-world check ('' skips)")
    parser.add_argument("--per-action", type=int, default=50)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    base = load_model(args.model)
    print(f"model                  {base.name}; {load_average()}")
    paths: dict[str, LoadedModel] = {}
    for requested in [p for p in args.paths.split(",") if p]:
        start = time.perf_counter()
        try:
            quick = load_model(args.model, requested)
        except Exception as exc:  # a path this machine cannot run is reported, not fatal
            print(f"path {requested:<10} unavailable: {exc}")
            continue
        paths[f"{requested}:{quick.precision.precision}"] = quick
        print(f"path {requested:<10} image tower at {quick.precision.precision} ({quick.precision.reason}), "
              f"loaded in {time.perf_counter() - start:.1f} s; {load_average()}")
    frames = real_frames(args.videos, base.image_size, args.frames)
    print(f"frames                 {len(frames)} real frames from {args.videos}, {base.image_size}px, "
          f"{args.threads} torch threads")
    cpu_peaks = matmul_peaks()
    print("CPU peak               " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in cpu_peaks.items())
          + f" (best {3200}x768x3072 matmul, {args.threads} threads); {load_average()}")
    print(f"of peak = of --peak-tflops {args.peak_tflops} (the AMX figure); of CPU = of this CPU's measured "
          "matmul peak at the path's precision")
    speed(base, paths, frames, [int(b) for b in args.batches.split(",")], args.rounds, args.gflop_per_image,
          args.peak_tflops, cpu_peaks)
    for name, quick in paths.items():
        cosine_report(base, name, quick, frames)
    if args.shapes_model:
        for requested in (args.shapes_precision or args.paths).split(","):
            try:
                shapes_report(args.shapes_model, requested, args.per_action)
            except Exception as exc:
                print(f"shapes world at {requested}: unavailable: {exc}")


if __name__ == "__main__":
    main()
