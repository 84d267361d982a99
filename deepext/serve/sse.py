"""Pieces of an OpenAI stream as server-sent events (`data: {...}\n\n`), read without parsing the
JSON: the gateway and the engine's replica look at every piece of every stream."""

from __future__ import annotations

import re

_TEXT = re.compile(r'"(?:content|text)":"[^"]')  # a chat delta's or a completion's non-empty text


def carries_text(events: str) -> bool:
    """Whether `events` holds a chunk with generated text (not only a role, usage or empty delta)."""
    return _TEXT.search(events) is not None
