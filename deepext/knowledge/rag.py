"""Retrieval-augmented chat: ground an OpenAI-style conversation in a knowledge base.

`augment_chat` searches the knowledge base with the last user message and puts the top-k chunks,
numbered, into a system message at the start of the conversation (merged into the conversation's
own first system message when it has one, since many chat templates allow only one, first). The
sources come back as plain dicts for the response: `{"n", "document", "chunk", "score", "text"}`.
When nothing is found the messages are returned unchanged.

    messages, sources = augment_chat(platform, project_id, "handbook", messages, top_k=4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepext.db.models import Project
from deepext.errors import InvalidInput, NotFound
from deepext.knowledge.bases import SearchHit, search
from deepext.platform import Platform

MAX_TOP_K = 20
INSTRUCTION = (
    "Answer the user's question using the numbered sources below when they are relevant, and cite "
    "them by number, like [1]. If the sources do not contain the answer, say so instead of guessing."
)


def augment_chat(
    platform: Platform, project_id: int, kb_name: str, messages: Sequence[dict[str, Any]], top_k: int = 4
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(messages with the retrieved sources in a leading system message, the sources)."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"rag.top_k must be between 1 and {MAX_TOP_K}", field="rag.top_k")
    question = last_user_text(messages)
    with platform.db.session() as session:
        project = session.get(Project, project_id)
        if project is None:
            raise NotFound(f"project {project_id} not found")
        project_name = project.name
    hits = search(platform, project=project_name, knowledge_base=kb_name, query=question, k=top_k)
    return with_sources(messages, hits), sources_of(hits)


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the last user message (text parts joined when its content is a list)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = content_text(message.get("content"))
            if text.strip():
                return text
            break
    raise InvalidInput("retrieval needs a user message with text", field="messages")


def content_text(content: Any) -> str:
    """An OpenAI message content as text: a string, or the `text` of its `{"type": "text"}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def sources_of(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    return [
        {"n": n, "document": h.document, "chunk": h.chunk, "score": round(h.score, 4), "text": h.text}
        for n, h in enumerate(hits, start=1)
    ]


def context_block(hits: Sequence[SearchHit]) -> str:
    """The instruction and the numbered sources, as the system message states them."""
    sources = "\n\n".join(
        f"[{n}] {h.document} (chunk {h.chunk})\n{h.text.strip()}" for n, h in enumerate(hits, start=1)
    )
    return f"{INSTRUCTION}\n\nSources:\n\n{sources}"


def with_sources(messages: Sequence[dict[str, Any]], hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    """A new message list: the sources in front (the input is not changed)."""
    out = [dict(m) for m in messages]
    if not hits:
        return out
    block = context_block(hits)
    if out and out[0].get("role") == "system":
        own = content_text(out[0].get("content"))
        out[0]["content"] = f"{own}\n\n{block}" if own.strip() else block
        return out
    return [{"role": "system", "content": block}, *out]
