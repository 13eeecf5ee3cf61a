"""Typed errors. Each carries the context a user needs to find the problem."""

from __future__ import annotations


class StreamvlError(Exception):
    """Base error: a message plus the stream, position and plugin where known."""

    def __init__(
        self,
        message: str,
        *,
        stream_id: str | None = None,
        uri: str | None = None,
        pts: float | None = None,
        plugin: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stream_id = stream_id
        self.uri = uri
        self.pts = pts
        self.plugin = plugin

    def context(self) -> dict[str, object]:
        """The known context fields, for logs and the `streams` table."""
        fields = {"stream_id": self.stream_id, "uri": self.uri, "pts": self.pts, "plugin": self.plugin}
        return {k: v for k, v in fields.items() if v is not None}

    def __str__(self) -> str:
        parts = [f"{type(self).__name__}: {self.message}"]
        if self.stream_id is not None:
            parts.append(f"stream={self.stream_id}")
        if self.uri is not None:
            parts.append(f"uri={self.uri}")
        if self.pts is not None:
            parts.append(f"pts={self.pts:.3f}s")
        if self.plugin is not None:
            parts.append(f"plugin={self.plugin}")
        return " ".join(parts)

    def __reduce__(self):  # keep context across pickling (Ray task boundaries)
        return (_rebuild, (type(self), self.message, self.context()))


def _rebuild(cls: type[StreamvlError], message: str, context: dict[str, object]) -> StreamvlError:
    return cls(message, **context)  # type: ignore[arg-type]


class ConfigError(StreamvlError):
    """Invalid configuration or command-line value."""


class SourceError(StreamvlError):
    """A source cannot be opened: missing, empty, not a video, unreachable."""


class DecodeError(SourceError):
    """A source opened but its data is corrupt or ends before its declared length."""


class ModelLoadError(StreamvlError):
    """A model spec cannot be resolved or its weights cannot be loaded."""


class PluginError(StreamvlError):
    """A plugin is missing, invalid, or failed inside a hook."""


class StoreError(StreamvlError):
    """The LanceDB store rejected a read or write (schema mismatch, bad URI)."""


class OptionError(PluginError, ValueError):
    """An adapter option that its declaration does not allow (unknown name, wrong type or value)."""
