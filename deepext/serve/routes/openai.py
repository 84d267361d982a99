"""The OpenAI-compatible surface for deployed models: `/v1/models`, `/v1/chat/completions`,
`/v1/completions`, streaming included. Authenticated by the platform's tokens (as the `api_key` of
any OpenAI client); a model is `PROJECT/NAME` and answers only callers who may chat in its project
(others get 404, like for a model that does not exist).

Requests go to the deployment's Ray Serve `LLMServer` through its handle, so a deployed model has
no unauthenticated route.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from deepext.errors import Forbidden, InvalidInput, Unavailable
from deepext.models.versions import record_usage
from deepext.platform import Platform
from deepext.serve.deployments import DeploymentView, resolve_model, running_deployments
from deepext.serve.deps import Access, PlatformDep, allow, info_of, may_in_project, readable_projects

router = APIRouter(prefix="/v1", tags=["openai"])


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


@router.get("/models")
def models(access: Annotated[Access, allow("inference", "use")], platform: PlatformDep) -> ModelList:
    """The running deployments of the projects you are in."""
    cards = [
        ModelCard(
            id=view.model, created=int(dt.datetime.fromisoformat(view.created_at).timestamp()), owned_by=view.project
        )
        for view in running_deployments(platform, readable_projects(access.principal))
    ]
    return ModelList(data=cards)


async def _forward(request: Request, access: Access, platform: Platform, kind: str) -> Any:
    from ray import serve
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest, ErrorResponse

    try:
        body = await request.json()
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}", field="body") from exc
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InvalidInput("body.model: the model to call, PROJECT/NAME", field="body.model")
    view = await _model(request, access, platform, body["model"])
    public_name = body["model"]
    body["model"] = view.engine_model
    schema = ChatCompletionRequest if kind == "chat" else CompletionRequest
    try:
        parsed = schema.model_validate(body)
    except ValueError as exc:
        raise InvalidInput(f"invalid {kind} request: {exc}", field="body") from exc
    handle = serve.get_deployment_handle(view.handle, app_name=view.app)
    if view.host_deployment_id is not None:  # a LoRA version: Serve routes to replicas holding its adapter
        handle = handle.options(multiplexed_model_id=view.engine_model)
    stream = getattr(handle.options(stream=True), kind).remote(parsed, None)
    first = await stream.__anext__()
    head = first[0] if isinstance(first, list) and first else first
    if isinstance(head, ErrorResponse):
        message = head.error.message.replace(body["model"], public_name)
        raise (
            InvalidInput(message, field=head.error.param) if 400 <= int(head.error.code) < 500 else Unavailable(message)
        )
    if not isinstance(first, list):  # one whole answer
        answer = first.model_dump(mode="json")
        answer["model"] = public_name
        await run_in_threadpool(_count, platform, view, answer.get("usage"))
        return JSONResponse(answer)
    return StreamingResponse(_events(first, stream, public_name, view, platform), media_type="text/event-stream")


async def _events(
    first: list[str], rest: Any, public_name: str, view: DeploymentView, platform: Platform
) -> AsyncIterator[str]:
    """The engine's server-sent events, each batch the engine hands over sent on as one piece
    (every piece is a message from this replica through Serve's proxy), with the engine's model
    id replaced by the public name. The request is counted - with the usage chunk's tokens, if the
    client asked for one - before `[DONE]` goes out: a client closes the connection on `[DONE]`,
    and nothing after the last `yield` would run."""
    engine_name = json.dumps(view.engine_model)
    public = json.dumps(public_name)
    usage: dict[str, Any] | None = None
    batch: list[str] = first
    while True:
        text = "".join(batch).replace(f'"model":{engine_name}', f'"model":{public}')
        if '"usage":{' in text:
            usage = _last_usage(text) or usage
        if "data: [DONE]" in text:
            await run_in_threadpool(_count, platform, view, usage)
            usage = None
            yield text
            return
        yield text
        try:
            batch = await rest.__anext__()
        except StopAsyncIteration:
            break
        batch = batch if isinstance(batch, list) else [batch]
    await run_in_threadpool(_count, platform, view, usage)


def _last_usage(text: str) -> dict[str, Any] | None:
    for event in reversed(text.split("\n\n")):
        payload = event.removeprefix("data: ").strip()
        if payload.startswith("{") and '"usage":{' in payload:
            usage = json.loads(payload).get("usage")
            if usage:
                return dict(usage)
    return None


def _count(platform: Platform, view: DeploymentView, usage: dict[str, Any] | None) -> None:
    record_usage(platform, view.model_version_id, requests=1, tokens=int((usage or {}).get("total_tokens") or 0))


_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


@router.post("/chat/completions", openapi_extra=_BODY)
async def chat_completions(
    request: Request, access: Annotated[Access, allow("inference", "use")], platform: PlatformDep
) -> Any:
    """OpenAI chat completions on a deployed model (`stream`, `n`, `logprobs`, `response_format`
    with a JSON schema - vLLM's structured output - and usage in every answer)."""
    return await _forward(request, access, platform, "chat")


@router.post("/completions", openapi_extra=_BODY)
async def completions(
    request: Request, access: Annotated[Access, allow("inference", "use")], platform: PlatformDep
) -> Any:
    return await _forward(request, access, platform, "completions")
