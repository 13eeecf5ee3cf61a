"""A real two-host Ray cluster on one machine: two Linux network namespaces joined by a bridge.

Topology (all made here, addresses in a free 10.x.y.0/24 picked per run):

    root namespace (the test, the job client, services such as MotoS3)   10.x.y.1  bridge svb<id>
      |-- veth --> namespace svl-<pid>-<id>-head    eth0 10.x.y.2   ray start --head
      |-- veth --> namespace svl-<pid>-<id>-worker  eth0 10.x.y.3   ray start --address 10.x.y.2:6379

The bridge has no uplink and the namespaces no default route: traffic stays between the two
namespaces and the root end of the bridge. Jobs are submitted from the root namespace (the
test process) to the head's dashboard at http://10.x.y.2:8265; a server the nodes must reach
(S3) binds to `host_ip` (10.x.y.1), because each namespace's 127.0.0.1 is its own.

Each node has its own --temp-dir and one CPU, runs the same interpreter as the tests
(`python -m ray.scripts.scripts`), and authenticates with a token made for this run
(RAY_AUTH_TOKEN, so ~/.ray/auth_token is neither read nor written). Teardown SIGKILLs every
process inside the namespaces (`ip netns pids`) and the process groups of the `ray start`
commands it ran, deletes the namespaces and the bridge, and removes the temp dirs, also when
the test failed. Namespaces left by a killed test run (creator PID gone) are removed at the
next start. Needs root and iproute2's `ip` (CI runs as root).

    from tests.e2e.netns_cluster import netns_cluster  # noqa: F401  (fixture)

    def test_x(netns_cluster):
        job = netns_cluster.submit(script_dir, "python", "job.py")      # waits, returns logs
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from streamvl.runtime.cluster import ONE_MACHINE_ENV

PREFIX = "svl"
_STALE = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]{{6}})-(head|worker)$")
GCS_PORT, DASHBOARD_PORT = 6379, 8265
# GCS marks a node dead after ~3 s without health-check answers (Ray's default is ~30 s).
FAST_FAILURE_DETECTION = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                          "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
AGENT_NOT_READY = "No available agent to submit job"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (Debian package iproute2)"
    probe = ip("netns", "list", check=False)
    if probe.returncode != 0:
        return f"`ip netns` unavailable: {probe.stderr.strip()}"
    return None


def netns_pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.stdout.split()] if out.returncode == 0 else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_subnet() -> str:
    """A 10.x.y.0/24 that no interface or route of this machine uses: its first three octets."""
    used = ip("-4", "route", "show", "table", "all", check=False).stdout + ip("-4", "addr").stdout
    nets = [ipaddress.ip_network(m, strict=False) for m in re.findall(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", used)]
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(n) for n in nets):
            return str(candidate.network_address).rsplit(".", 1)[0]
    raise RuntimeError("no free 10.x.y.0/24 for the test cluster")


class NetnsCluster:
    """Two Ray nodes in two network namespaces; see the module docstring. start() / stop()."""

    def __init__(self, *, extra_env: Mapping[str, str] | None = None, cpus: int = 1,
                 object_store_bytes: int = 100 * 1024 * 1024) -> None:
        self.id = uuid.uuid4().hex[:6]
        stem = f"{PREFIX}-{os.getpid()}-{self.id}"
        self.head_ns, self.worker_ns = f"{stem}-head", f"{stem}-worker"
        self.bridge = f"svb{self.id}"
        self.veths = {self.head_ns: f"svh{self.id}", self.worker_ns: f"svw{self.id}"}
        self.subnet = ""
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.extra_env = dict(extra_env or {})
        self.cpus, self.object_store_bytes = cpus, object_store_bytes
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{self.id}-"))  # short: Ray's socket paths
        self._started: list[subprocess.Popen] = []
        self._worker_starts = 0

    # -- addresses
    @property
    def host_ip(self) -> str:
        """The root namespace's address on the bridge: where servers for the nodes bind."""
        return f"{self.subnet}.1"

    @property
    def head_ip(self) -> str:
        return f"{self.subnet}.2"

    @property
    def worker_ip(self) -> str:
        return f"{self.subnet}.3"

    @property
    def gcs_address(self) -> str:
        return f"{self.head_ip}:{GCS_PORT}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head_ip}:{DASHBOARD_PORT}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for Ray commands and clients: this run's token, the venv first on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "NO_PROXY": "*", ONE_MACHINE_ENV: "1"}  # multi-node, even after a test's private Ray set it to 0
        return env | self.extra_env

    # -- lifecycle
    def start(self) -> "NetnsCluster":
        remove_stale_namespaces()
        try:
            self._network()
            self._ray_start(self.head_ns, "--head", f"--port={GCS_PORT}", f"--node-ip-address={self.head_ip}",
                            "--include-dashboard=true", f"--dashboard-host={self.head_ip}",
                            f"--dashboard-port={DASHBOARD_PORT}", temp=self.tmp / "h", env=FAST_FAILURE_DETECTION)
            self.start_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self) -> None:
        """(Re)start the worker host's Ray node, e.g. after kill_node(worker_ns); waits until both are alive.

        """
        self._worker_starts += 1
        self._ray_start(self.worker_ns, f"--address={self.gcs_address}", f"--node-ip-address={self.worker_ip}",
                        temp=self.tmp / f"w{self._worker_starts}")
        self.wait_for_nodes(2)

    def _network(self) -> None:
        self.subnet = _free_subnet()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for ns, addr in ((self.head_ns, self.head_ip), (self.worker_ns, self.worker_ip)):
            ip("netns", "add", ns)
            ip("link", "add", self.veths[ns], "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", self.veths[ns], "master", self.bridge, "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def popen(self, ns: str, argv: Sequence[str], env: Mapping[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """Start argv inside namespace ns, in its own process group; stopped at teardown."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *map(str, argv)], env=dict(env or self.env),
                                start_new_session=True, **kwargs)
        self._started.append(proc)
        return proc

    def _ray_start(self, ns: str, *args: str, temp: Path, env: Mapping[str, str] | None = None) -> None:
        """`ray start` in ns. It gives up after 30 s without the GCS registering its node (hard-coded
        in Ray) or its dashboard answering, which a heavily loaded machine can exceed: then what it
        left in the namespace is killed and it is tried again (3 attempts), in a fresh temp dir."""
        for attempt in range(3):
            try:
                return self._ray_start_once(ns, *args, temp=temp.with_name(f"{temp.name}-{attempt}"), env=env)
            except RuntimeError:
                self.kill_node(ns)
                if attempt == 2:
                    raise

    def _ray_start_once(self, ns: str, *args: str, temp: Path, env: Mapping[str, str] | None = None) -> None:
        temp.mkdir(parents=True)
        log = temp.with_suffix(".log")
        with log.open("w") as out:
            proc = self.popen(ns, [sys.executable, "-m", "ray.scripts.scripts", "start", *args, f"--temp-dir={temp}",
                                   f"--num-cpus={self.cpus}", f"--object-store-memory={self.object_store_bytes}",
                                   "--disable-usage-stats"], env=self.env | dict(env or {}),
                              stdout=out, stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            raise RuntimeError(f"ray start in {ns} {'timed out' if code is None else f'exited {code}'}:\n"
                               f"{log.read_text()[-3000:]}")

    def kill_node(self, ns: str, timeout: float = 30.0) -> list[int]:
        """SIGKILL every process in namespace ns (a host that dies) and wait until none is left
        (a killed process lingers until reaped); returns the PIDs killed."""
        killed: list[int] = []
        deadline = time.monotonic() + timeout
        while pids := netns_pids(ns):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids} still in {ns} {timeout:.0f}s after SIGKILL")
            for pid in pids:
                _kill(pid)
            killed += [p for p in pids if p not in killed]
            time.sleep(0.1)
        return killed

    def stop(self) -> None:
        """Kill, delete, remove: everything start() made, whatever state it is in."""
        problems = []
        for proc in self._started:  # the process groups of what we ran and still runs (its leader alive:
            if proc.poll() is None:  # the group id cannot have been reused by another process)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append(f"pid {proc.pid} did not exit")
        for ns in (self.head_ns, self.worker_ns):
            problems += _remove_namespace(ns)
        for link in (self.bridge, *self.veths.values()):
            if ip("link", "show", link, check=False).returncode == 0:
                ip("link", "del", link, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        left = [ns for ns in (self.head_ns, self.worker_ns) if ns in ip("netns", "list", check=False).stdout.split()]
        left += [link for link in (self.bridge, *self.veths.values()) if ip("link", "show", link, check=False).returncode == 0]
        left += [str(self.tmp)] if self.tmp.exists() else []
        if left:
            problems.append(f"left behind: {left}")
        if problems:
            raise RuntimeError("netns cluster teardown: " + "; ".join(problems))

    # -- using it
    def ray(self, *args: str, timeout: float = 300, check: bool = True, tries: int = 12) -> subprocess.CompletedProcess:
        """The Ray CLI from the root namespace with this cluster's token; a job agent that is not
        ready yet ("try again later") is retried a bounded number of times."""
        for _ in range(tries):
            proc = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *map(str, args)], env=self.env,
                                  capture_output=True, text=True, timeout=timeout)
            if AGENT_NOT_READY not in proc.stderr + proc.stdout:
                break
            time.sleep(3)
        if check and proc.returncode != 0:
            raise AssertionError(f"ray {' '.join(map(str, args))} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
        return proc

    def nodes(self) -> list[dict]:
        """The cluster's nodes as the head's state API lists them (node_ip, state, node_id, ...)."""
        return self.api("/api/v0/nodes?limit=100")["data"]["result"]["result"]

    def alive_ips(self) -> set[str]:
        return {n["node_ip"] for n in self.nodes() if n["state"] == "ALIVE"}

    def wait_for_nodes(self, count: int, timeout: float = 120.0) -> set[str]:
        deadline, seen = time.monotonic() + timeout, set()
        while time.monotonic() < deadline:
            try:
                seen = self.alive_ips()
            except OSError:  # the dashboard is still starting (connection refused, HTTP 5xx)
                seen = set()
            if len(seen) >= count:
                return seen
            time.sleep(1.0)
        raise RuntimeError(f"only {sorted(seen)} of {count} Ray nodes alive after {timeout:.0f}s")

    def submit(self, working_dir: Path, *entrypoint: str, wait: bool = True, job_id: str | None = None,
               env_vars: Mapping[str, str] | None = None) -> str:
        """`ray job submit` from the root namespace; env_vars: the job's runtime_env variables (its
        driver's and its workers' on every node). wait: block until it ends and return its output
        (the job's logs; AssertionError unless it succeeded); otherwise return the job id at once."""
        job_id = job_id or f"job-{uuid.uuid4().hex[:8]}"
        flags = [] if wait else ["--no-wait"]
        if env_vars:
            flags += ["--runtime-env-json", json.dumps({"env_vars": dict(env_vars)})]
        out = self.ray("job", "submit", "--address", self.dashboard_url, "--submission-id", job_id,
                       "--working-dir", working_dir, *flags, "--", *entrypoint, timeout=900).stdout
        if wait:
            assert self.job_status(job_id) == "SUCCEEDED", out[-4000:]
            return out
        return job_id

    def api(self, path: str) -> Any:
        """GET a JSON document from the head's dashboard HTTP API (with this run's token)."""
        request = urllib.request.Request(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        with opener.open(request, timeout=30) as response:
            return json.load(response)

    def job_status(self, job_id: str) -> str:
        return self.api(f"/api/jobs/{job_id}")["status"]

    def job_logs(self, job_id: str) -> str:
        return self.api(f"/api/jobs/{job_id}/logs")["logs"]

    def wait_for_job(self, job_id: str, timeout: float = 600.0) -> str:
        """Block until the job ends; its final status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.job_status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(2.0)
        raise AssertionError(f"job {job_id} still {status} after {timeout:.0f}s")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_namespace(ns: str) -> list[str]:
    """SIGKILL what runs in ns, wait for it to be gone, delete ns; problems as text."""
    if ns not in ip("netns", "list", check=False).stdout.split():
        return []
    deadline = time.monotonic() + 30
    while (pids := netns_pids(ns)) and time.monotonic() < deadline:
        for pid in pids:
            _kill(pid)
        time.sleep(0.1)
    problems = [f"processes {pids} still in {ns}"] if pids else []
    out = ip("netns", "del", ns, check=False)
    if out.returncode != 0:
        problems.append(f"ip netns del {ns}: {out.stderr.strip()}")
    return problems


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces (and bridges) this module made in test runs whose process is gone."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        found = _STALE.match(name)
        if found and not _pid_alive(int(found.group(1))):
            _remove_namespace(name)
            bridge = f"svb{found.group(2)}"
            if ip("link", "show", bridge, check=False).returncode == 0:
                ip("link", "del", bridge, check=False)
            for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}-{found.group(2)}-*"):
                shutil.rmtree(folder, ignore_errors=True)
            removed.append(name)
    return removed


@pytest.fixture(scope="module")
def netns_cluster() -> Iterator[NetnsCluster]:
    """A started two-namespace Ray cluster for the module's tests; torn down afterwards.

    Skips (with the reason) only where namespaces cannot be made: not root, no `ip netns`."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = NetnsCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
