"""The encode stage: frame batches of several streams -> frame rows and clip rows (Arrow).

Plain Python (no Ray): the runtime's encode actor wraps one EncodeStage; tests and the
benchmark drive it directly. Frames of all streams in a call go through the model together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pyarrow as pa

from streamvl.storage.schema import THUMBNAIL, clips_schema, frames_schema
from streamvl.plugins.contract import AdapterSpec, ClipBatch, VideoAdapter
from streamvl.config import IndexConfig
from streamvl.errors import PluginError
from streamvl.models.loading import LoadedModel, load_model
from streamvl.plugins.manager import Plugins
from streamvl.types import FrameBatch, Window
from streamvl.pipeline.thumbnails import thumbnail_column
from streamvl.pipeline.windows import Windower


@dataclass(frozen=True)
class StreamProgress:
    """What one encode call did for one stream: frames embedded, last pts, whether it ended."""

    stream_id: str
    frames: int
    clips: int
    last_pts: float | None
    final: bool
    seen: int = 0  # frames of the stream pushed so far (the next frame's grid index)
    next_window: int = 0  # checkpoint: where the first window not yet emitted starts
    resume_after: float | None = None  # checkpoint: time of the frame before it
    last_wallclock: float | None = None  # arrival of the last frame (live)
    error: str | None = None  # the batch was refused: it does not continue this stream's windows
    skipped: int = 0  # frames marked repeat: not run through the model, their embedding reused


def fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """[N, D] float -> Arrow fixed_size_list<float32>[D] without a Python loop."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


