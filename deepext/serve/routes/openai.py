"""The OpenAI-compatible surface: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, streaming
included. Authenticated by the platform's tokens (as the `api_key` of any OpenAI client); a model is
a deployment, `PROJECT/NAME`, or an external provider's model, `PROJECT/PROVIDER/MODEL`, and answers
only callers who may chat in its project (others get 404, like for a model that does not exist).

Requests go to the deployment's Ray Serve `LLMServer` through its handle, so a deployed model has
no unauthenticated route; provider models are called over HTTP with the provider's own key
(`deepext/serve/providers/forward.py`). Every call that reaches a model writes one usage event
(`deepext/serve/usage.py`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from deepext.errors import Forbidden, InvalidInput, Unavailable
from deepext.knowledge.rag import MAX_TOP_K, augment_chat
from deepext.platform import Platform
from deepext.serve.deployments import DeploymentView, resolve_model, running_deployments
from deepext.serve.deps import Access, PlatformDep, allow, info_of, may_in_project, readable_projects
from deepext.serve.providers.forward import ProviderHttp, call_provider, ends_stream, error_event
from deepext.serve.providers.registry import (
    ProviderTarget,
    check_air_gap,
    is_provider_model,
    provider_models,
    resolve_provider_model,
)
from deepext.serve.usage import UsageMeter, metered_events, record_call, record_call_soon


@contextlib.asynccontextmanager
async def _provider_http_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Closes the providers' HTTP client (made on first use) when the app stops."""
    yield
    http: ProviderHttp | None = getattr(app.state, "provider_http", None)
    if http is not None:
        await http.aclose()


router = APIRouter(prefix="/v1", tags=["openai"], lifespan=_provider_http_lifespan)


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


async def _model(request: Request, access: Access, platform: Platform, public_name: str) -> DeploymentView:
    view = await run_in_threadpool(resolve_model, platform, public_name)  # 404 outside the caller's projects
    info_of(request).project_id = view.project_id
    if not may_in_project(request.app.state.authorizer, access.principal, view.project_id, "chat", "use"):
        info_of(request).outcome = "denied"
        raise Forbidden(f"your role in project {view.project!r} may not use its models")
    return view


async def _provider(
    request: Request, access: Access, platform: Platform, public_name: str
) -> tuple[ProviderTarget, str]:
    target, upstream_model = await run_in_threadpool(resolve_provider_model, platform, public_name)
    info_of(request).project_id = target.project_id
    if not may_in_project(request.app.state.authorizer, access.principal, target.project_id, "chat", "use"):
        info_of(request).outcome = "denied"
        raise Forbidden(f"your role in project {target.project!r} may not use its models")
    return target, upstream_model


def _meter(
    access: Access, kind: str, body: dict[str, Any], project_id: int, target_kind: Literal["deployment", "provider"]
) -> UsageMeter:
    return UsageMeter(
        project_id=project_id,
        actor=access.actor,
        token_id=access.principal.token_id,
        target_kind=target_kind,
        model=body["model"],
        endpoint=kind,
        stream=bool(body.get("stream")),
    )


def _provider_http(request: Request) -> httpx.AsyncClient:
    """The app's pooled client for providers (one per process: one app per API replica)."""
    state = request.app.state
    if getattr(state, "provider_http", None) is None:
        state.provider_http = ProviderHttp()
    return state.provider_http.client()


@router.get("/models")
def models(access: Annotated[Access, allow("inference", "use")], platform: PlatformDep) -> ModelList:
    """The running deployments of the projects you are in, and their providers' allow-listed
    models (no provider is called)."""
    projects = readable_projects(access.principal)
    cards = [
        ModelCard(
            id=view.model, created=int(dt.datetime.fromisoformat(view.created_at).timestamp()), owned_by=view.project
        )
        for view in running_deployments(platform, projects)
    ]
    cards += [
        ModelCard(id=model.id, created=int(model.created_at.timestamp()), owned_by=model.project)
        for model in provider_models(platform, projects)
    ]
    return ModelList(data=cards)


