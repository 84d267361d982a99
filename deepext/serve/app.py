"""The REST API: a FastAPI app under /api/v1, served by Ray Serve (`deepext.serve.ingress`) or, for
comparison and tests, by any ASGI server. `create_app(platform)` builds it; nothing runs at import.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deepext import audit, logs, metrics
from deepext import request as current_request
from deepext.auth import rbac
from deepext.auth.tokens import RecentPrincipals
from deepext.platform import Platform
from deepext.serve.deps import RequestInfo
from deepext.serve.errors import ERROR_RESPONSES, install_error_handlers

API_PREFIX = "/api/v1"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
_MODEL_CALLS = "/v1/"  # the OpenAI-compatible routes
_OUTCOME_BY_STATUS = {401: "unauthenticated", 403: "denied", 404: "not_found", 409: "conflict", 429: "rate_limited"}


def outcome_of(status: int, info: RequestInfo) -> str:
    if info.outcome:
        return info.outcome
    if status < 400:
        return "ok"
    if status >= 500:
        return "error"
    return _OUTCOME_BY_STATUS.get(status, "invalid")


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (`/api/v1/projects/{project}`), not its
    path: one metric series per route, whatever ids the paths carry."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else metrics.UNMATCHED_ROUTE


def _log_fields(info: RequestInfo, scope: Scope) -> Callable[[], Mapping[str, Any]]:
    """The request's log fields, read at each log call: the user is known only after authentication,
    the project only after routing."""

    def fields() -> Mapping[str, Any]:
        principal = info.principal
        return {
            "request_id": info.request_id,
            "user": principal.username if principal is not None else None,
            "project": scope.get("path_params", {}).get("project"),
        }

    return fields


class RequestAuditMiddleware:
    """Gives every request an id (echoed in `X-Request-ID`) and makes sure every state-changing
    request and every refused one leaves exactly one audit row.

    Domain functions write the row of a successful change in its own transaction, stamped with this
    request (`deepext.request`). When a request ends without a row - it failed, or was refused -
    this writes one with the outcome, before the response leaves. Lines logged while a request runs
    carry its id, user and project; with `export_metrics` (an API replica on Ray) each request also
    counts in `deepext.metrics` by method, route template and status class, with its latency.
    """

    def __init__(self, app: ASGIApp, platform: Platform, export_metrics: bool = False) -> None:
        self.app = app
        self.platform = platform
        self.export_metrics = export_metrics
        # Unique request ids without a system call per request: a random per-process prefix + a counter.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else f"{self._id_prefix}{next(self._counter):08x}"
        client = scope.get("client")
        info = RequestInfo(request_id=request_id, client_addr=client[0] if client else "unknown")
        scope["deepext"] = info
        context = current_request.RequestContext(request_id, client_addr=info.client_addr)
        written = False
        status = 500  # until a response starts

        async def finish(status: int) -> None:
            nonlocal written
            if not written and self._needs_row(scope, status, info, context):
                await anyio.to_thread.run_sync(self._write_row, scope, status, info)
            written = True

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                await finish(status)
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        log_fields = logs.push(_log_fields(info, scope))
        with current_request.bind(context):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                await finish(500)
                raise  # log fields kept: the 500 handler, outside this middleware, logs it in this task
            else:
                logs.unbind(log_fields)
            finally:
                if self.export_metrics:
                    elapsed = time.perf_counter() - started
                    metrics.record_api_request(scope["method"], route_template(scope), status, elapsed)

    @staticmethod
    def _needs_row(scope: Scope, status: int, info: RequestInfo, context: current_request.RequestContext) -> bool:
        """A successful model call (`/v1/...`) changes nothing: it is a usage event, not an audit row."""
        if context.audit_rows or not (scope["method"] in _MUTATING or info.outcome is not None):
            return False
        return not (status < 400 and info.outcome is None and scope["path"].startswith(_MODEL_CALLS))

    def _write_row(self, scope: Scope, status: int, info: RequestInfo) -> None:
        principal = info.principal
        with self.platform.db.session() as session:
            audit.record(
                session,
                actor=principal.username if principal else "anonymous",
                action=info.action or "request",
                resource=f"{scope['method']} {scope['path']}"[:255],
                project_id=info.project_id,
                detail={"status": status, **info.extra},
                outcome=outcome_of(status, info),
            )


def create_app(platform: Platform, *, export_metrics: bool = False) -> FastAPI:
    """The API over one platform; syncs the role permissions from policy.csv into the store.
    `export_metrics`: record request metrics through Ray (set by the Serve replica, `ingress.py`)."""
    from deepext.serve.routes import OPENAI_ROUTER, ROUTERS

    with platform.db.session() as session:
        rbac.sync_role_permissions(session)
    app = FastAPI(
        title="deepext",
        version="1",
        summary="Datasets, training, evaluation and models of a self-hosted LLM fine-tuning platform.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.platform = platform
    app.state.authorizer = rbac.Authorizer(platform.db)
    app.state.principals = RecentPrincipals()
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(OPENAI_ROUTER)
    app.add_middleware(RequestAuditMiddleware, platform=platform, export_metrics=export_metrics)
    return app


def app_from_settings() -> FastAPI:
    """The app on the platform the `DEEPEXT_*` settings name, for any ASGI server:
    `uvicorn --factory deepext.serve.app:app_from_settings` (Ray Serve is the default host)."""
    from deepext.config import get_settings

    return create_app(Platform.open(get_settings()))


def route_table(app: FastAPI) -> list[dict[str, Any]]:
    """Every API route with the (resource, action) it declares, or None for a public one."""
    from fastapi.routing import APIRoute

    from deepext.serve.deps import Require

    table = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        declared = [dep.call for dep in route.dependant.dependencies if isinstance(dep.call, Require)]
        for method in sorted(route.methods):
            table.append(
                {
                    "method": method,
                    "path": route.path,
                    "resource": declared[0].resource if declared else None,
                    "action": declared[0].action if declared else None,
                }
            )
    return table
