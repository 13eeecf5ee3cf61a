"""One typed configuration, parsed once from a TOML file plus overrides, serialisable to Ray actors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamvl.errors import ConfigError
from streamvl.storage.objectstore import StorageConfig

DEFAULT_DB = "./streamvl-db"
# Thumbnail difference (levels 0..255, see streamvl.sources.static) below which a sampled frame
# is a repeat. Static h264 scenes with sensor noise (sigma 2-4) measure <= 0.18; a 16x16-pixel
# object in a 320x240 frame scores ~0.45 when it appears or leaves and >= 0.88 when it moves.
# Erring low is cheap (an extra encode) while erring high leaves a stale embedding: 0.3.
DEFAULT_STATIC_THRESHOLD = 0.3


class SamplingConfig(BaseModel):
    """How sources turn streams into frame batches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fps: float = Field(1.0, gt=0, description="frames sampled per second of presentation time")
    batch_frames: int = Field(64, ge=1, description="frames per FrameBatch (live batches also leave after live.max_batch_delay_s); "
                              "as large as runtime.encode_batch so one decoder batch fills an encoder call")
    size: int = Field(224, ge=8, description="square output size; set from the model's input size")
    static_threshold: float | None = Field(
        DEFAULT_STATIC_THRESHOLD, ge=0,
        description="a sampled frame whose 32x32 thumbnail differs from the stream's last encoded frame by less "
                    "than this (noise-corrected mean absolute difference, 0..255) is a repeat: not re-encoded, it reuses that "
                    "embedding; 0 or None: off")
    thumbnail_width: int = Field(256, ge=0, description="width (px) of the JPEG thumbnail kept of every sampled frame "
                                 "in the frames table (the service shows it); 0: none")
    decode: str = Field("all", pattern="^(all|keyframes|auto)$",
                        description="all: decode every frame; keyframes: decode keyframes only (a slot is represented "
                                    "by the first keyframe at/after its start); auto: keyframes for local files whose "
                                    "keyframe interval is <= 1/fps, else all")


class ClipConfig(BaseModel):
    """Clip windows over the sampled frames, counted in frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(8, ge=1, description="frames per clip window")
    stride: int = Field(4, ge=1, description="frames between window starts")

    @model_validator(mode="after")
    def _stride_within_window(self) -> "ClipConfig":
        if self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window}): frames would be skipped")
        return self


class RuntimeConfig(BaseModel):
    """Actor layout and backpressure limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encode_batch: int = Field(64, ge=1, description="max frames per encoder call, across streams")
    max_active_streams: int = Field(4, ge=1, description="streams decoded at once; the rest wait")
    inflight_per_stream: int = Field(2, ge=1, description="frame batches requested ahead per stream")
    torch_threads: int = Field(2, ge=1, description="torch threads in the encode actor")
    decode_cpus: float = Field(0.25, gt=0, description="Ray CPUs per decode actor (I/O bound)")
    streams_per_decoder: int = Field(1, ge=1, description="streams whose decoders share one process (a decode "
                                     "host, a thread per stream); 1: a process per stream. Many live streams: 8-32")
    sink_cpus: float = Field(0.1, gt=0, description="Ray CPUs per sink actor")
    encode_cpus: float = Field(1.0, gt=0, description="Ray CPUs for the encode actor")
    actor_restarts: int = Field(3, ge=0, description="Ray restarts of the encode and sink actors after a crash")
    max_rewinds: int = Field(3, ge=0, description="replays of a stream from its checkpoint without progress before it fails")
    restart_wait_s: float = Field(120.0, ge=0, description="after an encode or sink process died: how long to wait "
                                  "for Ray to restart it before the affected streams are replayed")
    sink_recycle_s: float = Field(0.0, ge=0, description="replace the sink processes, between write groups, once "
                                  "they are this old (0: never, the default: a sink's memory stays flat without it)")
    checkpoint_interval_s: float = Field(1.0, ge=0, description="min seconds between checkpoint rows of a stream")
    placement: Literal["DEFAULT", "SPREAD"] = Field(
        "DEFAULT", description="Ray scheduling of the decode and encode actors: SPREAD places them over the cluster's "
                               "nodes (multi-node indexing); DEFAULT packs them where Ray likes (one machine)")
    encoders: int | Literal["per-node"] = Field(
        1, description="encode actors of a run: a count (placed by `placement`), or \"per-node\": one on every alive "
                       "node with encode_cpus free, each stream's decoder beside its encoder; a stream whose node dies "
                       "is replayed on a surviving node from its last committed position")
    resume: bool = Field(True, description="continue each stream from its committed checkpoint; done streams are skipped")

    @field_validator("encoders")
    @classmethod
    def _some_encoders(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"runtime.encoders must be at least 1 or \"per-node\", not {value}")
        return value