async def _forward(request: Request, access: Access, platform: Platform, kind: str) -> Any:
    try:
        body = await request.json()
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}", field="body") from exc
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InvalidInput("body.model: the model to call, PROJECT/NAME or PROJECT/PROVIDER/MODEL", field="body.model")
    rag = body.pop("rag", None)
    if is_provider_model(body["model"]):
        target, upstream_model = await _provider(request, access, platform, body["model"])
        sources = await _retrieve(request, access, platform, target.project_id, kind, body, rag)
        return await _forward_to_provider(request, access, platform, kind, body, target, upstream_model, sources)
    view = await _model(request, access, platform, body["model"])
    sources = await _retrieve(request, access, platform, view.project_id, kind, body, rag)
    meter = _meter(access, kind, body, view.project_id, "deployment")
    meter.model_version_id = view.model_version_id
    try:
        return await _forward_to_deployment(view, platform, kind, body, meter, sources)
    except Exception as exc:
        meter.fail(str(exc) or type(exc).__name__)
        await run_in_threadpool(record_call, platform, meter)
        raise


class RagOption(BaseModel):
    """`"rag": {"knowledge_base": NAME, "top_k": K}` in a chat request: answer from the model's
    project's knowledge base."""

    model_config = ConfigDict(extra="forbid")
    knowledge_base: str = Field(min_length=1, max_length=64)
    top_k: int = Field(4, ge=1, le=MAX_TOP_K)


async def _retrieve(
    request: Request, access: Access, platform: Platform, project_id: int, kind: str, body: dict[str, Any], rag: Any
) -> list[dict[str, Any]] | None:
    """With a `rag` option, the chat's messages get the top-k chunks of the knowledge base as a
    leading system message; returns the sources (None without the option)."""
    if rag is None:
        return None
    if kind != "chat":
        raise InvalidInput("rag: retrieval is for chat completions", field="body.rag")
    try:
        option = RagOption.model_validate(rag)
    except ValueError as exc:
        raise InvalidInput(f"rag: {exc}", field="body.rag") from exc
    if not may_in_project(request.app.state.authorizer, access.principal, project_id, "knowledge", "read"):
        info_of(request).outcome = "denied"
        raise Forbidden("your role in this model's project may not read its knowledge bases")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidInput("messages: a list of {role, content} objects", field="body.messages")
    body["messages"], sources = await run_in_threadpool(
        augment_chat, platform, project_id, option.knowledge_base, messages, option.top_k
    )
    return sources


def _sources_event(public_name: str, sources: list[dict[str, Any]]) -> str:
    """The retrieved sources as a stream's first chunk: a chunk without choices (like the usage
    chunk), so OpenAI clients pass it through."""
    chunk = {"object": "chat.completion.chunk", "model": public_name, "choices": [], "sources": sources}
    return f"data: {json.dumps(chunk)}\n\n"


async def _with_sources(
    events: AsyncIterator[str], public_name: str, sources: list[dict[str, Any]] | None
) -> AsyncIterator[str]:
    if sources is not None:
        yield _sources_event(public_name, sources)
    async for piece in events:
        yield piece


async def _forward_to_deployment(
    view: DeploymentView,
    platform: Platform,
    kind: str,
    body: dict[str, Any],
    meter: UsageMeter,
    sources: list[dict[str, Any]] | None = None,
) -> Any:
    from ray import serve

    public_name = body["model"]
    body["model"] = view.engine_model
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if body.get("stream"):  # ask for the usage chunk: every call is accounted
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    handle = serve.get_deployment_handle(view.handle, app_name=view.app)
    if view.host_deployment_id is not None:  # a LoRA version: Serve routes to replicas holding its adapter
        handle = handle.options(multiplexed_model_id=view.engine_model)
    stream: Any = handle.options(stream=True, method_name="call").remote(kind, body)  # EngineServer.call
    first = await stream.__anext__()
    head = first[0] if isinstance(first, list) and first else first
    if _is_error(head):
        error = head["error"]
        message = str(error["message"]).replace(body["model"], public_name)
        code = int(error.get("code") or 500)
        raise InvalidInput(message, field=error.get("param")) if 400 <= code < 500 else Unavailable(message)
    if not isinstance(first, list):  # one whole answer
        answer = first
        answer["model"] = public_name
        if sources is not None:
            answer["sources"] = sources
        meter.add_usage(answer.get("usage"))
        await run_in_threadpool(record_call, platform, meter)
        return JSONResponse(answer)
    events = _with_sources(_events(first, stream, public_name, view, meter, wants_usage), public_name, sources)
    return StreamingResponse(_metered(events, meter, platform), media_type="text/event-stream")


