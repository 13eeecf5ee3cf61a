"""A foreign Ray cluster on the host (`ray start`, as another user or venv would leave it): streamvl
does not join it unless told (--ray-address auto / HOST:PORT / RAY_ADDRESS), joins it when told,
and refuses one of another Ray or Python version in one line. The test's clusters live in their
own temp dir (RAY_TMPDIR) and port, bound to 127.0.0.1, and are stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from streamvl.runtime.cluster import ONE_MACHINE_ENV

from tests.videos import make_video

pytestmark = pytest.mark.integration
MODEL = "streamvl-tiny@random:0"
BIN = Path(sys.executable).parent
RAY_CLI = "import sys; from ray.scripts.scripts import main; sys.exit(main())"
OTHER_VERSIONS = ("2.0.0", "3.9.18")
# The head's Ray records this process's versions as the cluster's: a cluster from another environment.
FAKE_VERSIONS = f"import ray._private.utils as u; u.compute_version_info = lambda: {OTHER_VERSIONS!r}; "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(tmp: Path) -> dict[str, str]:
    """Ray's temp dir (where `ray start` records its cluster) and auth token under tmp: the token
    exists, so the cluster uses token authentication, as Ray >= 2.5x sets it up by default."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    return env | {"RAY_TMPDIR": str(tmp), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_TOKEN_PATH": str(tmp / "auth_token"),
                  ONE_MACHINE_ENV: "0"}  # the cluster and its drivers on 127.0.0.1 only


def explicit_env(tmp: Path, address: str) -> dict[str, str]:
    """An explicit address, as `ray job submit` or a user sets it; Ray wants token auth named then."""
    return base_env(tmp) | {"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token"}


def _ours(tmp: Path, roots: list[psutil.Process]) -> list[psutil.Process]:
    """The cluster's processes: the `ray start` tree, and anything whose command line names our temp dir."""
    found = {p.pid: p for root in roots for p in [root, *root.children(recursive=True)]}
    for p in psutil.process_iter(["cmdline"]):
        if any(str(tmp) in part for part in p.info["cmdline"] or []):
            found.setdefault(p.pid, p)
    return list(found.values())


@contextmanager
def foreign_cluster(tmp: Path, versions_from_elsewhere: bool = False) -> Iterator[str]:
    """`ray start --head --block` in its own session; yields its GCS address; stopped by PID."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    (tmp / "auth_token").write_text(generate_new_authentication_token())
    port = free_port()
    code = (FAKE_VERSIONS if versions_from_elsewhere else "") + RAY_CLI
    cmd = [sys.executable, "-c", code, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(tmp / "ray"),
           "--dashboard-agent-listen-port", str(free_port())]  # not Ray's fixed 52365, which another Ray may hold
    log = open(tmp / "ray-start.log", "wb")
    proc = subprocess.Popen(cmd, env=base_env(tmp), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    record = tmp / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 120
        while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert record.exists(), f"ray start did not come up:\n{(tmp / 'ray-start.log').read_text()[-3000:]}"
        yield record.read_text().strip()
    finally:
        tree = _ours(tmp, [psutil.Process(proc.pid)] if proc.poll() is None else [])
        proc.send_signal(signal.SIGINT)  # --block: a graceful stop of its processes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for p in [*tree, *_ours(tmp, [])]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=30)
        log.close()
        assert not _ours(tmp, []), "processes of the test's Ray cluster are still running"


def drivers(address: str, tmp: Path) -> set[int]:
    """PIDs of every driver that ever connected to the cluster at `address` (its GCS job table)."""
    code = ("import json, sys, ray; ray.init(address=sys.argv[1], _node_ip_address='127.0.0.1', logging_level='ERROR'); "
            "from ray._private.state import jobs; print(json.dumps([j['DriverPid'] for j in jobs()]))")
    out = subprocess.run([sys.executable, "-c", code, address], env=explicit_env(tmp, address), capture_output=True, text=True,
                         timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def index(tmp: Path, clip: Path, db: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, str]:
    cmd = [str(BIN / "streamvl"), "index", str(clip), "--db", str(db), "--model", MODEL, "--json", *args]
    proc = subprocess.Popen(cmd, env=env or base_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    return proc, out, err


@pytest.fixture
def short_tmp():
    """A short temp dir: Ray's socket paths under it must stay within the UNIX socket path limit."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="svl-ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_foreign_cluster_is_joined_only_when_asked(short_tmp):
    clip = make_video(short_tmp / "clip.mp4", seconds=2.0, size=(64, 48)).path
    with foreign_cluster(short_tmp) as address:
        alone, out, err = index(short_tmp, clip, short_tmp / "db-private")
        assert alone.returncode == 0, err[-3000:]
        assert json.loads(out)["streams"][0]["status"] == "done"
        joined, out_auto, err_auto = index(short_tmp, clip, short_tmp / "db-auto", "--ray-address", "auto")
        assert joined.returncode == 0, err_auto[-3000:]
        assert json.loads(out_auto)["streams"][0]["status"] == "done"
        told, out_env, err_env = index(short_tmp, clip, short_tmp / "db-env", env=explicit_env(short_tmp, address))
        assert told.returncode == 0, err_env[-3000:]
        assert json.loads(out_env)["streams"][0]["status"] == "done"
        seen = drivers(address, short_tmp)
    assert alone.pid not in seen  # its own private Ray, though `ray start` recorded this cluster in RAY_TMPDIR
    assert joined.pid in seen and told.pid in seen


def test_a_cluster_of_another_version_is_one_line(short_tmp):
    clip = make_video(short_tmp / "clip.mp4", seconds=1.0, size=(64, 48)).path
    with foreign_cluster(short_tmp, versions_from_elsewhere=True) as address:
        proc, out, err = index(short_tmp, clip, short_tmp / "db", "--ray-address", "auto")
    assert proc.returncode == 2, err[-3000:]
    from ray._private.utils import compute_version_info

    ours_ray, ours_py = compute_version_info()
    errors = [line for line in err.splitlines() if line.startswith("ClusterError")]
    assert errors == [f"ClusterError: the Ray cluster at {address} runs Ray {OTHER_VERSIONS[0]} on Python {OTHER_VERSIONS[1]}, "
                      f"but this streamvl runs Ray {ours_ray} on Python {ours_py}; join a cluster started from this "
                      "environment, or leave --ray-address and RAY_ADDRESS unset for a private local Ray"]
    assert "Traceback" not in err and out == ""
