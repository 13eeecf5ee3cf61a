"""Where the tables live, and how LanceDB reaches them: a local directory or an object store.

`resolve(db, storage, env)` checks the database URI (a local path, `s3://bucket/prefix`,
`gs://bucket/prefix` or `az://container/prefix`) and builds LanceDB's `storage_options` from the
standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, ...)
overridden by the config's `[storage]` table. Why here and not in Lance's own environment
lookup: one place decides plain http (allowed only when the endpoint says http://, whatever
AWS_ALLOW_HTTP says), rejects credentials in the URI, and keeps keys out of every repr and
message: credentials live in memory only and are never printed, logged or written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from streamvl.errors import ConfigError

LOCAL, S3, GCS, AZURE = "file", "s3", "gs", "az"
OBJECT_STORES = (S3, GCS, AZURE)
# Option keys whose values are credentials (matched as substrings of the lower-case key).
_SECRET_WORDS = ("secret", "token", "password", "key", "sas", "credential", "signature")
_BUCKET = {
    S3: re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    GCS: re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"),
    AZURE: re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$"),
}
# Standard variables, first one set wins (AWS_ENDPOINT_URL_S3 is the AWS SDKs' per-service form;
# AWS_ENDPOINT is object_store's own name).
_AWS_ENV = {
    "endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
}
_AWS_OPTION = {"endpoint": "aws_endpoint", "region": "aws_region", "access_key_id": "aws_access_key_id",
               "secret_access_key": "aws_secret_access_key", "session_token": "aws_session_token"}
# Keys [storage.options] must not set: the named fields own them (and allow_http follows the endpoint).
_MANAGED = {"allow_http", "endpoint", "aws_endpoint", "aws_endpoint_url", "region", "aws_region", "aws_default_region",
            "access_key_id", "aws_access_key_id", "secret_access_key", "aws_secret_access_key", "session_token",
            "aws_session_token", "token", "aws_token"}


class StorageConfig(BaseModel):
    """The config's `[storage]` table: overrides of the standard variables for object stores.

    endpoint, region and the keys apply to s3:// (an S3-compatible store: set endpoint).
    options: further Lance storage options passed as they are, e.g. google_service_account or
    azure_storage_account_name (see Lance's object store configuration); not allow_http.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    options: dict[str, SecretStr] = {}


def is_secret(key: str) -> bool:
    """True for option keys whose values are credentials (redacted wherever shown)."""
    return any(word in key.lower() for word in _SECRET_WORDS)


@dataclass(frozen=True)
class StorageTarget:
    """A checked database location plus its LanceDB storage_options (redacted in repr)."""

    uri: str
    scheme: str
    options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def local(self) -> bool:
        return self.scheme == LOCAL

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `lancedb.connect(self.uri, ...)` (empty for a local path)."""
        return {"storage_options": dict(self.options)} if self.options else {}

    def redacted(self) -> dict[str, str]:
        """The options with credential values replaced by '***': safe to print or log."""
        return {k: ("***" if is_secret(k) else v) for k, v in self.options.items()}

    def __repr__(self) -> str:
        return f"StorageTarget({self.uri!r}, options={self.redacted()!r})"

    __str__ = __repr__


def storage_config(table: StorageConfig | Mapping[str, Any] | None) -> StorageConfig:
    """A StorageConfig from a parsed `[storage]` table (or None: empty); one-line ConfigError if invalid."""
    if isinstance(table, StorageConfig):
        return table
    try:
        return StorageConfig.model_validate(table or {})
    except ValidationError as exc:
        # pydantic's message lists the offending keys, never SecretStr values
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid [storage] table: {problems}") from exc


def split_uri(db: str) -> tuple[str, str]:
    """(scheme, checked uri) of a database location; ConfigError for what LanceDB cannot store tables in."""
    db = str(db).strip()
    if not db:
        raise ConfigError("empty database location: give a directory or s3://, gs://, az:// URI")
    if "://" not in db:
        return LOCAL, db
    parts = urlsplit(db)
    scheme = parts.scheme.lower()
    if "@" in db.partition("://")[2] and scheme != LOCAL:
        raise ConfigError(f"credentials in the database URI {_no_userinfo(db)!r}: they would be printed; "
                          "use the standard variables (AWS_ACCESS_KEY_ID, ...) or the [storage] table")
    if scheme == LOCAL:
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ConfigError(f"file URI must be file:///absolute/path, got {db!r}")
        return LOCAL, parts.path
    if scheme not in OBJECT_STORES:
        raise ConfigError(f"unsupported database URI scheme {scheme!r} in {_no_userinfo(db)!r}: "
                          "use a local path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix")
    if parts.query or parts.fragment:
        raise ConfigError(f"database URI {_no_userinfo(db)!r} has a query or fragment: give {scheme}://bucket/prefix")
    bucket = parts.netloc
    if not _BUCKET[scheme].match(bucket):
        raise ConfigError(f"invalid bucket or container name {bucket!r} in {db!r}")
    prefix = parts.path.strip("/")
    return scheme, f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"


def _no_userinfo(uri: str) -> str:
    """The URI without anything before an '@' (a secret may contain '/', so URL parsing cannot find it)."""
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _check_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in endpoint:
        raise ConfigError(f"invalid object store endpoint {_no_userinfo(endpoint)!r}: give http(s)://host[:port]")
    return endpoint.rstrip("/")


def _s3_options(config: StorageConfig, env: Mapping[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, variables in _AWS_ENV.items():
        value = getattr(config, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None:
            value = next((env[v] for v in variables if env.get(v)), None)
        if value:
            options[_AWS_OPTION[name]] = value
    if ("aws_access_key_id" in options) != ("aws_secret_access_key" in options):
        given = "access key id" if "aws_access_key_id" in options else "secret access key"
        raise ConfigError(f"object store credentials incomplete: a {given} without its pair "
                          "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or [storage] access_key_id and secret_access_key)")
    endpoint = options.get("aws_endpoint")
    if endpoint is not None:
        options["aws_endpoint"] = _check_endpoint(endpoint)
    options["allow_http"] = "true" if endpoint is not None and endpoint.lower().startswith("http://") else "false"
    return options


def resolve(db: str, storage: StorageConfig | Mapping[str, Any] | None = None,
            env: Mapping[str, str] | None = None) -> StorageTarget:
    """The checked location of `db` and its LanceDB storage_options.

    storage: the `[storage]` table (its values win over the environment); env: the variables to
    read (default os.environ: each process resolves its own, so keys need not cross Ray).
    """
    config = storage_config(storage)
    env = os.environ if env is None else env
    scheme, uri = split_uri(db)
    extra = {k: v.get_secret_value() for k, v in config.options.items()}
    managed = sorted(k for k in extra if k.lower() in _MANAGED)
    if managed:
        raise ConfigError(f"[storage.options] must not set {', '.join(managed)}: use [storage] endpoint, region, "
                          "access_key_id, secret_access_key, session_token (plain http follows an http:// endpoint)")
    if scheme == LOCAL:
        if config != StorageConfig():
            raise ConfigError(f"a [storage] table was given but the database {uri!r} is a local path")
        return StorageTarget(uri, LOCAL)
    if scheme == S3:
        options = _s3_options(config, env)
    else:
        set_s3 = [name for name in _AWS_OPTION if getattr(config, name) is not None]
        if set_s3:
            raise ConfigError(f"[storage] {', '.join(set_s3)} apply to s3:// only; for {scheme}:// use [storage.options]")
        options = {"allow_http": "false"}
    return StorageTarget(uri, scheme, {**options, **extra})
