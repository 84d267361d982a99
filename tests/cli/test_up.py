"""`deepext up` as a user runs it: a real process that starts Ray, the job scheduler and the REST API
on Ray Serve, prints where they listen, answers a client, and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deepext.client import DeepextClient
from tests.helpers import free_port


@pytest.mark.slow
def test_up_starts_prints_addresses_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEEPEXT_HOME": str(tmp_path / "home"),
        "DEEPEXT_RAY_NUM_CPUS": "1",
        "DEEPEXT_RAY_DASHBOARD_PORT": "0",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "DEEPEXT_API_PORT": str(free_port()),
        "DEEPEXT_UI_PORT": str(free_port()),
    }
    admin = subprocess.run(
        [sys.executable, "-m", "deepext.cli.main", "users", "create-admin", "root", "--password-stdin"],
        env=env,
        input="a long admin passphrase\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert admin.returncode == 0, admin.stderr
    assert "created admin root" in admin.stdout
    process = subprocess.Popen(
        [sys.executable, "-m", "deepext.cli.main", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "deepext is up" in line:
            break
    output = "".join(lines)
    assert "deepext is up" in output, output
    assert f"sqlite:///{tmp_path / 'home' / 'deepext.db'}" in output
    assert "ray            local Ray at" in output
    assert "job scheduler  Ray Jobs at http://" in output
    api_url = next(line.split()[2] for line in lines if line.startswith("rest api"))
    assert api_url == f"http://127.0.0.1:{env['DEEPEXT_API_PORT']}/api/v1"
    with DeepextClient(api_url) as client:
        assert client.login("root", "a long admin passphrase").user.admin
        assert "demo" in [p.name for p in client.projects()]
        assert [d.name for d in client.datasets("demo")] == ["capitals"]
    assert (tmp_path / "home" / "deepext.db").exists()
    ui_url = next(line.split()[2] for line in lines if line.startswith("web app"))
    assert ui_url == f"http://127.0.0.1:{env['DEEPEXT_UI_PORT']}"
    assert httpx.get(ui_url, timeout=30).status_code == 200

    stopped_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "deepext stopped." in rest
    assert time.monotonic() - stopped_at < 30
