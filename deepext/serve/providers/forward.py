"""Calling a provider over HTTP: one pooled `httpx.AsyncClient` per process, the request sent with
the provider's own key (never the caller's platform token), the answer or the server-sent events
passed back with the model renamed to the public `PROJECT/PROVIDER/MODEL`, and the provider's
errors turned into the platform's, naming the provider.

Kind `openai` is passed through as is (streams are asked for a usage chunk, so every call can be
accounted; it is dropped again when the client did not ask for it). Kind `anthropic` goes through
the Messages API translation in `anthropic.py`. Usage and the time to the first token are put on
the call's `UsageMeter`; writing the event is the caller's job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from deepext.errors import (
    BadGateway,
    DeepextError,
    GatewayTimeout,
    InvalidInput,
    NotFound,
    RateLimited,
    Unavailable,
)
from deepext.serve.providers.anthropic import (
    ProviderError,
    StreamTranslator,
    to_chat_completion,
    to_messages_request,
)
from deepext.serve.providers.registry import ProviderTarget
from deepext.serve.usage import UsageMeter

ANTHROPIC_VERSION = "2023-06-01"
DONE = "data: [DONE]\n\n"
_PATHS = {"chat": "/chat/completions", "completions": "/completions"}
_ERROR_TEXT_LIMIT = 500


class ProviderHttp:
    """The process's HTTP client for providers, made on first use. A client belongs to one event
    loop (its pooled connections do), so a call from another loop gets a new one."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                follow_redirects=False,  # a redirect would carry the key to another address
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


async def call_provider(
    http: httpx.AsyncClient,
    target: ProviderTarget,
    *,
    endpoint: str,
    body: dict[str, Any],
    upstream_model: str,
    public_name: str,
    meter: UsageMeter,
) -> dict[str, Any] | AsyncIterator[str]:
    """The chat completion (or completion) answer as JSON, or, for `stream: true`, the stream of
    server-sent events to send to the client (ending with `data: [DONE]` unless the provider failed
    half-way, in which case the last event is an OpenAI-style `error`)."""
    stream = bool(body.get("stream"))
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    request = _request(http, target, endpoint=endpoint, body=body, upstream_model=upstream_model)
    response = await _send(http, request, target)
    if not stream:
        try:
            answer = json.loads(await response.aread())
        except (ValueError, httpx.HTTPError) as exc:
            raise BadGateway(f"provider {target.name!r} sent an answer that is not JSON: {exc}") from exc
        finally:
            await response.aclose()
        if not isinstance(answer, dict):
            raise BadGateway(f"provider {target.name!r} sent JSON that is not an object")
        if target.kind == "anthropic":
            try:
                answer = to_chat_completion(answer, model=public_name)
            except ProviderError as exc:
                raise BadGateway(f"provider {target.name!r}: {exc}") from exc
        answer["model"] = public_name
        meter.add_usage(answer.get("usage"))
        return answer
    if target.kind == "anthropic":
        return _anthropic_events(response, target, public_name, meter, wants_usage)
    return _openai_events(response, target, public_name, meter, wants_usage)


def _request(
    http: httpx.AsyncClient, target: ProviderTarget, *, endpoint: str, body: dict[str, Any], upstream_model: str
) -> httpx.Request:
    timeout = httpx.Timeout(target.timeout_s, connect=target.connect_timeout_s)
    headers = {"accept": "application/json"}
    if target.kind == "anthropic":
        if endpoint != "chat":
            raise InvalidInput("Claude has no text completions; use /v1/chat/completions", field="model")
        payload = to_messages_request(body, model=upstream_model)
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if target.api_key:
            headers["x-api-key"] = target.api_key
        return http.build_request("POST", f"{target.base_url}/messages", json=payload, headers=headers, timeout=timeout)
    payload = {**body, "model": upstream_model}
    if payload.get("stream"):  # ask for the usage chunk: every call is accounted
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    url = f"{target.base_url}{_PATHS[endpoint]}"
    return http.build_request("POST", url, json=payload, headers=headers, timeout=timeout)


