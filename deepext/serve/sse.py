"""Pieces of an OpenAI stream as server-sent events (`data: {...}\n\n`), read without parsing the
JSON: the gateway and the engine's replica look at every piece of every stream."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

_TEXT = re.compile(r'"(?:content|text)":"[^"]')  # a chat delta's or a completion's non-empty text


def carries_text(events: str) -> bool:
    """Whether `events` holds a chunk with generated text (not only a role, usage or empty delta)."""
    return _TEXT.search(events) is not None


def renamed(events: str, engine_model: str, public_name: str) -> str:
    """`events` with the engine's model id replaced by the name the client called."""
    field = f'"model":{json.dumps(public_name)}'
    return _model_field(engine_model).sub(lambda _: field, events)


@functools.lru_cache(maxsize=256)
def _model_field(engine_model: str) -> re.Pattern[str]:
    """The `"model": "<id>"` field of the engine's JSON, made once per id (it runs on every piece)."""
    return re.compile(r'"model":\s*' + re.escape(json.dumps(engine_model)))


def last_usage(events: str) -> dict[str, Any] | None:
    """The last `usage` object in `events`, if any."""
    for event in reversed(events.split("\n\n")):
        payload = event.removeprefix("data: ").strip()
        if payload.startswith("{") and '"usage":{' in payload:
            usage = json.loads(payload).get("usage")
            if usage:
                return dict(usage)
    return None


def without_usage_chunks(events: str) -> str:
    """`events` without the usage-only chunks (no choices) the platform asked the engine for."""
    kept = [e for e in events.split("\n\n") if not ('"usage":{' in e and '"choices":[]' in e)]
    return "\n\n".join(kept)
