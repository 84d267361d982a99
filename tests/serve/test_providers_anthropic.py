"""The gateway in front of Claude, called with the official `openai` client: requests translated to
the Messages API, answers and streams translated back, errors named after the provider, usage
accounted.

Anthropic's API cannot be reached from here, so `AnthropicApiStandIn` serves its place over real
HTTP: it replays the recorded documentation shapes in fixtures/anthropic/ (streams cut into small
pieces at arbitrary byte offsets) and keeps what it was sent, so the test checks both directions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from deepext.db.models import UsageEvent
from tests.helpers import uvicorn_in_thread
from tests.serve.conftest import Api

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
KEY = "sk-ant-test-0123456789abcdef"


@dataclass
class AnthropicApiStandIn:
    """Stands in for Anthropic's Messages API (`POST /v1/messages`), which cannot be reached here."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)  # {"path", "headers", "body"} per request

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.received.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        if request.headers.get("x-api-key") != KEY:
            error = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
            return JSONResponse(error, status_code=401)
        model = body["model"]
        if model == "claude-overloaded":
            return Response((FIXTURES / "error.json").read_bytes(), status_code=529, media_type="application/json")
        if body.get("stream"):
            name = {"claude-tools": "tool_use_stream.sse", "claude-error-stream": "error_stream.sse"}.get(
                model, "stream.sse"
            )
            return StreamingResponse(_pieces((FIXTURES / name).read_bytes()), media_type="text/event-stream")
        name = "tool_use_message.json" if model == "claude-tools" else "message.json"
        return Response((FIXTURES / name).read_bytes(), media_type="application/json")


async def _pieces(data: bytes, size: int = 37) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture(scope="module")
def anthropic_stand_in() -> Iterator[AnthropicApiStandIn]:
    stand_in = AnthropicApiStandIn()
    with uvicorn_in_thread(stand_in.app()) as url:
        stand_in.url = url
        yield stand_in


def _client(api: Api, caller: str = "member") -> openai.OpenAI:
    """The official client, talking to the in-process app (no retries: every call is one event)."""
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=api.tokens[caller], http_client=api.client, max_retries=0
    )


def test_claude_through_the_gateway(api: Api, anthropic_stand_in: AnthropicApiStandIn) -> None:
    stand_in = anthropic_stand_in
    stand_in.received.clear()
    registered = api.call(
        "POST",
        "/projects/p/providers",
        "maintainer",
        json={"name": "claude", "preset": "anthropic", "base_url": f"{stand_in.url}/v1", "api_key": KEY},
    )
    assert registered.status_code == 201, registered.text
    client = _client(api)
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]

    # a whole answer
    answer = client.chat.completions.create(
        model="p/claude/claude-sonnet-4-5", messages=messages, max_tokens=50, temperature=0.2, stop=["\n\nHuman:"]
    )
    sent = stand_in.received[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == KEY and sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]  # the caller's platform token stays here
    assert sent["body"] == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "temperature": 0.2,
        "stop_sequences": ["\n\nHuman:"],
    }
    assert answer.model == "p/claude/claude-sonnet-4-5" and answer.id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert answer.choices[0].message.content == "Hi! My name is Claude."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2095, 503)

    # a stream, with and without the usage chunk
    chunks = list(
        client.chat.completions.create(
            model="p/claude/claude-sonnet-4-5", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert stand_in.received[-1]["body"]["stream"] is True
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert {c.model for c in chunks} == {"p/claude/claude-sonnet-4-5"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        25,
        15,
    )
    plain = list(client.chat.completions.create(model="p/claude/claude-sonnet-4-5", messages=messages, stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)

    # tool calls, streamed
    tool_chunks = list(client.chat.completions.create(model="p/claude/claude-tools", messages=messages, stream=True))
    arguments = "".join(
        call.function.arguments or ""
        for c in tool_chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
        if call.function
    )
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert [c.choices[0].finish_reason for c in tool_chunks if c.choices][-1] == "tool_calls"

    # what Claude cannot do, and Claude's own errors
    with pytest.raises(openai.UnprocessableEntityError, match="n: Claude returns one choice"):
        client.chat.completions.create(model="p/claude/claude-sonnet-4-5", messages=messages, n=2)
    with pytest.raises(openai.UnprocessableEntityError, match="no text completions"):
        client.completions.create(model="p/claude/claude-sonnet-4-5", prompt="Once")
    with pytest.raises(openai.InternalServerError, match="provider 'claude' answered 529: Overloaded") as overloaded:
        client.chat.completions.create(model="p/claude/claude-overloaded", messages=messages)
    assert overloaded.value.status_code == 503
    with pytest.raises(openai.APIError, match=r"provider 'claude'.*Overloaded"):
        list(client.chat.completions.create(model="p/claude/claude-error-stream", messages=messages, stream=True))
    wrong_key = api.call("PATCH", "/projects/p/providers/claude", "owner", json={"api_key": "sk-ant-wrong"})
    assert wrong_key.status_code == 200
    with pytest.raises(openai.APIStatusError, match="provider 'claude' answered 401: invalid x-api-key") as refused:
        client.chat.completions.create(model="p/claude/claude-sonnet-4-5", messages=messages)
    assert refused.value.status_code == 502

    with api.platform.db.session() as session:
        events = session.scalars(select(UsageEvent).order_by(UsageEvent.id)).all()
    assert [(e.model.removeprefix("p/claude/"), e.stream, e.status) for e in events] == [
        ("claude-sonnet-4-5", False, "ok"),
        ("claude-sonnet-4-5", True, "ok"),
        ("claude-sonnet-4-5", True, "ok"),
        ("claude-tools", True, "ok"),
        ("claude-sonnet-4-5", False, "error"),
        ("claude-sonnet-4-5", False, "error"),
        ("claude-overloaded", False, "error"),
        ("claude-error-stream", True, "error"),
        ("claude-sonnet-4-5", False, "error"),
    ]
    assert [(e.prompt_tokens, e.completion_tokens) for e in events[:4]] == [(2095, 503), (25, 15), (25, 15), (472, 89)]
    assert all(e.ttft_ms is not None for e in events[1:4]) and events[0].ttft_ms is None
    assert "invalid x-api-key" in (events[-1].error or "") and events[-1].actor == "member"
