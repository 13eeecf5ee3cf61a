"""What `streamvl serve` is configured with, and the start-up checks that refuse unsafe setups."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from streamvl.errors import ConfigError

API_KEY_ENV = "STREAMVL_API_KEY"
MAX_K = 200  # hits per page
MAX_QUERY_CHARS = 500
MAX_BODY_BYTES = 64 * 1024  # request bodies (search and stream requests are small JSON)
MAX_FILTER_VALUES = 64  # repeated stream / tag parameters
MAX_CLIP_S = 600.0  # longest clip.mp4 cut


class ServiceSettings(BaseModel):
    """One serve process: its database, address, key, and the optional indexing job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are named
    index: bool = False  # also run the serve-index job (a child process) on db
    index_args: tuple[str, ...] = ()  # extra `serve-index` options (e.g. --config, --fps)
    media_roots: tuple[str, ...] = ()  # folders whose files POST /streams may add (none: URLs only)
    warm: bool = True  # load the model and embed one query at start-up
    record_dir: str | None = None  # record live streams here (None: no recording)
    record_segment_s: float = Field(10.0, ge=1.0, le=600.0)  # segment length (cut at the next keyframe)
    record_keep_s: float | None = Field(24 * 3600.0, gt=0)  # delete segments older than this (None: keep)
    record_max_bytes: int | None = Field(None, gt=0)  # ... and the oldest while all exceed this (None: no cap)

    def key_value(self) -> str | None:
        return None if self.api_key is None else self.api_key.get_secret_value()


def read_api_key(key_file: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The API key from --api-key-file (first line) or else STREAMVL_API_KEY; None when neither."""
    if key_file:
        try:
            lines = Path(key_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {key_file!r}: {exc.strerror or exc}") from exc
        key = lines[0].strip() if lines else ""
        if not key:
            raise ConfigError(f"the API key file {key_file!r} is empty")
        return key
    env = os.environ if environ is None else environ
    key = env.get(API_KEY_ENV, "").strip()
    return key or None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(settings: ServiceSettings) -> None:
    """Refuse to start a service other machines could reach without an API key, or a weak key."""
    key = settings.key_value()
    if not is_loopback(settings.host) and key is None:
        raise ConfigError(f"--host {settings.host} is reachable from other machines: set an API key "
                          f"({API_KEY_ENV} or --api-key-file) or bind 127.0.0.1")
    if key is not None and len(key) < 16:
        raise ConfigError("the API key must have at least 16 characters")
    if settings.record_dir is not None and Path(settings.record_dir).exists() and not Path(settings.record_dir).is_dir():
        raise ConfigError(f"--record {settings.record_dir!r} is not a folder")
    for root in settings.media_roots:
        if not Path(root).is_dir():
            raise ConfigError(f"--media-root {root!r} is not a folder")