async def _send(http: httpx.AsyncClient, request: httpx.Request, target: ProviderTarget) -> httpx.Response:
    """The provider's response, its body not read yet; an error status raised as the platform's error."""
    try:
        response = await http.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise GatewayTimeout(f"provider {target.name!r} did not answer in time ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise BadGateway(f"provider {target.name!r} at {target.base_url} cannot be reached: {exc}") from exc
    if response.status_code < 300:
        return response
    try:
        text = (await response.aread()).decode("utf-8", "replace")
    except httpx.HTTPError:
        text = ""
    finally:
        await response.aclose()
    raise provider_error(target, response.status_code, text, response.headers)


def provider_error(target: ProviderTarget, status: int, text: str, headers: httpx.Headers) -> DeepextError:
    """The platform's error for a provider's error answer (the provider's message quoted)."""
    said = f"provider {target.name!r} answered {status}: {_message_of(text)}"
    if status in (401, 403):
        return BadGateway(f"{said} (the provider refused the platform's key for it; a maintainer can set it)")
    if status == 404:
        return NotFound(said)
    if status == 429:
        retry = headers.get("retry-after", "")
        return RateLimited(said, retry_after=int(retry) if retry.isdigit() else 1)
    if status in (503, 529):
        return Unavailable(said)
    if status in (408, 504):
        return GatewayTimeout(said)
    if 400 <= status < 500:
        return InvalidInput(said)
    if status < 400:
        return BadGateway(f"{said} (a redirect to {headers.get('location', '?')}; set base_url to where it points)")
    return BadGateway(said)


def _message_of(text: str) -> str:
    """The message in an OpenAI, Anthropic, vLLM or FastAPI error body, else the text itself."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:_ERROR_TEXT_LIMIT]
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key])[:_ERROR_TEXT_LIMIT]
        if isinstance(error, str):
            return error[:_ERROR_TEXT_LIMIT]
    return text.strip()[:_ERROR_TEXT_LIMIT] or "(no message)"


def error_event(message: str, status: int = 502, kind: str = "provider_error") -> str:
    """The server-sent event that ends a failed stream (OpenAI's shape: `{"error": {...}}`)."""
    error = {"message": message, "type": kind, "code": status}
    return f"data: {json.dumps({'error': error})}\n\n"


def ends_stream(piece: str) -> bool:
    """Whether this piece of a stream holds its last event: `[DONE]`, or the error that ends it."""
    return "data: [DONE]" in piece or piece.startswith('data: {"error"')


def _has_token(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if choice.get("text") or delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
            return True
    return False


async def _sse_payloads(response: httpx.Response) -> AsyncIterator[str]:
    """The `data:` payload of each server-sent event, as the lines arrive."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line.strip() and data:
            yield "\n".join(data)
            data = []
    if data:
        yield "\n".join(data)


async def _openai_events(
    response: httpx.Response, target: ProviderTarget, public_name: str, meter: UsageMeter, wants_usage: bool
) -> AsyncIterator[str]:
    try:
        async for payload in _sse_payloads(response):
            if payload == "[DONE]":
                yield DONE
                return
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error"):
                meter.fail(f"provider {target.name!r}: {_message_of(payload)}")
                yield error_event(meter.error or "")
                return
            if chunk.get("usage"):
                meter.add_usage(chunk["usage"])
                if not wants_usage:
                    if not chunk.get("choices"):
                        continue  # the usage chunk the gateway asked for
                    chunk["usage"] = None
            if _has_token(chunk):
                meter.first_token()
            chunk["model"] = public_name
            yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
        meter.fail(f"provider {target.name!r} ended the stream without [DONE]")
        yield error_event(meter.error or "")
    except (httpx.HTTPError, ValueError) as exc:
        meter.fail(f"provider {target.name!r} broke off the stream: {type(exc).__name__}: {exc}")
        yield error_event(meter.error or "")
    finally:
        await response.aclose()


async def _anthropic_events(
    response: httpx.Response, target: ProviderTarget, public_name: str, meter: UsageMeter, wants_usage: bool
) -> AsyncIterator[str]:
    translator = StreamTranslator(model=public_name, include_usage=True)
    try:
        async for payload in _sse_payloads(response):
            event = json.loads(payload)
            for chunk in translator.feed(event):
                if "usage" in chunk:
                    meter.add_usage(chunk["usage"])
                    if not wants_usage:
                        continue
                if _has_token(chunk):
                    meter.first_token()
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
            if event.get("type") == "message_stop":
                yield DONE
                return
        meter.fail(f"provider {target.name!r} ended the stream without message_stop")
        yield error_event(meter.error or "")
    except ProviderError as exc:
        meter.fail(f"provider {target.name!r}: {exc}")
        yield error_event(meter.error or "")
    except (httpx.HTTPError, ValueError) as exc:
        meter.fail(f"provider {target.name!r} broke off the stream: {type(exc).__name__}: {exc}")
        yield error_event(meter.error or "")
    finally:
        await response.aclose()
