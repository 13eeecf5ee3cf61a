"""End to end: a real `ray start --head`, `ray job submit` of jobs/index.py, then CLI search."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from streamvl.runtime.cluster import ONE_MACHINE_ENV

from tests.videos import make_video

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AGENT_NOT_READY = "No available agent to submit job"


def run(*args, env, timeout=600, check=True, tries=60):
    """Run a command; a job submission Ray answers with "try again later" (its job agent still
    starting after `ray start`) is retried, a bounded number of times."""
    for _ in range(tries):
        proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if AGENT_NOT_READY not in proc.stderr:
            break
        time.sleep(5)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def cluster():
    """A local Ray head on loopback with the job server; stopped afterwards."""
    # Ray >= 2.5x enables token auth for new clusters: server and client share ~/.ray/auth_token.
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                        ONE_MACHINE_ENV: "0"}  # Ray on 127.0.0.1 only (it takes the outward address for "127.0.0.1" otherwise)
    env.pop("RAY_ADDRESS", None)
    gcs, dash, agent = free_port(), free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="svlray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        run(BIN / "ray", "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",  # not Ray's fixed 52365: another Ray on the machine may hold it
            f"--temp-dir={temp}", "--disable-usage-stats", env=env)
        yield env, f"http://127.0.0.1:{dash}"
    finally:
        stop_cluster(temp)


def stop_cluster(temp: str) -> None:
    """Kill this cluster's processes (those naming its temp dir, and their children) by PID: never
    `ray stop`, which would stop every Ray on the machine."""
    import psutil

    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in arg for arg in proc.info["cmdline"] or ()):
                procs += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


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
    assert hits and set(hits[0]) == {"stream_id", "uri", "start", "end", "score", "peak"}
    assert hits[0]["uri"] == str(video) and hits[0]["stream_id"] == streams[0]["stream_id"]


def test_job_submit_trains_indexes_with_the_checkpoint_and_rescores(cluster, tmp_path):
    """jobs/train.py -> checkpoint; jobs/index.py with it as an adapter option; jobs/rescore.py; CLI search."""
    env, address = cluster
    ckpt, db, cache = tmp_path / "ckpt" / "prompt.safetensors", tmp_path / "db", tmp_path / "cache"

    def submit(*args):
        out = run(BIN / "ray", "job", "submit", "--address", address, "--working-dir", REPO, "--", "python", *args, env=env)
        assert "succeeded" in out.stdout.lower(), out.stdout[-3000:]
        return out.stdout

    log = submit("jobs/train.py", "--adapter", "prompt", "--data", "shapes:closed_set", "--model", "streamvl-tiny@random:0",
                 "--train-per-class", "1", "--test-per-class", "1", "--steps", "2", "--batch-size", "4", "--threads", "1",
                 "--cache", cache, "--out", ckpt)
    assert "trainable parameters" in log and "backbone weights unchanged: True" in log and ckpt.is_file()
    video = make_video(tmp_path / "clip.mp4", seconds=6.0, fps=25, pattern="noise", size=(128, 96)).path
    submit("jobs/index.py", video, "--db", db, "--model", "streamvl-tiny@random:0", "--adapter", "meanpool", "--adapter", "prompt",
           "--adapter-option", f"prompt.checkpoint={ckpt}")
    before = json.loads(run(BIN / "streamvl", "search", "a noisy clip", "--db", db, "--adapter", "prompt", "--checkpoint", ckpt,
                            "--json", env=env).stdout)
    assert before
    assert "no decoding" in submit("jobs/rescore.py", "--db", db, "--adapter", "prompt", "--checkpoint", ckpt)
    after = json.loads(run(BIN / "streamvl", "search", "a noisy clip", "--db", db, "--adapter", "prompt", "--checkpoint", ckpt,
                           "--json", env=env).stdout)
    # same checkpoint, same frames: re-scoring from the frames table reproduces the indexed scores
    assert [(h["start"], round(h["score"], 4)) for h in after] == [(h["start"], round(h["score"], 4)) for h in before]


def wait_for(check, timeout: float = 180.0, every: float = 1.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def test_serve_index_job_with_streams_added_and_removed_while_it_runs(cluster, tmp_path):
    """`ray job submit` of jobs/serve_index.py; the CLI adds a file and a live RTSP camera to it,
    searches while it indexes, sees lag, removes the camera, and the job stops cleanly."""
    from tests.live_servers import RtspServer, have_rtsp_tools

    if not have_rtsp_tools():
        pytest.skip("needs Debian's rtsp-server-perl and ffmpeg (see .ci/run)")
    env, address = cluster
    video = make_video(tmp_path / "clip.mp4", seconds=6.0, fps=25, pattern="noise", size=(128, 96)).path
    camera = make_video(tmp_path / "cam.mp4", seconds=6.0, fps=25, size=(160, 120), gop=25).path
    rtsp = RtspServer(tmp_path).start()
    rtsp.push(camera, "cam1")
    db = tmp_path / "db"
    job = f"serve-{os.getpid()}"
    try:
        run(BIN / "ray", "job", "submit", "--no-wait", "--submission-id", job, "--address", address,
            "--working-dir", REPO, "--", "python", "jobs/serve_index.py", "--db", db, "--model", "streamvl-tiny@random:0",
            "--fps", "2", "--window", "4", "--stride", "2", "--poll", "0.5", env=env)
        run(BIN / "streamvl", "streams", "add", video, "--db", db, "--id", "file1", env=env)
        run(BIN / "streamvl", "streams", "add", rtsp.url("cam1"), "--db", db, "--id", "cam1", "--transport", "udp", env=env)

        def rows():
            return {r["stream_id"]: r for r in json.loads(run(BIN / "streamvl", "streams", "--db", db, "--json", env=env).stdout)}

        got = wait_for(lambda: (r := rows()) and r.get("file1", {}).get("status") == "done"
                       and (r.get("cam1", {}).get("frames_indexed") or 0) >= 6 and r)
        assert got["file1"]["frames_indexed"] == 12
        cam = got["cam1"]
        assert cam["status"] == "running" and cam["live"] and cam["lag_now_s"] is not None and cam["lag_s"] is not None
        text = run(BIN / "streamvl", "streams", "--db", db, env=env).stdout
        assert "lag=" in text and "cam1" in text
        hits = json.loads(run(BIN / "streamvl", "search", "a camera", "--db", db, "--stream", "cam1", "--json",
                              env=env).stdout)
        assert hits and {h["stream_id"] for h in hits} == {"cam1"}  # searchable while indexing goes on

        run(BIN / "streamvl", "streams", "remove", "cam1", "--db", db, env=env)
        wait_for(lambda: rows()["cam1"]["status"] == "removed", timeout=60)
        status = run(BIN / "ray", "job", "status", "--address", address, job, env=env).stdout
        assert "RUNNING" in status  # removing one stream did not stop the job
    finally:
        run(BIN / "ray", "job", "stop", "--address", address, job, env=env, check=False)
        rtsp.stop()
    logs = run(BIN / "ray", "job", "logs", "--address", address, job, env=env, check=False).stdout
    assert "RANDOM WEIGHTS" in logs
