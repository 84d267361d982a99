"""OpenAI chat completions <-> Anthropic's Messages API, both ways, streaming included.

The gateway speaks OpenAI's chat-completions shape to every client; for Claude it sends a Messages
API request (`to_messages_request`) and turns the answer back into a chat completion
(`to_chat_completion`) or, when streaming, the server-sent events into chat-completion chunks
(`StreamTranslator`). Pure functions over JSON-shaped dicts: no network, no SDK.

What has no counterpart is refused with the field named (`n` > 1, `response_format` JSON modes,
`logprobs`), never silently dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deepext.errors import InvalidInput

DEFAULT_MAX_TOKENS = 1024
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_UNSUPPORTED = {
    "logprobs": "Claude returns no log probabilities",
    "top_logprobs": "Claude returns no log probabilities",
    "logit_bias": "Claude takes no logit bias",
    "presence_penalty": "Claude takes no presence penalty",
    "frequency_penalty": "Claude takes no frequency penalty",
}


class ProviderError(Exception):
    """An error the provider reported (HTTP error body or a streamed `error` event)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


# ---- request: OpenAI chat completion -> Messages API
def to_messages_request(chat: dict[str, Any], *, model: str) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat-completions body (`model` is the provider's name)."""
    for name, why in _UNSUPPORTED.items():
        if chat.get(name) not in (None, False, 0):
            raise InvalidInput(f"{name}: {why}", field=name)
    if (chat.get("n") or 1) != 1:
        raise InvalidInput("n: Claude returns one choice per request", field="n")
    response_format = (chat.get("response_format") or {}).get("type", "text")
    if response_format != "text":
        raise InvalidInput(f"response_format {response_format!r}: not available for Claude", field="response_format")

    system, messages = _split_messages(chat.get("messages") or [])
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": chat.get("max_completion_tokens") or chat.get("max_tokens") or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = system
    for name in ("temperature", "top_p", "stream"):
        if chat.get(name) is not None:
            body[name] = chat[name]
    stop = chat.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if chat.get("user"):
        body["metadata"] = {"user_id": chat["user"]}
    if chat.get("tools"):
        body["tools"] = [_tool(tool) for tool in chat["tools"]]
    if chat.get("tool_choice") is not None:
        body["tool_choice"] = _tool_choice(chat["tool_choice"])
    return body


def _split_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """System text apart; the rest as alternating user/assistant turns of content blocks."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in {"system", "developer"}:
            system.append(_text_of(message.get("content"), f"messages[{index}].content"))
            continue
        if role == "tool":
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id"),
                    "content": _text_of(message.get("content"), f"messages[{index}].content"),
                }
            ]
            role = "user"
        elif role in {"user", "assistant"}:
            blocks = _blocks(message.get("content"), f"messages[{index}].content")
            for call in message.get("tool_calls") or []:
                arguments = call.get("function", {}).get("arguments") or "{}"
                try:
                    tool_input = json.loads(arguments)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(
                        f"messages[{index}].tool_calls: arguments are not JSON ({exc})", field=f"messages[{index}]"
                    ) from exc
                blocks.append(
                    {"type": "tool_use", "id": call.get("id"), "name": call["function"]["name"], "input": tool_input}
                )
        else:
            raise InvalidInput(f"messages[{index}].role {role!r}: not a chat role", field=f"messages[{index}].role")
        if turns and turns[-1]["role"] == role:  # the Messages API wants the roles to alternate
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append({"type": "image", "source": _image_source(part.get("image_url", {}).get("url", ""), where)})
        else:
            raise InvalidInput(f"{where}: content part {kind!r} is not available for Claude", field=where)
    return blocks


def _image_source(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header.removeprefix("data:").removesuffix(";base64")
        if not header.endswith(";base64") or not data:
            raise InvalidInput(f"{where}: an image data URL must be base64", field=where)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _text_of(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(block["text"] for block in _blocks(content, where) if block["type"] == "text")


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    if tool.get("type") != "function" or "name" not in function:
        raise InvalidInput("tools: only function tools with a name", field="tools")
    converted = {"name": function["name"], "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": choice["function"]["name"]}
    raise InvalidInput(f"tool_choice {choice!r}: auto, none, required or a function", field="tool_choice")


# ---- response: Messages API -> OpenAI chat completion
def _usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt = sum(
        int(usage.get(key) or 0) for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    completion = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def to_chat_completion(message: dict[str, Any], *, model: str, created: int | None = None) -> dict[str, Any]:
    """The OpenAI chat completion for a Messages API answer (`model` is the name the client used)."""
    if message.get("type") == "error":
        error = message.get("error") or {}
        raise ProviderError(error.get("type", "error"), error.get("message", ""))
    texts = [block["text"] for block in message.get("content", []) if block.get("type") == "text"]
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})},
        }
        for block in message.get("content", [])
        if block.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": _usage(message.get("usage") or {}),
    }


# ---- streaming: Messages API events -> OpenAI chat-completion chunks
def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON `data:` payloads of a server-sent event stream, one per event."""
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []
    if data:
        yield json.loads("\n".join(data))


@dataclass
class StreamTranslator:
    """Feed it Messages API stream events; it returns the chat-completion chunks each one makes.
    With `include_usage`, the last chunk carries the usage and no choices, as OpenAI sends it."""

    model: str
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    _id: str = ""
    _usage: dict[str, Any] = field(default_factory=dict)
    _tool_index: dict[int, int] = field(default_factory=dict)  # content block index -> tool call index
    _finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = message.get("id", "")
            self._usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            position = len(self._tool_index)
            self._tool_index[event["index"]] = position
            call = {
                "index": position,
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                call = {
                    "index": self._tool_index.get(event["index"], 0),
                    "function": {"arguments": delta.get("partial_json", "")},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []  # thinking and signature deltas have no OpenAI counterpart
        if kind == "message_delta":
            self._finish = FINISH_REASONS.get((event.get("delta") or {}).get("stop_reason") or "", "stop")
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            return []
        if kind == "message_stop":
            chunks = [self._chunk({}, self._finish or "stop")]
            if self.include_usage:
                chunks.append({**self._chunk({}), "choices": [], "usage": _usage(self._usage)})
            return chunks
        if kind == "error":
            error = event.get("error") or {}
            raise ProviderError(error.get("type", "error"), error.get("message", ""))
        return []  # ping, content_block_stop

    def translate(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for event in events:
            yield from self.feed(event)
