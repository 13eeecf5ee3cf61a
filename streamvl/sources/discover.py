"""Turn user inputs (paths, directories, globs, URLs) into StreamInfo with stable stream ids.

Two entry points over one expansion:
- `expand_sources` is strict: a missing path or a folder or glob with nothing to index raises
  SourceError (adding one live stream, tests).
- `scan` is what `streamvl index` uses: every input fails alone. A missing path or a file that
  cannot be opened becomes a `FailedInput` (recorded as that stream's error), a folder or glob
  with nothing to index a one-line warning, and files a folder skips are named in a one-line note.

Folders and globs pick up every file a named file would index: videos, animations (.gif, .apng)
and stills (one frame each; FFmpeg reads still WebP, not animated), by extension; everything else
is skipped and named.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from streamvl.errors import ConfigError, SourceError, one_line
from streamvl.sources.decode import declared_duration, is_url, local_path, open_container, probe_duration
from streamvl.types import StreamInfo

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .m2v .ts .mts .m2ts .flv .wmv .asf .3gp .3g2 .ogv .mxf .vob .y4m".split()
)
# Animations and stills FFmpeg decodes (each checked in tests/unit/test_discover.py); a still is one frame.
IMAGE_EXTENSIONS = frozenset(
    ".gif .apng .webp .png .jpg .jpeg .jpe .jfif .bmp .tif .tiff .ppm .pgm .pbm .pnm .tga .pcx .sgi .rgb .xbm .qoi "
    ".jp2 .j2k .dds .ico".split()
)
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
SKIPPED_NAMES_SHOWN = 5  # file names a skip note lists before "and N more"
PROBE_TIMEOUT_S = 10.0

_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class FailedInput:
    """An input that cannot be indexed (missing, unreadable, not media): one line of error."""

    stream_id: str
    uri: str
    error: str


@dataclass
class Discovery:
    """What `scan` found: streams to index, inputs that failed alone, and one-line messages."""

    streams: list[StreamInfo] = field(default_factory=list)
    failed: list[FailedInput] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a folder or glob with nothing to index (a failed input)
    notes: list[str] = field(default_factory=list)  # files a folder or glob skipped, and why


def _stem(uri: str) -> str:
    """A short readable name: file stem, else last URL path segment, else URL host."""
    if is_url(uri):
        parts = urlsplit(uri)
        segment = parts.path.rstrip("/").rsplit("/", 1)[-1]
        name = Path(segment).stem if segment else (parts.hostname or "")
    else:
        name = local_path(uri).stem
    return _UNSAFE.sub("_", name.lower()).strip("_")[:40] or "stream"


def _hash_key(uri: str) -> str:
    """URLs as given; local paths absolute and resolved, so `./a.mp4` and `/x/a.mp4` agree."""
    return uri if is_url(uri) else str(local_path(uri).resolve())


def stream_id_for(uri: str) -> str:
    """Deterministic id: readable stem + 8 hex of a hash, e.g. 'clip-3f2a9c1b'."""
    digest = hashlib.sha1(_hash_key(uri).encode("utf-8")).hexdigest()[:8]
    return f"{_stem(uri)}-{digest}"


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def is_media_file(path: Path) -> bool:
    """A file a folder walk indexes: a video, an animation or a still image, by extension."""
    return path.suffix.lower() in MEDIA_EXTENSIONS


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(media files, other files) under root, recursively, hidden files and directories left out, sorted."""
    found: list[Path] = []
    skipped: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                (found if is_media_file(Path(name)) else skipped).append(Path(dirpath, name))
    return sorted(found), sorted(skipped)


def _glob(pattern: str) -> tuple[list[Path], list[Path]]:
    """Files matching the pattern (directories walked); a literal extension in the pattern is
    trusted as is, otherwise only media extensions are kept (`data/*` skips notes.txt)."""
    literal_ext = bool(Path(pattern).suffix) and not _GLOB_MAGIC.search(Path(pattern).suffix)
    found: list[Path] = []
    skipped: list[Path] = []
    for match in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
        path = Path(match)
        if path.is_dir():
            media, other = _walk(path)
            found.extend(media)
            skipped.extend(other)
        elif path.is_file():
            (found if literal_ext or is_media_file(path) else skipped).append(path)
    return found, skipped


def _skipped_note(raw: str, skipped: list[Path]) -> str | None:
    """One line naming the files a folder or glob left out, and why."""
    if not skipped:
        return None
    names = [one_line(p.name) for p in skipped[:SKIPPED_NAMES_SHOWN]]
    more = f" and {len(skipped) - SKIPPED_NAMES_SHOWN} more" if len(skipped) > SKIPPED_NAMES_SHOWN else ""
    return (f"{one_line(raw)}: skipped {len(skipped)} file(s) that are not video or image files by extension: "
            f"{', '.join(names)}{more} (name a file to index it anyway)")


@dataclass
class _Expanded:
    uris: list[str]
    expanded: bool  # a folder or glob (no explicit id allowed)
    skipped: list[Path]


class _NothingToIndex(SourceError):
    """A folder or glob that names no media file: a warning in `scan`, an error in `expand_sources`."""


