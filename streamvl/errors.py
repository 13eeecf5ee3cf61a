"""Typed errors. Each carries the context a user needs to find the problem."""

from __future__ import annotations


def one_line(text: str) -> str:
    """Control characters (a newline in a file name) escaped, so a message or output line stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


class ClusterError(ConfigError):
    """The Ray cluster named by --ray-address / RAY_ADDRESS cannot be used (not found, unreachable,
    another Ray or Python version)."""


class StoreDamagedError(StoreError):
    """A table cannot be read because a file or version of it is damaged or missing.

    table, path (the bad data file or manifest) and version are set where known; db names the database,
    so the message can say which `streamvl check` / `streamvl repair` to run."""

    def __init__(self, message: str, *, table: str | None = None, path: str | None = None,
                 version: int | None = None, db: str | None = None, **context) -> None:
        super().__init__(message, **context)
        self.table, self.path, self.version, self.db = table, path, version, db

    def context(self) -> dict[str, object]:
        fields = {"table": self.table, "path": self.path, "version": self.version, "db": self.db}
        return super().context() | {k: v for k, v in fields.items() if v is not None}

    def __str__(self) -> str:
        parts = [super().__str__()]
        for name in ("table", "version", "path"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return " ".join(parts)
