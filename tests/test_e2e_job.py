"""End to end: a real `ray start --head`, `ray job submit` of jobs/index.py, then CLI search."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.videos import make_video

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, env, timeout=600, check=True):
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def cluster():
    """A local Ray head on loopback with the job server; stopped afterwards."""
    # Ray >= 2.5x enables token auth for new clusters: server and client share ~/.ray/auth_token.
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    run(BIN / "ray", "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats", env=env)
    try:
        yield env, f"http://127.0.0.1:{dash}"
    finally:
        run(BIN / "ray", "stop", "--force", env=env, check=False)


def test_job_submit_indexes_and_cli_searches(cluster, tmp_path):
    env, address = cluster
    video = make_video(tmp_path / "clip.mp4", seconds=10.0, fps=25, pattern="noise", size=(128, 96)).path
    db = tmp_path / "db"
    submit = run(BIN / "ray", "job", "submit", "--address", address, "--working-dir", REPO, "--",
                 "python", "jobs/index.py", video, "--db", db, "--model", "streamvl-tiny@random:0", env=env)
    assert "succeeded" in submit.stdout.lower(), submit.stdout[-3000:]
    assert "RANDOM WEIGHTS" in submit.stdout + submit.stderr  # loud, even through job logs

    streams = json.loads(run(BIN / "streamvl", "streams", "--db", db, "--json", env=env).stdout)
    assert [(s["status"], s["frames_indexed"]) for s in streams] == [("done", 10)]
    hits = json.loads(run(BIN / "streamvl", "search", "a noisy clip", "--db", db, "--k", "2", "--json", env=env).stdout)
    assert hits and set(hits[0]) == {"stream_id", "uri", "start", "end", "score"}
    assert hits[0]["uri"] == str(video) and hits[0]["stream_id"] == streams[0]["stream_id"]
