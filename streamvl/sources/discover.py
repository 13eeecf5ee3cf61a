"""Turn user inputs (paths, directories, globs, URLs) into StreamInfo with stable stream ids."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from streamvl.errors import ConfigError, SourceError
from streamvl.sources.decode import is_url, local_path, probe_duration
from streamvl.types import StreamInfo

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .m2v .ts .mts .m2ts .flv .wmv .asf .3gp .3g2 .ogv .mxf .vob .y4m".split()
)

_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_GLOB_MAGIC = re.compile(r"[*?[]")


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


def _walk_videos(root: Path) -> list[Path]:
    """Video files under root, recursively, skipping hidden files and directories, sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith(".") and is_video_file(Path(f)))
    return sorted(found)


def _glob_videos(pattern: str) -> list[Path]:
    """Files matching the pattern (directories expanded); a literal extension in the pattern is
    trusted as is, otherwise only video extensions are kept (`data/*` skips notes.txt)."""
    literal_ext = bool(Path(pattern).suffix) and not _GLOB_MAGIC.search(Path(pattern).suffix)
    found: list[Path] = []
    for match in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
        path = Path(match)
        if path.is_dir():
            found.extend(_walk_videos(path))
        elif path.is_file() and (literal_ext or is_video_file(path)):
            found.append(path)
    return found


def _expand_one(raw: str) -> tuple[list[str], bool]:
    """(uris, expanded): one URI for a URL or file; many for a directory or glob."""
    if is_url(raw):
        return [raw], False
    path = local_path(raw)
    if path.is_dir():
        videos = _walk_videos(path)
        if not videos:
            raise SourceError(f"directory contains no video files: {raw}", stream_id=stream_id_for(raw), uri=raw)
        return [str(p.resolve()) for p in videos], True
    if path.exists():
        return [str(path.resolve())], False
    if _GLOB_MAGIC.search(raw):
        videos = _glob_videos(raw)
        if not videos:
            raise SourceError(f"glob matches no video files: {raw}", stream_id=stream_id_for(raw), uri=raw)
        return [str(p.resolve()) for p in videos], True
    raise SourceError(f"no such file or directory: {raw}", stream_id=stream_id_for(raw), uri=raw)


def expand_sources(inputs: Sequence[str], ids: Sequence[str | None] | None = None) -> list[StreamInfo]:
    """Expand paths, directories (recursive, sorted), globs and URLs into StreamInfo.

    ids: optional explicit stream ids, one per input (None/"" = derive one); an explicit id is
    only allowed for an input that names a single stream (a file or URL). The same file reached
    twice is listed once. Durations are probed from file headers; URLs and unprobeable files get
    None (a bad file still gets a StreamInfo: its error surfaces when it is read).
    """
    if ids is not None and len(ids) != len(inputs):
        raise ConfigError(f"got {len(ids)} ids for {len(inputs)} inputs; give one id per input")
    infos: list[StreamInfo] = []
    seen_uris: set[str] = set()
    seen_ids: dict[str, str] = {}
    for i, raw in enumerate(inputs):
        raw = os.fspath(raw)
        uris, expanded = _expand_one(raw)
        explicit = ids[i] if ids is not None else None
        if explicit and expanded:
            raise ConfigError(
                f"id {explicit!r} given for {raw!r}, which expands to {len(uris)} files; ids are for single files/URLs"
            )
        for uri in uris:
            if uri in seen_uris:
                continue
            seen_uris.add(uri)
            stream_id = explicit or stream_id_for(uri)
            if stream_id in seen_ids:
                raise ConfigError(f"stream id {stream_id!r} used for both {seen_ids[stream_id]} and {uri}")
            seen_ids[stream_id] = uri
            duration = None if is_url(uri) else probe_duration(uri)
            infos.append(StreamInfo(stream_id=stream_id, uri=uri, duration=duration))
    return infos
