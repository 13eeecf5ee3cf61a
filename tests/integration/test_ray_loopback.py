"""The private Ray streamvl starts stays on 127.0.0.1: every process it starts listens on loopback only.

Ray turns `_node_ip_address="127.0.0.1"` into the machine's outward address unless it runs in its
one-machine mode; `runtime.cluster.connect()` turns that mode on. Run in a child process so the
switch (read at import) starts unset, as in a user's shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streamvl.runtime.cluster import ONE_MACHINE_ENV

pytestmark = pytest.mark.integration

CHILD = r"""
import json, psutil, ray
from streamvl.runtime.cluster import connect
connect()

@ray.remote
def where():
    return ray.util.get_node_ip_address()

worker = ray.get(where.remote())
listening = set()
for proc in psutil.Process().children(recursive=True):
    try:
        listening |= {c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        pass
print(json.dumps({"node": ray.nodes()[0]["NodeManagerAddress"], "worker": worker, "listening": sorted(listening)}))
ray.shutdown()
"""


def test_private_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", ONE_MACHINE_ENV)}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["node"] == "127.0.0.1" and seen["worker"] == "127.0.0.1"
    assert seen["listening"], "no listening socket found: the check would prove nothing"
    assert set(seen["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1"}, seen["listening"]
