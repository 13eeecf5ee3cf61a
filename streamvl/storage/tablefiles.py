"""The files of one Lance table, on a local disk or in an object store, for check and repair.

`streamvl check` must look below Lance's dataset API: whether a data file is present and of the
size its manifest recorded, which manifests exist (the newest one may be lost or unreadable, and
then Lance opens an older version or none), which transaction files were written for versions
that no manifest names. Lance has no Python API for listing its objects, so TableFiles reaches
them through pyarrow's filesystems (local, S3, GCS, Azure), built from the same resolved
StorageTarget LanceDB uses (objectstore.resolve: endpoint, keys, plain http only for an http
endpoint); credentials stay in memory.

Paths given to and returned by TableFiles are relative to the table's folder (`data/x.lance`,
`_versions/...manifest`); `show(rel)` is the full location for messages (no credentials in it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from streamvl.storage.objectstore import GCS, S3, StorageConfig, StorageTarget, resolve

MOVED = "_streamvl_damaged"  # repair moves unusable manifests / stray transactions here (never deleted)
_MANIFEST = re.compile(r"^(\d+)\.manifest$")
_TXN = re.compile(r"^(\d+)-[\w-]+\.txn$")
_U64 = (1 << 64) - 1


def manifest_version(name: str) -> int | None:
    """The version a `_versions/` file name stands for: Lance's v2 names count down from 2^64-1
    (so the newest sorts first on an object store), v1 names are the version itself."""
    m = _MANIFEST.match(name)
    if m is None:
        return None
    n = int(m.group(1))
    return _U64 - n if n > (1 << 63) else n


def transaction_read_version(name: str) -> int | None:
    """The version a `_transactions/<read_version>-<uuid>.txn` was written against (it commits read_version+1)."""
    m = _TXN.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class FileInfo:
    rel: str  # relative to the table folder
    size: int

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]


class TableFiles:
    """One table's folder `<db>/<table>.lance`: Lance datasets of it, and its objects."""

    def __init__(self, db: str, table: str, storage: StorageConfig | None = None) -> None:
        self.target: StorageTarget = resolve(str(db), storage)
        self.table = table
        self.uri = f"{self.target.uri.rstrip('/')}/{table}.lance"
        self._fs, self._root = _filesystem(self.target, self.uri)

    @property
    def local(self) -> bool:
        return self.target.local

    def dataset(self, version: int | None = None) -> Any:
        """The Lance dataset at its latest (or the given) version; raises Lance's error if unreadable."""
        import lance

        return lance.dataset(self.uri, version=version, storage_options=dict(self.target.options) or None)

    def show(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def _path(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel else self._root

    def size(self, rel: str) -> int | None:
        """The object's size in bytes, None if it does not exist."""
        import pyarrow.fs as pafs

        info = self._fs.get_file_info(self._path(rel))
        return info.size if info.type == pafs.FileType.File else None

    def list(self, rel: str) -> list[FileInfo]:
        """Files directly under a folder of the table (none if it does not exist)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self._path(rel), allow_not_found=True, recursive=False)
        prefix = len(self._root) + 1
        return sorted((FileInfo(i.path[prefix:], i.size or 0) for i in self._fs.get_file_info(selector)
                       if i.type == pafs.FileType.File), key=lambda f: f.rel)

    def read_bytes(self, rel: str) -> bytes:
        with self._fs.open_input_stream(self._path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self._fs.open_output_stream(self._path(rel)) as f:
            f.write(data)

    def move_aside(self, rel: str) -> str:
        """Move a file to `_streamvl_damaged/` (copy, then delete: object stores have no rename);
        returns where it went. Lance ignores that folder; nothing is deleted for good."""
        dest = f"{MOVED}/{rel.replace('/', '__')}"
        if self.local:
            self._fs.create_dir(self._path(MOVED), recursive=True)
        self._fs.copy_file(self._path(rel), self._path(dest))
        self._fs.delete_file(self._path(rel))
        return dest

    def manifests(self) -> dict[int, FileInfo]:
        """{version: manifest file} of every manifest present."""
        out = {}
        for f in self.list("_versions"):
            v = manifest_version(f.name)
            if v is not None:
                out[v] = f
        return out

    def transactions(self) -> list[tuple[int, FileInfo]]:
        """(read_version, file) of every transaction file present."""
        out = []
        for f in self.list("_transactions"):
            v = transaction_read_version(f.name)
            if v is not None:
                out.append((v, f))
        return out


def _filesystem(target: StorageTarget, uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and the table folder's path in it."""
    import pyarrow.fs as pafs

    if target.local:
        return pafs.LocalFileSystem(), uri.rstrip("/")
    parts = urlsplit(uri)
    path = f"{parts.netloc}{parts.path}".rstrip("/")
    opts = dict(target.options)
    if target.scheme == S3:
        endpoint = opts.get("aws_endpoint")
        kwargs: dict[str, Any] = {"region": opts.get("aws_region") or None}
        if endpoint:
            ep = urlsplit(endpoint)
            kwargs |= {"endpoint_override": ep.netloc, "scheme": ep.scheme}
        if opts.get("aws_access_key_id"):
            kwargs |= {"access_key": opts["aws_access_key_id"], "secret_key": opts["aws_secret_access_key"],
                       "session_token": opts.get("aws_session_token")}
        return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), path
    if target.scheme == GCS:
        return pafs.GcsFileSystem(), path  # application default credentials
    fs, found = pafs.FileSystem.from_uri(uri)  # az://: pyarrow's Azure filesystem, its default credentials
    return fs, found.rstrip("/")
