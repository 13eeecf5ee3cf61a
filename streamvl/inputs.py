"""Input checks the api runs before any work starts: nothing is created on disk, no Ray is started,
no torch is imported. Each failure is one typed error: ConfigError for bad usage (a missing
database, --k 0, an empty query), ModelLoadError / PluginError for a weights file or adapter
checkpoint that is missing or not what it claims to be.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Mapping

from streamvl.errors import ConfigError, ModelLoadError, PluginError, one_line

ADAPTER_CHECKPOINT_FORMAT = "streamvl-adapter/"  # prefix of the "format" an adapter checkpoint's JSON records
_SPACES = re.compile(r"\s+")


class InputWarning(UserWarning):
    """An input was changed to fit (a query cut to the model's context)."""


def is_local(db: str) -> bool:
    """A filesystem path or file:// URI (as opposed to an object-store URI such as s3://bucket/db)."""
    from streamvl.storage.objectstore import split_uri

    return split_uri(str(db))[0] == "file"


def existing_db(db: str, storage: Any = None) -> None:
    """A database to read must exist: reading never creates one (a typo would otherwise leave an
    empty directory behind and answer with nothing). In an object store (s3://, gs://, az://) the
    prefix is listed: no table under it means no database (object stores have no empty folders)."""
    from streamvl.storage.objectstore import resolve, split_uri

    target = resolve(str(db), storage)  # ConfigError for a bad URI or half a key pair; never echoes keys
    if not target.local:
        from streamvl.storage.store import Store

        if not Store(target.uri, storage=storage).table_names():
            shown = one_line(target.uri)
            raise ConfigError(f"no database at {shown} (no tables under that prefix); index into it first "
                              f"(streamvl index SOURCES --db {shown})")
        return
    db = split_uri(str(db))[1]
    path = Path(db).expanduser()
    if not path.exists():
        raise ConfigError(f"no database at {one_line(str(db))}; index into it first (streamvl index SOURCES --db {one_line(str(db))})")
    if not path.is_dir():
        raise ConfigError(f"--db {one_line(str(db))} is a file, not a database directory")


def indexed_model(db: str, alternative: str = "") -> str:
    """The model spec the index at `db` was built with (read from its table metadata; opens LanceDB).
    ConfigError when it records none: nothing indexed there yet. `alternative` adds another way out."""
    from streamvl.search.query import open_store
    from streamvl.storage.schema import MODEL_KEY

    existing_db(db)
    spec = open_store(str(db)).meta().get(MODEL_KEY)
    if not spec:
        shown = one_line(str(db))
        raise ConfigError(f"database {shown} holds no indexed clips (empty, or not a streamvl index); index into it "
                          f"first (streamvl index SOURCES --db {shown}){alternative}")
    return spec


def writable_db(db: str, storage: Any = None) -> None:
    """A database to write: an existing directory, or a path whose first existing parent is a
    writable directory (checked without creating anything). An object-store URI is checked for
    form and complete credentials only (no request: write access shows at the first commit)."""
    from streamvl.storage.objectstore import resolve, split_uri

    if not resolve(str(db), storage).local:
        return
    db = split_uri(str(db))[1]
    path = Path(db).expanduser().absolute()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"--db {one_line(str(db))} is a file, not a database directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"--db {one_line(str(db))}: the database directory is not writable")
        return
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir():
        raise ConfigError(f"--db {one_line(str(db))}: cannot create it, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--db {one_line(str(db))}: cannot create it, {parent} is not writable")


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a readable safetensors file (its header is parsed, no tensor is read), or None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception as exc:  # safetensors raises SafetensorError / OSError with one-line texts
        return f"not a readable safetensors file ({one_line(str(exc))})"
    return None


def _file_problem(path: Path) -> str | None:
    if not path.is_file():
        return "not found" if not path.exists() else "not a file"
    if path.stat().st_size == 0:
        return "empty (0 bytes)"
    if path.suffix == ".safetensors":
        return _safetensors_problem(path)
    return None


def model_spec(spec: str) -> None:
    """The model spec parses and, for a local weights file, the file is there and readable."""
    from streamvl.models.loading import parse_spec

    parsed = parse_spec(spec)  # ModelLoadError on a malformed spec
    if parsed.kind == "file":
        path = Path(parsed.value).expanduser()
        problem = _file_problem(path)
        if problem is not None:
            raise ModelLoadError(f"model spec {spec!r}: weights file {one_line(str(path))}: {problem}")


def adapter_checkpoint(path: str, adapter: str | None = None) -> None:
    """An adapter checkpoint: its .safetensors readable and the JSON beside it a streamvl adapter config."""
    weights = Path(path).expanduser()
    problem = _file_problem(weights)
    if problem is not None:
        raise PluginError(f"adapter checkpoint {one_line(str(weights))}: {problem}", plugin=adapter)
    config_path = weights.with_suffix(".json")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(str(exc))
        raise PluginError(f"adapter checkpoint {one_line(str(weights))}: cannot read its config "
                          f"{one_line(str(config_path))} ({reason})", plugin=adapter) from exc
    fmt = config.get("format") if isinstance(config, dict) else None
    if not str(fmt).startswith(ADAPTER_CHECKPOINT_FORMAT):
        raise PluginError(f"adapter checkpoint {one_line(str(weights))}: {one_line(str(config_path))} is not a "
                          f"streamvl adapter config (format {fmt!r})", plugin=adapter)


def adapter_checkpoints(adapter_options: Mapping[str, Mapping[str, Any]]) -> None:
    """Every `checkpoint` named in per-adapter options (adapter_options.NAME.checkpoint)."""
    for name, options in adapter_options.items():
        if isinstance(options, Mapping) and options.get("checkpoint"):
            adapter_checkpoint(str(options["checkpoint"]), name)


def search_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k (segments to return) must be an integer >= 1, got {k!r}")


def search_text(text: str) -> str:
    """The query with control and format characters removed and runs of white space made one
    space; an empty or blank query is a ConfigError."""
    kept = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in str(text))
    clean = _SPACES.sub(" ", kept).strip()
    if not clean:
        raise ConfigError("the query is empty; give the text to search for, e.g. streamvl search \"a red car\"")
    return clean


def fit_context(text: str, tokenizer: Callable[..., Any]) -> tuple[str, str | None]:
    """(text, None) when the text fits the tokenizer's context; else (the longest word prefix that
    fits, a one-line warning). Tokenizers without `encode` / `context_length` are trusted to fit."""
    encode = getattr(tokenizer, "encode", None)
    context = getattr(tokenizer, "context_length", None)
    if encode is None or not context:
        return text, None
    room = int(context) - 2  # start- and end-of-text tokens
    total = len(encode(text))
    if total <= room:
        return text, None
    words = text.split(" ")
    lo, hi = 0, len(words)  # the longest prefix of lo words fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(" ".join(words[:mid]))) <= room:
            lo = mid
        else:
            hi = mid - 1
    kept = " ".join(words[:lo]) if lo else tokenizer.decode(encode(text)[:room]).strip()
    shown = kept if len(kept) <= 60 else kept[:57] + "..."
    return kept, (f"query truncated to the model's context of {context} tokens ({total + 2} given); "
                  f"searching for {one_line(shown)!r}")

