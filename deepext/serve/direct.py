"""A deployment's direct endpoint, `/deployments/PROJECT/NAME/v1`: the engine's own replicas serve
vLLM's OpenAI app (Ray Serve LLM's direct streaming, HAProxy in front), so a call skips the
gateway's hop through an API replica and the deployment handle. `DirectGate` wraps that app with
what the gateway does for a deployment: the platform's tokens and project roles, the public model
name, and one usage event per call. Only chat, completions and the model list are open; vLLM's app
has other routes (tokenize, metrics, ...) that stay closed.

What the gateway adds and this endpoint does not: the `rag` option and the audit rows of refused
calls. A LoRA version sharing the engine is called through the gateway."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from deepext.auth import rbac
from deepext.auth.tokens import Principal, RecentPrincipals
from deepext.errors import DeepextError, Forbidden, InvalidInput, NotFound, PayloadTooLarge, Unauthenticated
from deepext.platform import Platform
from deepext.serve.deps import may_in_project, may_on_platform, principal_of, readable_projects
from deepext.serve.errors import status_of
from deepext.serve.sse import renamed
from deepext.serve.usage import UsageMeter, UsageWriter, metered_events

Scope = dict[str, Any]
Message = dict[str, Any]
OPEN_ROUTES = {("POST", "/v1/chat/completions"): "chat", ("POST", "/v1/completions"): "completions"}
MODELS_ROUTE = ("GET", "/v1/models")
ACCESS_RECHECK_S = 1.0  # how long a revoked token or a removed role may still call a direct endpoint
MAX_BODY_BYTES = 32 << 20  # far above a prompt as long as any context; a bound on what one call may hold in memory


@dataclass(frozen=True)
class Served:
    """The deployment a gate stands in front of."""

    project_id: int
    model: str  # the public name, PROJECT/NAME
    engine_model: str
    model_version_id: int


class DirectGate:
    """ASGI middleware: check the caller, translate the model name, meter the call."""

    def __init__(self, app: Any, *, platform: Platform, served: Served) -> None:
        self.app = app
        self.platform = platform
        self.served = served
        self.authorizer = rbac.Authorizer(platform.db)
        self.recent = RecentPrincipals()
        self.usage = UsageWriter(platform)
        self.checked_at = 0.0  # when the access version was last read (time.monotonic)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # the app's lifespan
            await self.app(scope, receive, send)
            return
        route = (scope["method"], scope["path"].removeprefix(scope.get("root_path", "")))
        try:
            if route != MODELS_ROUTE and route not in OPEN_ROUTES:
                raise NotFound(f"{route[0]} {route[1]} is not served here; the endpoint serves {sorted(OPEN_ROUTES)}")
            principal = await self._principal(_bearer(scope))
            self._check_access(principal)
            if route == MODELS_ROUTE:
                await _send_json(send, 200, {"object": "list", "data": [self._card()]})
                return
            body = _json_body(await _read_body(receive))
            meter = self._meter(principal, OPEN_ROUTES[route], body)
        except DeepextError as exc:
            status, code = status_of(exc)
            error = {"code": code, "message": str(exc), "field": getattr(exc, "field", None), "request_id": ""}
            await _send_json(send, status, {"error": error})
            return
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["model"] = self.served.engine_model
        if meter.stream:  # ask for the usage chunk: every call is accounted
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        call = _Call(self, meter, wants_usage, send)
        payload = json.dumps(body).encode()
        try:
            await self.app(_with_length(scope, payload), _replay(payload, receive), call.send)
        except BaseException:  # the client went away (the task is cancelled) or the app failed
            if not call.recorded:
                meter.fail("the call was cut off before it ended")
                call.record()
            raise
        call.record()

    async def _principal(self, secret: str) -> Principal:
        """Who the token stands for. The access version (any revocation or role change moves it) is
        read again once `ACCESS_RECHECK_S` has passed, not on every call as on the gateway: that
        read, on a thread, was a tenth of the replica's CPU per call."""
        version = self.authorizer.version
        if version is not None and time.monotonic() - self.checked_at < ACCESS_RECHECK_S:
            principal = self.recent.get(secret, version)
            if principal is not None:
                return principal
        return await asyncio.to_thread(self._look_up, secret)

    def _look_up(self, secret: str) -> Principal:
        checked_at = time.monotonic()
        with self.platform.db.session() as session:
            principal = principal_of(session, self.authorizer, self.recent, secret)
        self.checked_at = checked_at
        return principal

    def _check_access(self, principal: Principal) -> None:
        """The caller must be allowed to use models and to chat in the deployment's project
        (outside their projects the model does not exist, as on the gateway)."""
        project_id = self.served.project_id
        if not may_on_platform(self.authorizer, principal, "inference", "use"):
            raise Forbidden("this token may not call models")
        readable = readable_projects(principal)
        if readable is not None and project_id not in readable:
            raise NotFound(f"model {self.served.model!r} not found")
        if not may_in_project(self.authorizer, principal, project_id, "chat", "use"):
            raise Forbidden(f"your role in the project of {self.served.model!r} may not use its models")

    def _meter(self, principal: Principal, kind: str, body: dict[str, Any]) -> UsageMeter:
        model = body.get("model")
        if model != self.served.model:
            raise NotFound(f"model {model!r} not found; this endpoint serves {self.served.model!r}")
        if "rag" in body:
            raise InvalidInput("rag: retrieval runs on the gateway's /v1, not on a direct endpoint", field="body.rag")
        if not isinstance(body.get("stream_options") or {}, dict):
            raise InvalidInput(
                'stream_options: an object, such as {"include_usage": true}', field="body.stream_options"
            )
        meter = UsageMeter(
            project_id=self.served.project_id,
            actor=principal.username,
            token_id=principal.token_id,
            target_kind="deployment",
            model=self.served.model,
            endpoint=kind,
            stream=bool(body.get("stream")),
        )
        meter.model_version_id = self.served.model_version_id
        return meter

    def _card(self) -> dict[str, Any]:
        owner = self.served.model.split("/")[0]
        return {"id": self.served.model, "object": "model", "created": 0, "owned_by": owner}