class EncodeStage:
    """Owns the frozen model, the adapters, column providers and per-stream windows."""

    def __init__(self, config: IndexConfig, plugins: Plugins | None = None, model: LoadedModel | None = None):
        self.config = config
        self.model = model if model is not None else load_model(config.model, config.precision)
        self.plugins = plugins if plugins is not None else Plugins()
        self.specs: dict[str, AdapterSpec] = {name: self.plugins.adapter(name) for name in config.adapters}
        self.adapters: dict[str, VideoAdapter] = {
            n: _build(s, self.model, config.adapter_options.get(n, {})) for n, s in self.specs.items()
        }
        self.providers = list(self.plugins.column_providers.values())
        self.keep_frames = any(s.needs_frames for s in self.specs.values())
        extra = [f for p in self.providers for f in p.fields]
        meta = self.model.meta()
        self.frames_schema = frames_schema(self.model.embed_dim, meta).append(THUMBNAIL)
        self.clips_schema = clips_schema(self.model.embed_dim, extra, meta)
        self._windows: dict[str, Windower] = {}
        # stream -> (embedding, pixels if keep_frames) of its last frame run through the model
        self._last: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def process(self, batches: Sequence[FrameBatch]) -> tuple[pa.Table, pa.Table, list[StreamProgress]]:
        """Embed all frames in one pass, advance each stream's windows, embed completed clips.

        Frames marked repeat (FrameBatch.repeat) skip the model: they get the embedding of their
        stream's last frame that went through it (kept across calls), so rows and windows stay complete.

        A batch that does not continue its stream's windows (after a restart of this stage or of
        the stream's decoder) is refused: no rows, and its progress carries `error`.
        """
        progress = []
        accepted = []
        for batch in (b for b in batches if b is not None):
            refused = self._sync(batch)
            if refused is None:
                accepted.append(batch)
            else:
                progress.append(StreamProgress(batch.stream_id, 0, 0, None, False, error=refused))
        batches = accepted
        fresh = self._embed_frames([_fresh_only(b) for b in batches])  # repeats skip the model
        features, pixels = zip(*(self._fill_repeats(b, f) for b, f in zip(batches, fresh))) if batches else ((), ())
        windows: list[Window] = []
        for batch, feats, frames in zip(batches, features, pixels):
            windower = self._windows[batch.stream_id]
            done = windower.push(batch.pts, feats, frames)
            if batch.final:
                done += windower.flush()
                del self._windows[batch.stream_id]
                self._last.pop(batch.stream_id, None)
            windows += done
            progress.append(_progress(batch, windower, len(done)))
        return self._frame_rows(batches, features), self._clip_rows(windows), progress

    def _sync(self, batch: FrameBatch) -> str | None:
        """Attach the batch to its stream's windows: a decoder's first batch (seq 0) starts them
        at its grid index (a resume point); later batches must continue them frame by frame."""
        windower = self._windows.get(batch.stream_id)
        if batch.seq == 0:
            self._last.pop(batch.stream_id, None)  # a new decoder run: repeats refer to its own frames only
            leading_repeat = _leading_repeat(batch)
            if leading_repeat:
                return leading_repeat
            try:
                self._windows[batch.stream_id] = self._new_windower(batch)
            except ValueError as exc:
                return str(exc)
            return None
        if windower is None or windower.seen != batch.first_index:
            expected = "a decoder restart (seq 0)" if windower is None else f"frame {windower.seen}"
            return f"out of sync: batch {batch.seq} starts at frame {batch.first_index}, windows expect {expected}"
        if batch.stream_id not in self._last:
            return _leading_repeat(batch)
        return None

    def _new_windower(self, batch: FrameBatch) -> Windower:
        clips, fps = self.config.clips, batch.fps or self.config.sampling.fps
        return Windower(batch.stream_id, clips.window, clips.stride, 1.0 / fps, self.keep_frames,
                        start_index=batch.first_index)

    def finish(self, stream_id: str) -> pa.Table:
        """A stream ended early (error, removal): embed its tail window so good frames are kept."""
        windower = self._windows.pop(stream_id, None)
        self._last.pop(stream_id, None)
        return self._clip_rows(windower.flush() if windower else [])

    def _fill_repeats(self, batch: FrameBatch, fresh: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Features [N, D] (and pixels for adapters that need frames) of every frame of the batch:
        a repeat gets those of the stream's last frame run through the model, which may be in an
        earlier batch. Pixels of repeats are filled the same way, whether or not the batch still
        carries its own (it is within the skip threshold of that frame), so results never depend
        on whether repeat pixels crossed Ray."""
        pixels = batch.fresh_frames() if self.keep_frames else None
        if batch.repeats:
            take = np.cumsum(~batch.repeat)  # 1 + index of the last fresh frame at or before each; 0: an earlier batch's
            before = self._last[batch.stream_id] if take[0] == 0 else (None, None)  # _sync refused a batch without one
            fresh = _pick(fresh, before[0], take)
            if pixels is not None:
                pixels = _pick(pixels, before[1], take)
        if len(batch):
            # copies: views would keep the whole encoder output and frame batch alive per stream
            self._last[batch.stream_id] = (fresh[-1].copy(), pixels[-1].copy() if pixels is not None else None)
        return fresh, pixels

    def _embed_frames(self, batches: Sequence[FrameBatch]) -> list[np.ndarray]:
        """Frames of every batch through the image tower in chunks of encode_batch; split back."""
        sizes = [len(b) for b in batches]
        if not sum(sizes):
            return [np.zeros((0, self.model.embed_dim), np.float32) for _ in batches]
        frames = np.concatenate([b.frames for b in batches if len(b)])
        step = self.config.runtime.encode_batch
        chunks = [self.model.encode_images(frames[i : i + step]).numpy() for i in range(0, len(frames), step)]
        return np.split(np.concatenate(chunks), np.cumsum(sizes)[:-1])

    def _frame_rows(self, batches: Sequence[FrameBatch], features: list[np.ndarray]) -> pa.Table:
        if not self.config.store_frames or not batches:
            return self.frames_schema.empty_table()
        n = sum(len(b) for b in batches)
        wallclock = [b.wallclock if b.wallclock is not None else np.full(len(b), np.nan) for b in batches]
        columns = {
            "stream_id": pa.array([b.stream_id for b in batches for _ in range(len(b))], pa.string()),
            "pts": pa.array(np.concatenate([b.pts for b in batches]), pa.float64()),
            "wallclock": pa.array(np.concatenate(wallclock), pa.float64(), from_pandas=True),
            "embedding": fixed_size_list(np.concatenate(features) if n else np.zeros((0, self.model.embed_dim))),
            "model": pa.array([self.model.name] * n, pa.string()),
            "thumbnail": thumbnail_column(batches),
        }
        return pa.Table.from_pydict(columns, schema=self.frames_schema)

    def _clip_rows(self, windows: list[Window]) -> pa.Table:
        if not windows:
            return self.clips_schema.empty_table()
        tables = [self._adapter_rows(name, windows) for name in self.adapters]
        return pa.concat_tables(tables)

    def _adapter_rows(self, name: str, windows: list[Window]) -> pa.Table:
        embeddings = self._embed_windows(name, windows)
        return clip_rows(self.clips_schema, self.model.name, name, self.adapters[name], self.providers,
                         [w.stream_id for w in windows], np.array([w.start for w in windows], np.float64),
                         np.array([w.end for w in windows], np.float64), embeddings)

    def _embed_windows(self, name: str, windows: list[Window]) -> np.ndarray:
        """Adapter pass, grouped by window length so every call sees a dense [B, T, D] tensor."""
        import torch

        adapter, needs_frames = self.adapters[name], self.specs[name].needs_frames
        groups: dict[int, list[int]] = defaultdict(list)
        for i, w in enumerate(windows):
            groups[len(w.features)].append(i)
        out = np.zeros((len(windows), self.model.embed_dim), np.float32)
        with torch.inference_mode():
            for idx in groups.values():
                feats = torch.from_numpy(np.stack([windows[i].features for i in idx]))
                frames = self._window_frames([windows[i] for i in idx]) if needs_frames else None
                try:
                    out[idx] = adapter.encode_video(feats, frames).float().numpy()
                except Exception as exc:
                    raise PluginError(f"encode_video failed: {exc}", plugin=name, stream_id=windows[idx[0]].stream_id) from exc
        return out

    def _window_frames(self, windows: list[Window]) -> "torch.Tensor":
        """Preprocessed frames [B, T, 3, S, S] for adapters that re-run the vision tower."""
        stacked = np.stack([w.frames for w in windows])
        b, t = stacked.shape[:2]
        return self.model.preprocess(stacked.reshape(b * t, *stacked.shape[2:])).reshape(b, t, 3, *stacked.shape[-3:-1])


def clip_rows(schema: pa.Schema, model_name: str, name: str, adapter: VideoAdapter, providers: Sequence,
              stream_ids: list[str], starts: np.ndarray, ends: np.ndarray, embeddings: np.ndarray) -> pa.Table:
    """`clips` rows of one adapter: keys, times, embeddings, model, and every provider's columns."""
    batch = ClipBatch(adapter_name=name, adapter=adapter, stream_ids=stream_ids, starts=starts, ends=ends,
                      embeddings=embeddings)
    columns: dict[str, object] = {
        "stream_id": batch.stream_ids,
        "start": batch.starts,
        "end": batch.ends,
        "adapter": [name] * len(batch),
        "embedding": fixed_size_list(embeddings),
        "model": [model_name] * len(batch),
    }
    for provider in providers:
        columns |= _provider_columns(provider, batch)
    return pa.Table.from_pydict(columns, schema=schema)


def _progress(batch: FrameBatch, windower: Windower, clips: int) -> StreamProgress:
    last = float(batch.pts[-1]) if len(batch) else None
    wall = float(batch.wallclock[-1]) if batch.wallclock is not None and len(batch.wallclock) else None
    next_window, resume_after = windower.checkpoint()
    return StreamProgress(batch.stream_id, len(batch), clips, last, batch.final, seen=windower.seen,
                          next_window=next_window, resume_after=resume_after, last_wallclock=wall,
                          skipped=batch.repeats)


def _fresh_only(batch: FrameBatch) -> FrameBatch:
    """The batch's frames not marked repeat (those the model runs on)."""
    if not batch.repeats:
        return batch
    keep = ~batch.repeat
    return replace(batch, pts=batch.pts[keep], frames=batch.fresh_frames(), repeat=None, thumbs=None,
                   wallclock=None if batch.wallclock is None else batch.wallclock[keep])


def _pick(rows: np.ndarray, before: np.ndarray | None, take: np.ndarray) -> np.ndarray:
    """rows[take - 1] for every frame, where take 0 means `before` (an earlier batch's last fresh row)."""
    head = before[None] if before is not None else rows[:1]  # rows[:1]: a placeholder no take 0 points at
    return np.concatenate([head, rows])[take]


def _leading_repeat(batch: FrameBatch) -> str | None:
    """Why a batch cannot be encoded when no earlier frame of its stream was: it starts with repeats."""
    if batch.repeat is not None and len(batch) and batch.repeat[0]:
        return f"batch {batch.seq} starts with a repeat frame but no frame of its stream was encoded before it"
    return None


def _build(spec: AdapterSpec, model: LoadedModel, options: dict | None = None) -> VideoAdapter:
    try:
        return spec.build(model, dict(options or {}))
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"building adapter failed: {exc}", plugin=spec.name) from exc


def _provider_columns(provider, batch: ClipBatch) -> dict[str, object]:
    try:
        values = provider.compute(batch)
    except Exception as exc:
        raise PluginError(f"clip column provider failed: {exc}", plugin=provider.name) from exc
    expected = {f.name for f in provider.fields}
    if set(values) != expected or any(len(v) != len(batch) for v in values.values()):
        raise PluginError(f"provider must return columns {sorted(expected)} with {len(batch)} values each", plugin=provider.name)
    return dict(values)
