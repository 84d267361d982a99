"""`EngineServer`'s pieces that need no engine: the stream batcher that sends a stream's first
token at once, and the plain (JSON-shaped) data it hands the gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import pytest
from pydantic import ValidationError

from deepext.serve.engine_server import FirstAtOnceBatcher, invalid_request, plain

LONG_INTERVAL_MS = 10_000  # Serve's own batcher would hold the first piece this long


async def _batches(generator: AsyncGenerator[str, None], interval_ms: float | None) -> list[list[str]]:
    return [batch async for batch in FirstAtOnceBatcher(generator, interval_ms).stream()]


ROLE = 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'


def _token(text: str) -> str:
    return "data: " + json.dumps({"choices": [{"delta": {"content": text}}]}, separators=(",", ":")) + "\n\n"


def test_pieces_go_out_at_once_until_the_first_token_then_in_batches() -> None:
    """vLLM's first chat piece holds only the role; the piece with the first token must not wait
    for the interval either. After it, pieces wait for the interval or the end."""

    async def scenario() -> list[list[str]]:
        sent = [asyncio.Event(), asyncio.Event()]

        async def engine() -> AsyncGenerator[str, None]:
            yield ROLE
            await sent[0].wait()
            yield _token("Hi")
            await sent[1].wait()
            for piece in (_token(" there"), _token("!"), "data: [DONE]\n\n"):
                yield piece

        stream = FirstAtOnceBatcher(engine(), LONG_INTERVAL_MS).stream()
        batches = []
        for event in sent:
            batches.append(await asyncio.wait_for(stream.__anext__(), timeout=2))
            event.set()
        batches.append(await asyncio.wait_for(stream.__anext__(), timeout=2))  # the end ends the wait
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        return batches

    assert asyncio.run(scenario()) == [[ROLE], [_token("Hi")], [_token(" there"), _token("!"), "data: [DONE]\n\n"]]


def test_after_the_first_token_pieces_wait_for_the_interval() -> None:
    async def scenario() -> list[str]:
        async def engine() -> AsyncGenerator[str, None]:
            yield _token("Hi")
            await asyncio.sleep(3600)  # the engine is still generating
            yield _token("never")

        stream = FirstAtOnceBatcher(engine(), LONG_INTERVAL_MS).stream()
        first = await asyncio.wait_for(stream.__anext__(), timeout=2)
        with pytest.raises(TimeoutError):  # nothing new: the batcher waits the (long) interval
            await asyncio.wait_for(stream.__anext__(), timeout=0.5)
        return first

    assert asyncio.run(scenario()) == [_token("Hi")]


def test_an_empty_stream_ends_without_a_batch_and_an_engine_error_reaches_the_reader() -> None:
    async def nothing() -> AsyncGenerator[str, None]:
        return
        yield

    async def broken() -> AsyncGenerator[str, None]:
        yield "data: 1\n\n"
        raise RuntimeError("engine died")

    assert asyncio.run(_batches(nothing(), 50)) == []
    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(_batches(broken(), 50))


@pytest.mark.parametrize("interval_ms", [0, None])
def test_no_interval_and_one_whole_batch_keep_serves_behaviour(interval_ms: float | None) -> None:
    async def engine() -> AsyncGenerator[str, None]:
        for piece in ("a", "b"):
            yield piece

    expected = [["a"], ["b"]] if interval_ms == 0 else [["a", "b"]]
    assert asyncio.run(_batches(engine(), interval_ms)) == expected


def test_models_become_dicts_and_a_refused_body_becomes_an_openai_error() -> None:
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    with pytest.raises(ValidationError) as refused:
        ChatCompletionRequest.model_validate({"model": "m", "messages": "hi"})
    error = invalid_request("chat", refused.value)["error"]
    assert error["code"] == 400 and error["param"] == "body" and "messages" in error["message"]

    request = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert plain(["data: 1\n\n", request])[1]["messages"] == [{"role": "user", "content": "x"}]
    assert plain("data: [DONE]\n\n") == "data: [DONE]\n\n"
