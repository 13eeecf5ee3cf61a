"""Shapes-world clips on disk: an h264 mp4 of the rendered frames and a JSON of what is in it."""

from __future__ import annotations

import json
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from streamvl.errors import ConfigError
from streamvl.lab.synthetic.clips import ClipSpec, clip_captions, iter_frames, segments


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, *, crf: int = 18, preset: str = "veryfast") -> Path:
    """Encode uint8 RGB frames to an h264 (yuv420p) file with PyAV; frames may be a generator.

    Frame i gets pts i / fps. Width and height must be even (4:2:0 chroma).
    """
    import av

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        stream = None
        for i, img in enumerate(frames):
            if stream is None:
                h, w = img.shape[:2]
                if w % 2 or h % 2:
                    raise ConfigError(f"h264 yuv420p needs even width and height, got {w}x{h}")
                stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.codec_context.time_base = 1 / rate
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(stream.encode(frame))
        if stream is None:
            raise ConfigError(f"no frames to write to {path}")
        out.mux(stream.encode(None))
    return path


def clip_metadata(spec: ClipSpec) -> dict[str, object]:
    """JSON-ready description: seed, label, size, fps, frames, captions, segments."""
    return {
        "seed": spec.seed, "label": spec.label, "domain": spec.domain, "width": spec.width, "height": spec.height,
        "fps": spec.fps, "n_frames": spec.n_frames, "background": spec.background.family,
        "captions": list(clip_captions(spec)) if spec.label != "stream" else [],
        "segments": [asdict(s) for s in segments(spec)],
    }


def write_clip(spec: ClipSpec, path: str | Path) -> Path:
    """Render and encode a spec to `path` (mp4) with its metadata beside it (`path` + .json)."""
    path = Path(path)
    write_video(path, (f for _, f in iter_frames(spec)), spec.fps)
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(clip_metadata(spec), indent=1))
    return path