class _Call:
    """The `send` of one call: the engine's model id renamed in what goes out, the usage read
    from it, and the call queued for the usage writer when its last piece goes out."""

    def __init__(self, gate: DirectGate, meter: UsageMeter, wants_usage: bool, send: Any) -> None:
        self.gate, self.meter, self.wants_usage, self._send = gate, meter, wants_usage, send
        self.recorded = False
        self.status = 200
        self.stream = False
        self.start: Message | None = None
        self.held = bytearray()  # a whole answer, held to rename its model and count its usage

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = dict(message.get("headers") or [])
            self.stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            if self.stream:
                await self._send(message)
            else:
                self.start = message
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        more = bool(message.get("more_body"))
        if self.stream:
            await self._stream_piece(message.get("body", b"").decode(), more)
            return
        self.held += message.get("body", b"")
        if not more:
            await self._whole_answer()

    async def _stream_piece(self, text: str, more: bool) -> None:
        served, meter = self.gate.served, self.meter
        text = metered_events(text, meter, served.engine_model, served.model, self.wants_usage)
        if text.startswith('data: {"error"'):
            meter.fail(text[6:].strip())
        if "data: [DONE]" in text or not more:
            self.record()
        await self._send({"type": "http.response.body", "body": text.encode(), "more_body": more})

    async def _whole_answer(self) -> None:
        served = self.gate.served
        body = renamed(self.held.decode(), served.engine_model, served.model).encode()
        if self.status == 200:
            self.meter.add_usage(json.loads(body).get("usage"))
        else:
            self.meter.fail(body.decode()[:2000] or f"HTTP {self.status}")
        self.record()
        assert self.start is not None
        headers = [(k, v) for k, v in self.start["headers"] if k != b"content-length"]
        await self._send({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    def record(self) -> None:
        if not self.recorded:
            self.recorded = True
            self.gate.usage.add(self.meter)


def gate(app: Any, *, settings: dict[str, Any], deployment_id: int) -> DirectGate:
    """The gate for a deployment's engine replica; opens the platform's stores in the replica."""
    from deepext.config import Settings
    from deepext.serve.deployments import load_view

    platform = Platform.open(Settings(**settings), migrate=False)
    view = load_view(platform, deployment_id)
    served = Served(view.project_id, view.model, view.engine_model, view.model_version_id)
    return DirectGate(app, platform=platform, served=served)


def _bearer(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and secret.strip():
                return secret.strip()
    raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")


async def _read_body(receive: Any) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body exceeds the limit of {MAX_BODY_BYTES} bytes")
        if not message.get("more_body"):
            return bytes(body)


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}", field="body") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    return body


def _with_length(scope: Scope, payload: bytes) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(len(payload)).encode())]}


def _replay(payload: bytes, receive: Any) -> Any:
    """A `receive` that hands the app `payload` as the body, then waits on the client's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    return replay


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
