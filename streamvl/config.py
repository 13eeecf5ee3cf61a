"""One typed configuration, parsed once from a TOML file plus overrides, serialisable to Ray actors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamvl.errors import ConfigError

DEFAULT_DB = "./streamvl-db"


class SamplingConfig(BaseModel):
    """How sources turn streams into frame batches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fps: float = Field(1.0, gt=0, description="frames sampled per second of presentation time")
    batch_frames: int = Field(16, ge=1, description="frames per FrameBatch")
    size: int = Field(224, ge=8, description="square output size; set from the model's input size")


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
    sink_cpus: float = Field(0.1, gt=0, description="Ray CPUs per sink actor")
    encode_cpus: float = Field(1.0, gt=0, description="Ray CPUs for the encode actor")


class IndexConfig(BaseModel):
    """Everything an indexing run needs; plain data so it crosses Ray boundaries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = DEFAULT_DB
    model: str = "default"
    adapters: list[str] = Field(default_factory=lambda: ["meanpool"], min_length=1)
    sampling: SamplingConfig = SamplingConfig()
    clips: ClipConfig = ClipConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    store_frames: bool = True


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
