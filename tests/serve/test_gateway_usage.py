"""The deployment side of the gateway's accounting, without Ray: an engine's event batches renamed
to the public model, the usage chunk the gateway asks for kept only when the client asked for it,
its tokens and the time to the first token put on the meter, and the usage event written once -
before `[DONE]` goes out, or when the client goes away first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from deepext.serve.routes import openai as gateway
from deepext.serve.usage import UsageMeter


def _event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
    chunk: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": "deployment-7", "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"


FIRST = [_event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
REST = [
    [_event([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}])],
    [
        _event([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        _event([], {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
        "data: [DONE]\n\n",
    ],
]


async def _batches() -> AsyncIterator[list[str]]:
    for batch in REST:
        yield batch


def _meter() -> UsageMeter:
    return UsageMeter(1, "member", 3, "deployment", "p/chat", "chat", stream=True, model_version_id=9)


async def _collect(wants_usage: bool, meter: UsageMeter) -> str:
    view: Any = SimpleNamespace(engine_model="deployment-7")
    pieces = gateway._events(FIRST, _batches(), "p/chat", view, meter, wants_usage)
    return "".join([piece async for piece in pieces])


@pytest.mark.parametrize("wants_usage", [True, False])
def test_engine_events_are_renamed_and_accounted(wants_usage: bool) -> None:
    meter = _meter()
    text = asyncio.run(_collect(wants_usage, meter))
    assert '"model":"deployment-7"' not in text and text.count('"model":"p/chat"') == 3 + wants_usage
    assert ('"usage":{' in text) is wants_usage and text.endswith("data: [DONE]\n\n")
    assert (meter.prompt_tokens, meter.completion_tokens, meter.error) == (5, 2, None)
    assert meter.ttft_ms is not None


@pytest.mark.parametrize("last", ["data: [DONE]\n\n", 'data: {"error": {"message": "provider \'x\': overloaded"}}\n\n'])
def test_the_event_is_written_before_the_last_event_or_when_the_client_leaves(
    last: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[tuple[str | None, bool]] = []
    sent: list[str] = []
    monkeypatch.setattr(gateway, "record_call", lambda platform, meter: written.append((meter.error, bool(sent))))

    async def whole() -> None:
        async for piece in gateway._metered(_pieces(), _meter(), platform=None):  # type: ignore[arg-type]
            assert written or piece != last, "the last event went out before the usage event was written"
            sent.append(piece)

    async def _pieces() -> AsyncIterator[str]:
        for piece in ["data: {}\n\n", last]:
            yield piece

    asyncio.run(whole())
    assert written == [(None, True)] and len(sent) == 2

    left: list[str | None] = []
    monkeypatch.setattr(gateway, "record_call_soon", lambda platform, meter: left.append(meter.error))

    async def client_leaves() -> None:
        events = gateway._metered(_pieces(), _meter(), platform=None)  # type: ignore[arg-type]
        await events.__anext__()
        await events.aclose()  # what a closed connection does to the response's generator

    asyncio.run(client_leaves())
    assert left == ["the stream was cut off before it ended"]
