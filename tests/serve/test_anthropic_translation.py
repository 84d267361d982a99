"""The OpenAI <-> Anthropic Messages translation against the shapes Anthropic's documentation
shows (fixtures/anthropic/), both ways and streaming; what has no counterpart is refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deepext.errors import InvalidInput
from deepext.serve.providers.anthropic import (
    ProviderError,
    StreamTranslator,
    parse_sse,
    to_chat_completion,
    to_messages_request,
)

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"


def _json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _events(name: str) -> list[dict[str, Any]]:
    return list(parse_sse((FIXTURES / name).read_text(encoding="utf-8").splitlines(keepends=True)))


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


def test_a_chat_request_becomes_a_messages_request() -> None:
    chat = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": "Weather in SF?"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"},
        ],
        "temperature": 0.2,
        "stop": "END",
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "user": "alice",
        "stream": True,
    }
    body = to_messages_request(chat, model="claude-sonnet-4-5")
    assert body["model"] == "claude-sonnet-4-5"
    assert body["max_tokens"] == 1024  # required by the Messages API; OpenAI's default is none
    assert body["system"] == "Be brief.\n\nAnswer in English."
    assert [turn["role"] for turn in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Weather in SF?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
    ]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"}
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert (body["stop_sequences"], body["temperature"], body["stream"]) == (["END"], 0.2, True)
    assert body["metadata"] == {"user_id": "alice"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_what_claude_cannot_do_is_refused_by_name(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        to_messages_request({"messages": [{"role": "user", "content": "x"}], **extra}, model="claude")
    assert refused.value.field == field


def test_a_documented_message_becomes_a_chat_completion() -> None:
    completion = to_chat_completion(_json("message.json"), model="claude", created=7)
    assert completion == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "created": 7,
        "model": "claude",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi! My name is Claude."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
    }


def test_a_documented_tool_use_becomes_tool_calls() -> None:
    completion = to_chat_completion(_json("tool_use_message.json"), model="claude")
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    (call,) = choice["message"]["tool_calls"]
    assert (call["id"], call["function"]["name"]) == ("toolu_01A09q90qw90lq917835lq9", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}


def test_an_error_body_raises_with_its_kind() -> None:
    with pytest.raises(ProviderError, match="overloaded_error: Overloaded"):
        to_chat_completion(_json("error.json"), model="claude")


def test_a_documented_stream_becomes_chunks_with_usage() -> None:
    chunks = list(StreamTranslator(model="claude", include_usage=True, created=1).translate(_events("stream.sse")))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}
    assert {c["id"] for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_a_streamed_tool_call_reassembles_to_its_arguments() -> None:
    chunks = list(StreamTranslator(model="claude").translate(_events("tool_use_stream.sse")))
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in chunks[-1]


def test_a_streamed_error_raises() -> None:
    with pytest.raises(ProviderError, match="overloaded_error"):
        list(StreamTranslator(model="claude").translate(_events("error_stream.sse")))
