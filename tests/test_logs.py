"""Structured logs (`deepext.logs`): one JSON object per line with the request's or job's context,
exceptions inside the line, and the API binding each request's id, user and project."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi.testclient import TestClient

from deepext import logs
from deepext.config import Settings
from deepext.platform import Platform
from deepext.serve.app import create_app
from deepext.serve.deps import Access, allow
from tests.serve.conftest import seed_users


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger under `deepext` writing JSON lines into a buffer (the root logger is left alone)."""
    buffer = io.StringIO()
    handler = logs.make_handler("json", stream=buffer)
    logger = logging.getLogger("deepext.tests")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def lines_of(buffer: io.StringIO) -> list[dict[str, Any]]:
    text = buffer.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_json_line_has_the_fields_and_the_bound_context(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured
    logger.info("plain %s", "line")
    with logs.bind({"request_id": "req-1", "user": "ada"}), logs.bind(lambda: {"project": "p"}):
        logger.warning("inside")
    logger.info("after")

    plain, inside, after = lines_of(buffer)
    assert plain["message"] == "plain line" and plain["level"] == "INFO" and plain["logger"] == "deepext.tests"
    assert plain["time"].endswith("+00:00") and "T" in plain["time"]
    assert not {"request_id", "user", "project", "job_id", "exception"} & plain.keys()
    assert (inside["request_id"], inside["user"], inside["project"], inside["level"]) == (
        "req-1",
        "ada",
        "p",
        "WARNING",
    )
    assert "request_id" not in after  # the binding ends with its block


def test_an_exception_is_one_line_with_its_traceback_as_a_field(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured
    try:
        raise ValueError("bad row 7\nsecond line of the message")
    except ValueError:
        logger.exception("could not ingest")

    assert buffer.getvalue().count("\n") == 1
    (line,) = lines_of(buffer)
    assert line["message"] == "could not ingest" and line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last)")
    assert "ValueError: bad row 7\nsecond line of the message" in line["exception"]


def test_configure_logging_replaces_the_root_handlers_and_adds_process_fields() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    deepext_level = logging.getLogger("deepext").level
    buffer = io.StringIO()
    try:
        logs.configure_logging("json", fields={"job_id": 42}, stream=buffer)
        handler = logs.configure_logging("json", fields={"job_id": 42}, stream=buffer)  # again: not doubled
        assert root.handlers == [handler]
        root.addHandler(logging.StreamHandler(io.StringIO()))  # what ray.init(logging_config=...) adds
        root.setLevel(logging.INFO)
        logs.reclaim_root_logger()
        assert root.handlers == [handler] and root.level == logging.WARNING

        logging.getLogger("deepext.job").info("step done")
        logging.getLogger("httpx").info("a library's chatter stays out")
        logging.getLogger("httpx").warning("a library's warning")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.getLogger("deepext").setLevel(deepext_level)
    first, second = lines_of(buffer)
    assert (first["message"], first["job_id"], first["logger"]) == ("step done", 42, "deepext.job")
    assert (second["message"], second["job_id"]) == ("a library's warning", 42)


def test_the_text_format_appends_the_context_and_unknown_formats_are_refused() -> None:
    buffer = io.StringIO()
    logger = logging.getLogger("deepext.tests.text")
    logger.addHandler(handler := logs.make_handler("text", fields={"job_id": 7}, stream=buffer))
    logger.propagate = False
    try:
        with logs.bind({"request_id": "r-9"}):
            logger.warning("hello")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert buffer.getvalue().rstrip().endswith("WARNING deepext.tests.text: hello [request_id=r-9 job_id=7]")
    with pytest.raises(ValueError, match="one of text, json"):
        logs.make_handler("xml")  # type: ignore[arg-type]
    assert logs.ray_logging_config("text") is None
    assert logs.ray_logging_config("json").encoding == "JSON"


def test_the_api_logs_carry_the_request_id_user_and_project(
    tmp_path: Path, captured: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, buffer = captured
    api_logger = logging.getLogger("deepext.api")  # where the API's error handler logs
    api_logger.addHandler(logger.handlers[0])
    api_logger.propagate = False
    platform = Platform.open(Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'm.db'}"))
    try:
        tokens = seed_users(platform)
        app = create_app(platform)

        @app.get("/api/v1/projects/{project}/log-probe")
        def probe(access: Annotated[Access, allow("datasets", "read")]) -> None:
            logger.info("probing")
            raise RuntimeError("the probe fails\non two lines")

        with TestClient(app, raise_server_exceptions=False) as client:
            answer = client.get(
                "/api/v1/projects/p/log-probe",
                headers={"Authorization": f"Bearer {tokens['viewer']}", "X-Request-ID": "req-probe-1"},
            )
            anonymous = client.get("/api/v1/projects/p/log-probe", headers={"X-Request-ID": "req-probe-2"})
    finally:
        api_logger.removeHandler(logger.handlers[0])
        api_logger.propagate = True
        platform.close()

    assert (answer.status_code, anonymous.status_code) == (500, 401)
    probing, failed = lines_of(buffer)
    assert (probing["message"], probing["request_id"], probing["user"], probing["project"]) == (
        "probing",
        "req-probe-1",
        "viewer",
        "p",
    )
    assert (failed["logger"], failed["request_id"], failed["user"], failed["project"]) == (
        "deepext.api",
        "req-probe-1",
        "viewer",
        "p",
    )
    assert "RuntimeError: the probe fails\non two lines" in failed["exception"]


def test_configure_logging_survives_ray_serve_llm_taking_the_root_logger() -> None:
    """Ray Serve LLM's package replaces the root handlers when first imported (the API's routes
    import it): in a process using Ray Serve, configure_logging must already have let it do so."""
    script = """
import logging
import ray.serve
from deepext.logs import configure_logging
handler = configure_logging("json")
import ray.llm._internal.serve
assert logging.getLogger().handlers == [handler], logging.getLogger().handlers
logging.getLogger("deepext.x").info("kept")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1])["message"] == "kept"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_connect_ray_hands_json_logging_to_ray_and_keeps_this_process_handler(
    log_format: logs.LogFormat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from deepext.cluster import connect_ray

    passed: dict[str, Any] = {}

    def fake_init(**kwargs: Any) -> Any:
        passed.update(kwargs)
        if kwargs.get("logging_config") is not None:  # Ray configures the driver's root logger too
            logging.getLogger().addHandler(logging.StreamHandler(io.StringIO()))
            logging.getLogger().setLevel(logging.INFO)
        return type("Context", (), {"dashboard_url": None, "address_info": {"gcs_address": "head:6379"}})()

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        handler = logs.configure_logging(log_format, stream=io.StringIO())
        info = connect_ray(Settings(home=tmp_path, ray_address="head:6379", log_format=log_format))
        assert root.handlers == [handler] and root.level == logging.WARNING
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert info.address == "head:6379" and passed["address"] == "head:6379"
    if log_format == "json":
        assert passed["logging_config"].encoding == "JSON"
    else:
        assert "logging_config" not in passed


def test_the_job_entry_point_logs_json_lines_with_its_job_id(tmp_path: Path) -> None:
    """A job the entry point may not start (still queued) is logged, as JSON with the job's id."""
    import os

    from deepext.train.jobs import create_job

    database_url = f"sqlite:///{tmp_path / 'm.db'}"
    platform = Platform.open(Settings(home=tmp_path / "home", database_url=database_url))
    try:
        seed_users(platform)
        job = create_job(platform, project="p", kind="custom", config={}, resources={}, actor="admin")
    finally:
        platform.close()
    env = {
        **os.environ,
        "DEEPEXT_HOME": str(tmp_path / "home"),
        "DEEPEXT_DATABASE_URL": database_url,
        "DEEPEXT_LOG_FORMAT": "json",
    }
    env.pop("DEEPEXT_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "deepext.train.entrypoint", str(job.id)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert (line["logger"], line["level"], line["job_id"]) == ("deepext.job", "WARNING", job.id)
    assert line["message"].startswith(f"deepext job {job.id}: not starting") and "queued" in line["message"]
