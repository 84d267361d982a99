"""The REST API as a Ray Serve application: a FastAPI ingress deployment whose replicas each open
the platform's stores. `start_api` runs it on the connected Ray; `build_app` is the builder a Serve
config file names (`import_path: deepext.serve.ingress:build_app`)."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deepext.config import Settings

APP_NAME = "deepext-api"


# Serve writes an access-log line per request by default; the audit log and `X-Request-ID` cover
# what matters here, and the lines cost a measurable share of each request (benchmarks/api_load.py).
QUIET_LOGS = {"enable_access_log": False, "log_level": "WARNING"}


def serve_logs(log_format: str) -> dict[str, Any]:
    """Serve's own log settings: quiet, and in JSON when the platform logs JSON."""
    return {**QUIET_LOGS, "encoding": "JSON"} if log_format == "json" else QUIET_LOGS


@serve.deployment(name="api", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200, logging_config=QUIET_LOGS)
@serve.ingress()
class ApiIngress:
    """One API replica. It holds no CPU reservation, so training jobs keep the cluster's CPUs.
    Its logs follow `log_format` and carry each request's id and user; it exports request metrics."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from deepext.logs import configure_logging
        from deepext.platform import Platform

        resolved = Settings(**settings)
        configure_logging(resolved.log_format)
        self.platform = Platform.open(resolved, migrate=False)

    def __serve_build_asgi_app__(self) -> Any:
        from deepext.serve.app import create_app

        return create_app(self.platform, export_metrics=True)


def build_app(args: dict[str, Any]) -> Application:
    """`args` are platform settings (`database_url`, `home`, ...) plus `replicas` (default 1)."""
    settings = dict(args)
    replicas = int(settings.pop("replicas", 1))
    resolved = Settings(**settings)
    deployment = ApiIngress.options(  # type: ignore[attr-defined]
        num_replicas=replicas, logging_config=serve_logs(resolved.log_format)
    )
    return deployment.bind(resolved.model_dump(mode="json"))


def start_api(settings: Settings, *, replicas: int = 1) -> str:
    """Run the API on the connected Ray (schema already migrated); returns its base URL."""
    serve.start(
        http_options={"host": settings.api_host, "port": settings.api_port},
        logging_config=serve_logs(settings.log_format),
    )
    app = build_app({**settings.model_dump(mode="json"), "replicas": replicas})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{settings.api_host}:{settings.api_port}/api/v1"


def stop_api() -> None:
    """Stop the API and Serve itself (its HTTP proxy), so a later start may use another port."""
    serve.shutdown()
