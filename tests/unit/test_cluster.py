"""How streamvl picks its Ray (streamvl.runtime.cluster), without starting one: the address asked
for, addresses that cannot work, Ray's version-mismatch text, errors carried back from actors."""

from __future__ import annotations

import socket

import pytest

from streamvl.config import load_config
from streamvl.errors import ClusterError, ModelLoadError, PluginError

ray = pytest.importorskip("ray")
cluster = pytest.importorskip("streamvl.runtime.cluster")


def test_address_is_the_option_else_ray_address_else_private(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.requested(None) == "local"
    monkeypatch.setenv("RAY_ADDRESS", " ")
    assert cluster.requested(None) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert cluster.requested(None) == "auto"
    assert cluster.requested("10.0.0.5:6379") == "10.0.0.5:6379"


def test_config_carries_the_address(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('ray_address = "auto"\n')
    assert load_config(cfg).ray_address == "auto"
    assert load_config(cfg, {"ray_address": "127.0.0.1:6380"}).ray_address == "127.0.0.1:6380"
    assert load_config().ray_address is None


def test_unusable_addresses_fail_before_ray_starts(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        cluster.connect(f"127.0.0.1:{port}")
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at ray://127.0.0.1:{port}"):
        cluster.connect(f"ray://127.0.0.1:{port}")
    with pytest.raises(ClusterError, match="is not HOST:PORT"):
        cluster.connect("cluster-without-port")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where `ray start` would record its cluster: nothing there
    assert cluster.recorded_cluster() is None
    with pytest.raises(ClusterError, match="no cluster started with `ray start`"):
        cluster.connect("auto")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")  # a record left by a dead cluster
    assert cluster.recorded_cluster() == f"127.0.0.1:{port}"
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        cluster.connect("auto")
    assert not ray.is_initialized()


def test_version_mismatch_names_both_versions(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    from ray._private.utils import check_version_info, compute_version_info

    with pytest.raises(RuntimeError) as raised:  # Ray's own check and text
        check_version_info({"ray_version": "2.0.0", "python_version": "3.9.18"}, "127.0.0.1:6379")
    ours_ray, ours_py = compute_version_info()
    error = cluster.cluster_error(raised.value, "127.0.0.1:6379")
    assert str(error) == (f"ClusterError: the Ray cluster at 127.0.0.1:6379 runs Ray 2.0.0 on Python 3.9.18, but this "
                          f"streamvl runs Ray {ours_ray} on Python {ours_py}; join a cluster started from this "
                          "environment, or leave --ray-address and RAY_ADDRESS unset for a private local Ray")
    other = cluster.cluster_error(ConnectionError("GCS not ready\nmore detail"), "10.0.0.5:6379")
    assert str(other).startswith("ClusterError: cannot join the Ray cluster at 10.0.0.5:6379: GCS not ready")
    assert "RAY_AUTH_MODE=token" in str(other) and "\n" not in str(other)


def test_typed_error_behind_ray_errors():
    cause = ModelLoadError("weights file /w.safetensors not found")
    task_error = ray.exceptions.RayTaskError("f", "Traceback ...\nlong", cause)
    assert cluster.typed_error(task_error) is cause
    died = ray.exceptions.RayActorError(
        error_msg="The actor died because of an error raised in its creation task, ray::EncodeActor.__init__() (pid=1)\n"
                  '  File "x.py", line 3, in __init__\n'
                  "streamvl.errors.PluginError: PluginError: no adapter 'nope'; installed: ['meanpool'] plugin=nope",
        actor_init_failed=True)
    typed = cluster.typed_error(died)
    assert type(typed) is PluginError and str(typed) == "PluginError: no adapter 'nope'; installed: ['meanpool'] plugin=nope"
    assert cluster.typed_error(ray.exceptions.RayActorError(error_msg="node died", actor_init_failed=False)) is None
    assert cluster.typed_error(RuntimeError("streamvl.errors.Nonexistent: x")) is None