async def _forward_to_provider(
    request: Request,
    access: Access,
    platform: Platform,
    kind: str,
    body: dict[str, Any],
    target: ProviderTarget,
    upstream_model: str,
    sources: list[dict[str, Any]] | None = None,
) -> Any:
    meter = _meter(access, kind, body, target.project_id, "provider")
    meter.provider_id = target.id
    try:
        check_air_gap(platform.settings, target.name, target.base_url)
        answer = await call_provider(
            _provider_http(request),
            target,
            endpoint=kind,
            body=body,
            upstream_model=upstream_model,
            public_name=body["model"],
            meter=meter,
        )
    except Exception as exc:
        meter.fail(str(exc) or type(exc).__name__)
        await run_in_threadpool(record_call, platform, meter)
        raise
    if isinstance(answer, dict):
        if sources is not None:
            answer["sources"] = sources
        await run_in_threadpool(record_call, platform, meter)
        return JSONResponse(answer)
    events = _with_sources(answer, body["model"], sources)
    return StreamingResponse(_metered(events, meter, platform), media_type="text/event-stream")


async def _metered(events: AsyncIterator[str], meter: UsageMeter, platform: Platform) -> AsyncIterator[str]:
    """`events` passed on, the call's usage event written just before the last event - `[DONE]`, or
    an error - goes out (a client closes the connection on it, and nothing after the last `yield`
    would run), or when the stream ends without one, or, if the client goes away first, in the
    background."""
    recorded = False
    try:
        async for piece in events:
            if not recorded and ends_stream(piece):
                await run_in_threadpool(record_call, platform, meter)
                recorded = True
            yield piece
    except BaseException:  # the client went away (the task is cancelled) or the stream failed
        if not recorded:
            meter.fail("the stream was cut off before it ended")
            record_call_soon(platform, meter)
        raise
    if not recorded:
        await run_in_threadpool(record_call, platform, meter)


async def _events(
    first: list[str], rest: Any, public_name: str, view: DeploymentView, meter: UsageMeter, wants_usage: bool
) -> AsyncIterator[str]:
    """The engine's server-sent events, each batch the engine hands over sent on as one piece
    (every piece is a message from this replica through Serve's proxy), with the engine's model
    id replaced by the public name. The usage chunk's tokens go on the meter; the chunk itself is
    sent only if the client asked for it."""
    batch: list[Any] = first
    while True:
        # The engine may end a stream it began with an error object (a prompt over its length, say).
        error = next((item for item in batch if not isinstance(item, str)), None)
        batch = [item for item in batch if isinstance(item, str)]
        text = metered_events("".join(batch), meter, view.engine_model, public_name, wants_usage)
        if text:
            yield text
        if error is not None:
            yield _engine_error_event(error, view.engine_model, public_name, meter)
            return
        if "data: [DONE]" in text:
            return
        try:
            batch = await rest.__anext__()
        except StopAsyncIteration:
            break
        batch = batch if isinstance(batch, list) else [batch]


def _is_error(item: Any) -> bool:
    """An OpenAI error object from the engine (`{"error": {"message": ...}}`, see `EngineServer`)."""
    return isinstance(item, dict) and isinstance(item.get("error"), dict)


def _engine_error_event(error: dict[str, Any], engine_model: str, public_name: str, meter: UsageMeter) -> str:
    """An error the engine sent mid-stream, as the event that ends the stream, with the public name."""
    detail = error.get("error") or {"message": str(error)}
    message = str(detail.get("message")).replace(engine_model, public_name)
    meter.fail(message)
    return error_event(message, int(detail.get("code") or 500), str(detail.get("type") or "engine_error"))


_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


@router.post("/chat/completions", openapi_extra=_BODY)
async def chat_completions(
    request: Request, access: Annotated[Access, allow("inference", "use")], platform: PlatformDep
) -> Any:
    """OpenAI chat completions on a deployed model (`stream`, `n`, `logprobs`, `response_format`
    with a JSON schema - vLLM's structured output - and usage in every answer) or on a provider's
    model (`PROJECT/PROVIDER/MODEL`)."""
    return await _forward(request, access, platform, "chat")


@router.post("/completions", openapi_extra=_BODY)
async def completions(
    request: Request, access: Annotated[Access, allow("inference", "use")], platform: PlatformDep
) -> Any:
    return await _forward(request, access, platform, "completions")