def _expand_one(raw: str) -> _Expanded:
    """One URI for a URL or file; many for a directory or glob. SourceError: missing path;
    _NothingToIndex: a folder or glob without media files."""
    if is_url(raw):
        return _Expanded([raw], False, [])
    path = local_path(raw)
    if path.is_dir():
        media, skipped = _walk(path)
        if not media:
            others = f" (it holds {len(skipped)} other file(s))" if skipped else ""
            raise _NothingToIndex(f"directory contains no video or image files: {raw}{others}",
                                  stream_id=stream_id_for(raw), uri=raw)
        return _Expanded([str(p.resolve()) for p in media], True, skipped)
    if path.exists() or path.is_symlink():
        return _Expanded([str(path.resolve() if path.exists() else path.absolute())], False, [])
    if _GLOB_MAGIC.search(raw):
        media, skipped = _glob(raw)
        if not media:
            raise _NothingToIndex(f"glob matches no video or image files: {raw}", stream_id=stream_id_for(raw), uri=raw)
        return _Expanded([str(p.resolve()) for p in media], True, skipped)
    raise SourceError(f"no such file or directory: {raw}", stream_id=stream_id_for(raw), uri=raw)


class _Collector:
    """Deduplicates URIs and checks stream ids across the inputs of one call."""

    def __init__(self, inputs: Sequence[str], ids: Sequence[str | None] | None) -> None:
        if ids is not None and len(ids) != len(inputs):
            raise ConfigError(f"got {len(ids)} ids for {len(inputs)} inputs; give one id per input")
        self.ids = ids
        self.seen_uris: set[str] = set()
        self.seen_ids: dict[str, str] = {}

    def explicit(self, i: int, raw: str, found: _Expanded) -> str | None:
        explicit = self.ids[i] if self.ids is not None else None
        if explicit and found.expanded:
            raise ConfigError(
                f"id {explicit!r} given for {raw!r}, which expands to {len(found.uris)} files; ids are for single files/URLs"
            )
        return explicit or None

    def claim(self, uri: str, explicit: str | None) -> str | None:
        """The stream id for uri, or None when the same URI came earlier in this call."""
        if uri in self.seen_uris:
            return None
        self.seen_uris.add(uri)
        stream_id = explicit or stream_id_for(uri)
        if stream_id in self.seen_ids:
            raise ConfigError(f"stream id {stream_id!r} used for both {self.seen_ids[stream_id]} and {uri}")
        self.seen_ids[stream_id] = uri
        return stream_id


def expand_sources(inputs: Sequence[str], ids: Sequence[str | None] | None = None) -> list[StreamInfo]:
    """Expand paths, directories (recursive, sorted), globs and URLs into StreamInfo; strict.

    ids: optional explicit stream ids, one per input (None/"" = derive one); an explicit id is
    only allowed for an input that names a single stream (a file or URL). The same file reached
    twice is listed once. Durations are probed from file headers; URLs and unprobeable files get
    None (a bad file still gets a StreamInfo: its error surfaces when it is read). A missing path
    or a folder or glob with nothing to index raises SourceError.
    """
    collector = _Collector(inputs, ids)
    infos: list[StreamInfo] = []
    for i, raw in enumerate(inputs):
        raw = os.fspath(raw)
        found = _expand_one(raw)
        explicit = collector.explicit(i, raw, found)
        for uri in found.uris:
            stream_id = collector.claim(uri, explicit)
            if stream_id is not None:
                duration = None if is_url(uri) else probe_duration(uri)
                infos.append(StreamInfo(stream_id=stream_id, uri=uri, duration=duration))
    return infos


def probe(uri: str, stream_id: str) -> tuple[float | None, SourceError | None]:
    """(declared duration, None) of a local file that opens with a video stream, else (None, the
    SourceError its decoder would raise). URLs are not probed (None, None)."""
    if is_url(uri):
        return None, None
    try:
        with open_container(uri, PROBE_TIMEOUT_S, stream_id=stream_id) as container:
            stream = container.streams.best("video")
            if stream is None:
                return None, SourceError("no video stream", stream_id=stream_id, uri=uri)
            return declared_duration(container, stream), None
    except SourceError as exc:
        return None, exc


def scan(inputs: Sequence[str], ids: Sequence[str | None] | None = None) -> Discovery:
    """Expand inputs like `expand_sources`, but every input fails alone (see the module doc).

    Local files are opened once here (as the decoder would open them): one that cannot be opened
    or holds no video is a FailedInput at once, without starting a decoder for it. Bad ids are
    still a ConfigError for the whole call (bad usage)."""
    collector = _Collector(inputs, ids)
    out = Discovery()
    for i, raw in enumerate(inputs):
        raw = os.fspath(raw)
        try:
            found = _expand_one(raw)
        except _NothingToIndex as exc:
            out.warnings.append(one_line(exc.message))
            continue
        except SourceError as exc:
            uri = raw if is_url(raw) else str(local_path(raw).absolute())
            stream_id = collector.claim(uri, collector.ids[i] if collector.ids else None)
            if stream_id is not None:
                out.failed.append(FailedInput(stream_id, uri, one_line(str(exc))))
            continue
        explicit = collector.explicit(i, raw, found)
        if (note := _skipped_note(raw, found.skipped)) is not None:
            out.notes.append(note)
        for uri in found.uris:
            stream_id = collector.claim(uri, explicit)
            if stream_id is None:
                continue
            duration, error = probe(uri, stream_id)
            if error is not None:
                out.failed.append(FailedInput(stream_id, uri, one_line(str(error))))
            else:
                out.streams.append(StreamInfo(stream_id=stream_id, uri=uri, duration=duration))
    return out
