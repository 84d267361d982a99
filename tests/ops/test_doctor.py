"""`deepext doctor`: a healthy platform passes (on SQLite and PostgreSQL), each broken part is named
with its fix, and in air-gapped mode no provider is called at all."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deepext.config import Settings
from deepext.db import Database
from deepext.ops.doctor import CheckResult, any_failed, check_gpus, check_providers, check_ray, run_checks
from deepext.platform import Platform
from deepext.serve.providers.registry import ProviderCreate, create_provider
from tests.helpers import free_port as closed_port
from tests.ops import run_cli


class _CountingServer(ThreadingHTTPServer):
    """An HTTP server that counts every connection it accepts, answered or not."""

    connections = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        self.connections += 1
        return super().get_request()


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"object": "list", "data": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def counting_server() -> Iterator[_CountingServer]:
    server = _CountingServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


def test_a_healthy_platform_passes_and_leaves_no_probe_behind(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = by_name(run_checks(platform.settings))
    assert [name for name in results] == ["database", "ray", "gpus", "artifact store", "vector store", "providers"]
    assert results["database"].status == "ok" and "(the newest)" in results["database"].detail
    assert results["artifact store"].status == "ok"
    assert results["vector store"].status == "ok"
    assert results["providers"].status == "skip"
    # No ray_address: doctor describes the local Ray `deepext up` would start, and starts none.
    assert results["ray"].status == "skip" and "`deepext up` starts a local Ray" in results["ray"].detail
    assert results["gpus"].status in ("ok", "warn")
    assert not any_failed(list(results.values()))
    artifacts = Path(platform.settings.resolved_artifact_uri)
    assert [p for p in artifacts.rglob("*") if p.is_file()] == []
    assert [p.name for p in Path(platform.settings.resolved_vector_store_uri).iterdir()] == []

    code, output = run_cli(platform.settings, monkeypatch, "doctor", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["ok"] is True and {c["name"] for c in report["checks"]} == set(results)


def test_an_unmigrated_database_fails_naming_its_revision_and_the_fix(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=empty_database_url)
    db = Database(settings.resolved_database_url)
    db.upgrade("0004")
    head = db.head_revision()
    db.dispose()
    results = by_name(run_checks(settings))
    database = results["database"]
    assert database.status == "fail"
    assert f"at revision 0004, newest is {head}" in database.detail and database.fix == "deepext db upgrade"
    assert results["providers"].status == "skip" and "database check failed" in results["providers"].detail

    code, output = run_cli(settings, monkeypatch, "doctor")
    assert code == 1
    assert "database fail" in output.replace("\t", " ") and "1 failed, " in output


def test_a_missing_sqlite_database_is_reported_not_created(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'absent.db'}")
    database = by_name(run_checks(settings))["database"]
    assert database.status == "fail" and f"no SQLite database at {tmp_path / 'absent.db'}" in database.detail
    assert not (tmp_path / "absent.db").exists()


def test_an_artifact_store_that_cannot_be_written_fails_naming_it(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file where the store's folder should be: unwritable even for root (chmod would not stop root).
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    broken = platform.settings.model_copy(update={"artifact_uri": str(blocker / "artifacts")})
    results = by_name(run_checks(broken))
    assert results["artifact store"].status == "fail"
    assert str(blocker / "artifacts") in results["artifact store"].detail
    assert "DEEPEXT_ARTIFACT_URI" in results["artifact store"].fix
    assert results["database"].status == "ok"

    code, output = run_cli(broken, monkeypatch, "doctor")
    assert code == 1 and "artifact store fail" in output.replace("\t", " ")


def test_air_gapped_doctor_calls_no_provider(platform: Platform, project: str) -> None:
    with counting_server() as server:
        base_url = f"http://127.0.0.1:{server.server_port}/v1"
        spec = ProviderCreate(name="local", kind="openai", base_url=base_url)
        create_provider(platform, project=project, spec=spec, actor="test")

        gapped = platform.settings.model_copy(update={"air_gapped": True})
        providers = by_name(run_checks(gapped))["providers"]
        assert providers.status == "skip" and providers.detail.startswith("skipped: air-gapped")
        assert server.connections == 0

        # The control: not air-gapped, the same doctor does reach the provider.
        (called,) = check_providers(platform.settings, database_ok=True)
        assert called.name == "provider demo/local" and called.status == "ok"
        assert f"GET {base_url}/models: HTTP 200" in called.detail
        assert server.connections >= 1


def test_an_unreachable_provider_fails_naming_it(platform: Platform, project: str) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    create_provider(
        platform, project=project, spec=ProviderCreate(name="gone", kind="openai", base_url=base_url), actor="test"
    )
    (result,) = check_providers(platform.settings, database_ok=True, timeout_s=2)
    assert result.status == "fail" and result.name == "provider demo/gone" and base_url in result.detail


def test_weaviate_is_checked_at_its_ready_endpoint(tmp_path: Path) -> None:
    from deepext.ops.doctor import check_vector_store

    with counting_server() as server:
        ready = Settings(home=tmp_path, vector_store="weaviate", weaviate_url=f"http://127.0.0.1:{server.server_port}")
        assert check_vector_store(ready).status == "ok"
        assert server.connections == 1
    down = Settings(home=tmp_path, vector_store="weaviate", weaviate_url=f"http://127.0.0.1:{closed_port()}")
    result = check_vector_store(down, timeout_s=2)
    assert result.status == "fail" and "/v1/.well-known/ready" in result.detail


def test_an_unreachable_ray_address_fails_fast_naming_it(tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    started = time.perf_counter()
    result = check_ray(Settings(home=tmp_path, ray_address=address))
    assert result.status == "fail" and f"nothing answers at {address}" in result.detail
    assert time.perf_counter() - started < 10  # ray.init itself would retry for minutes


@pytest.mark.slow
def test_a_running_ray_cluster_is_reported_with_its_resources(ray_session: str, tmp_path: Path) -> None:
    import ray

    address = ray.get_runtime_context().gcs_address
    result = check_ray(Settings(home=tmp_path, ray_address=address))
    assert result.status == "ok", result.detail
    assert result.detail == f"{address}: 1 node(s), 2 CPUs, 0 GPUs"


@pytest.mark.slow
def test_start_ray_tries_a_local_ray_and_stops_it(tmp_path: Path) -> None:
    result = check_ray(Settings(home=tmp_path, ray_num_cpus=1), start=True)
    assert result.status == "ok", result.detail
    assert result.detail == "a local Ray started for this check (and stopped): 1 node(s), 1 CPUs, 0 GPUs"


def test_gpus_torch_cannot_use_are_a_warning_naming_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine's torch uses a GPU")
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf 'NVIDIA H200\\nNVIDIA H200\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    result = check_gpus()
    assert result.status == "warn"
    assert result.detail.startswith("nvidia-smi lists 2 x NVIDIA H200, but torch cannot use them")
    assert "DEEPEXT_EXTRAS=cuda" in result.fix
