"""Which Ray this process runs on, and the typed errors that come back across the Ray boundary.

`ray.init(address=None)` attaches to whatever cluster `ray start` last recorded on the host
(another user's, another virtualenv's), whose workers may not even import streamvl. So streamvl
never calls it that way. The address is explicit:

- none (no --ray-address, RAY_ADDRESS unset or "local"): a private Ray started for this process,
  bound to 127.0.0.1 (see `keep_on_loopback`), no dashboard, random free ports; it ends with the process;
- "auto": the cluster `ray start` recorded on this host (its ray_current_cluster file), only that;
- HOST:PORT (GCS) or ray://HOST:PORT (Ray Client): that cluster.

A cluster that is not there, does not answer, or runs another Ray or Python version is a one-line
ClusterError (naming both versions), not a hang or a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import socket

import ray

from streamvl import errors
from streamvl.errors import ClusterError, StreamvlError

LOCAL, AUTO = "local", "auto"
LOOPBACK = "127.0.0.1"
# Ray's switch for its one-machine mode (named for the platforms where it is the default).
ONE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
REACH_TIMEOUT_S = 3.0
_VERSIONS = re.compile(r"Ray:\s*(\S+)\s+Python:\s*(\S+)")
_TYPED_LINE = re.compile(r"\bstreamvl\.errors\.(\w+): (.*)$")
_HINT = "or leave --ray-address and RAY_ADDRESS unset for a private local Ray"


def requested(address: str | None = None) -> str:
    """The address asked for: the given one, else RAY_ADDRESS, else "local"."""
    value = address if address else os.environ.get("RAY_ADDRESS", "")
    return value.strip() or LOCAL


def connect(address: str | None = None) -> str:
    """Start or join Ray as `address` says (see the module doc); returns the GCS address in use.

    Does nothing (but answer) when this process is connected already, e.g. inside a Ray job
    or a test that started its own instance."""
    if not ray.is_initialized():
        target = requested(address)
        if target == LOCAL:
            keep_on_loopback()
            ray.init(address=LOCAL, _node_ip_address=LOOPBACK, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=True)
        else:
            _join(target)
    return current_address()


def keep_on_loopback() -> None:
    """Make the Ray this process starts use 127.0.0.1 only: its GCS, raylet, agents and workers.

    `ray.init(_node_ip_address="127.0.0.1")` alone does not do it: Ray replaces a loopback address by
    the machine's outward one (`services.resolve_ip_for_localhost`) and its agents listen there,
    unless it runs in its one-machine mode. That mode is read from the environment at import (by this
    process and by the raylet and workers it starts), so both are set. A private Ray only: a
    one-machine Ray refuses to join other nodes."""
    from ray._private import ray_constants

    os.environ[ONE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def current_address() -> str:
    """The GCS address of the Ray this process is connected to ("" when not connected)."""
    if not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().gcs_address)


def recorded_cluster() -> str | None:
    """The GCS address `ray start` recorded on this host (in RAY_TMPDIR or /tmp), if any."""
    from ray._private.services import find_bootstrap_address  # no public API for the record

    return find_bootstrap_address(None) or None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT` or `ray://HOST:PORT`, else None."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or LOOPBACK, int(port)


def _check_reachable(address: str, shown: str) -> tuple[str, int]:
    where = _host_port(address)
    if where is None:
        raise ClusterError(f"Ray address {shown!r} is not HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
    try:
        socket.create_connection(where, timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(f"no Ray cluster answers at {address} ({reason}); check --ray-address / RAY_ADDRESS, "
                           f"{_HINT}") from exc
    return where


def _join(target: str) -> None:
    address = target
    if target == AUTO:
        address = recorded_cluster()
        if address is None:
            raise ClusterError("--ray-address auto: no cluster started with `ray start` is recorded on this host; "
                               f"start one (`ray start --head --node-ip-address 127.0.0.1`), pass HOST:PORT, {_HINT}")
        _auth_as_ray_auto_does()
    host, _ = _check_reachable(address, target)
    options: dict[str, object] = {}
    if "://" not in address and host in (LOOPBACK, "localhost"):
        options["_node_ip_address"] = LOOPBACK  # a cluster on this host: no traffic off 127.0.0.1
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True, **options)
    except Exception as exc:  # Ray raises RuntimeError, ConnectionError, ValueError with long texts
        raise cluster_error(exc, address) from exc


def _auth_as_ray_auto_does() -> None:
    """ray.init(address="auto") turns token authentication on when a token is at hand (Ray >= 2.5x);
    an explicit address never does. streamvl resolves "auto" itself (only the `ray start` record,
    never any GCS process it can find), so it applies the same rule."""
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def cluster_error(exc: BaseException, address: str) -> ClusterError:
    """One line for a failed join; a version mismatch names both sides' Ray and Python versions."""
    text = str(exc)
    versions = _VERSIONS.findall(text)
    if "Version mismatch" in text and len(versions) >= 2:
        (ray_c, py_c), (ray_m, py_m) = versions[0], versions[1]
        return ClusterError(f"the Ray cluster at {address} runs Ray {ray_c} on Python {py_c}, but this streamvl runs "
                            f"Ray {ray_m} on Python {py_m}; join a cluster started from this environment, {_HINT}")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    auth = "" if os.environ.get("RAY_AUTH_MODE") else (
        " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token, e.g. in ~/.ray/auth_token)")
    return ClusterError(f"cannot join the Ray cluster at {address}: {first}{auth}")


def typed_error(exc: BaseException) -> StreamvlError | None:
    """The streamvl error behind a Ray error (a task's cause, or the last `streamvl.errors.X: ...`
    line of an actor's creation traceback), so the user sees that one line; None if there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, StreamvlError):
            return cause
        if isinstance(current, StreamvlError) and not isinstance(current, ray.exceptions.RayError):
            return current
        current = cause if isinstance(cause, BaseException) else current.__cause__
    text = getattr(exc, "error_msg", None) or str(exc)
    for line in reversed(text.splitlines()):
        match = _TYPED_LINE.search(line)
        cls = getattr(errors, match.group(1), None) if match else None
        if isinstance(cls, type) and issubclass(cls, StreamvlError):
            message = match.group(2)
            prefix = f"{cls.__name__}: "
            return cls(message[len(prefix):] if message.startswith(prefix) else message)
    return None