class LiveConfig(BaseModel):
    """Live sources (rtsp, tcp, udp, live HLS): stalls, reconnects, batching for freshness."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_timeout_s: float = Field(10.0, gt=0, description="seconds one connection attempt may take")
    stall_timeout_s: float = Field(5.0, gt=0, description="no frame for this long: the stream is reconnected")
    backoff_initial_s: float = Field(0.5, gt=0, description="first wait between reconnect attempts")
    backoff_max_s: float = Field(10.0, gt=0, description="cap of the exponential backoff")
    connect_give_up_s: float = Field(30.0, gt=0, description="a stream that never delivered a frame fails after this")
    give_up_s: float | None = Field(None, gt=0, description="a stalled stream fails after this (None: retry forever)")
    max_batch_delay_s: float = Field(0.5, ge=0, description="a live batch is sent once its first frame is this old")
    rtsp_transport: str = Field("auto", pattern="^(auto|udp|tcp)$", description="rtsp lower transport")


class StoreConfig(BaseModel):
    """Table upkeep under continuous appends (run by the sink actors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimize_every_s: float = Field(60.0, gt=0, description="compact a table's fragments at most this often")
    optimize_every_writes: int = Field(50, ge=1, description="... or after this many writes, whichever is first")
    keep_versions_s: float = Field(300.0, ge=0, description="old table versions kept this long (running readers)")
    index_min_rows: int = Field(20000, ge=256, description="clips rows before an ANN index is built")
    index_type: str = Field("IVF_PQ", description="LanceDB vector index type for clips.embedding")
    index_max_deltas: int = Field(
        1, ge=1, description="merge the clips ANN index's deltas into one once upkeep has left more than this "
                             "(compaction never merges fragments of different deltas, so this bounds the fragments)")
    append_hot_tables: bool = Field(
        False, description="frames and clips: append the rows a write claim proves new (one commit, no read of "
                          "the table; storage/appender.py); false: upsert every batch (merge_insert reads every fragment)")
    release_after_upkeep: bool = Field(
        True, description="after each upkeep, reopen the table handles (dropping LanceDB's caches) and return "
                          "free heap pages to the OS (also after every upsert, which reads every fragment's keys), "
                          "so a sink's memory stays flat under continuous appends")
    compact_rows: int = Field(
        16384, ge=0, description="compaction target rows per fragment: a fragment that reached it is not rewritten "
                                 "again (size-tiered, storage/compaction.py); 0: LanceDB's optimize, which rewrites the "
                                 "table's one growing fragment at every upkeep")
    compact_tier_factor: int = Field(4, ge=2, description="a tier merges this many adjacent full fragments into one")
    compact_tiers: int = Field(
        1, ge=0, description="tiers above compact_rows (fragments of compact_rows * factor**k rows); bounds both the "
                             "fragment count and the largest rewrite (compact_rows * factor**tiers rows)")


class IndexConfig(BaseModel):
    """Everything an indexing run needs; plain data so it crosses Ray boundaries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = Field(DEFAULT_DB, description="the tables: a directory, or s3://bucket/prefix, gs://..., az://...")
    storage: StorageConfig = Field(StorageConfig(), description="object store endpoint, region and keys (else the "
                                   "standard variables: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); never printed")
    model: str = "default"
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto", description="image tower precision when indexing: auto = bf16 on CPUs with native bf16, else fp32; int8 = compiled int8 tower (explicit only)")
    adapters: list[str] = Field(default_factory=lambda: ["meanpool"], min_length=1)
    adapter_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='per-adapter options, e.g. {"prompt": {"checkpoint": "ckpt/prompt.safetensors"}}'
    )
    sampling: SamplingConfig = SamplingConfig()
    clips: ClipConfig = ClipConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    live: LiveConfig = LiveConfig()
    store: StoreConfig = StoreConfig()
    store_frames: bool = True
    ray_address: str | None = Field(
        None, description="Ray to run on (streamvl.runtime.cluster): None = RAY_ADDRESS if set, else a private local Ray "
                          "bound to 127.0.0.1; 'local' = always private; 'auto' = the cluster `ray start` made on this "
                          "host; HOST:PORT or ray://HOST:PORT = that cluster")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> IndexConfig:
    """Parse a TOML file (optional) and apply `{"sampling.fps": 2.0}`-style overrides (None values ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        return IndexConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
