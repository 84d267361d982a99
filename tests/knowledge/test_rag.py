"""RAG message assembly: the sources go first, numbered, in one system message; the conversation
is otherwise untouched. Then once for real, against a knowledge base."""

from __future__ import annotations

import copy

import pytest

from deepext.errors import InvalidInput, NotFound
from deepext.knowledge.bases import SearchHit, add_document, create_knowledge_base
from deepext.knowledge.rag import INSTRUCTION, augment_chat, last_user_text, sources_of, with_sources
from deepext.platform import Platform

HITS = [
    SearchHit(document="tokens.md", chunk=2, score=0.81234, text="Tokens expire after 60 minutes.\n", document_id=1),
    SearchHit(document="guide.pdf", chunk=0, score=0.5, text="Run deepext login to renew.", document_id=2),
]
SOURCES = f"""{INSTRUCTION}

Sources:

[1] tokens.md (chunk 2)
Tokens expire after 60 minutes.

[2] guide.pdf (chunk 0)
Run deepext login to renew."""


def test_sources_are_prepended_as_a_numbered_system_message() -> None:
    messages = [{"role": "user", "content": "When do tokens expire?"}]
    before = copy.deepcopy(messages)
    assert with_sources(messages, HITS) == [
        {"role": "system", "content": SOURCES},
        {"role": "user", "content": "When do tokens expire?"},
    ]
    assert messages == before  # the caller's list is not changed


def test_an_existing_system_message_keeps_its_text_and_gets_the_sources() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "When do tokens expire?"},
    ]
    out = with_sources(messages, HITS)
    assert out[0] == {"role": "system", "content": f"You are terse.\n\n{SOURCES}"}
    assert out[1:] == messages[1:]


def test_no_hits_leave_the_conversation_as_it_was() -> None:
    messages = [{"role": "user", "content": "x"}]
    assert with_sources(messages, []) == messages


def test_sources_are_plain_dicts_for_the_response() -> None:
    assert sources_of(HITS) == [
        {"n": 1, "document": "tokens.md", "chunk": 2, "score": 0.8123, "text": "Tokens expire after 60 minutes.\n"},
        {"n": 2, "document": "guide.pdf", "chunk": 0, "score": 0.5, "text": "Run deepext login to renew."},
    ]


def test_the_question_is_the_last_user_message_text() -> None:
    assert last_user_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == "a"
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {}},
        {"type": "text", "text": "this"},
    ]
    assert last_user_text([{"role": "user", "content": parts}]) == "look at\nthis"
    for messages in ([], [{"role": "system", "content": "s"}], [{"role": "user", "content": "  "}]):
        with pytest.raises(InvalidInput, match="user message") as raised:
            last_user_text(messages)
        assert raised.value.field == "messages"


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is not what is tested
def test_augment_chat_retrieves_from_the_knowledge_base(platform: Platform, project: str) -> None:
    create_knowledge_base(platform, project=project, name="handbook", actor="test")
    documents = {
        "tokens.md": "# Tokens\n\nAPI tokens expire after sixty minutes; log in again to get a new one.",
        "lunch.md": "# Canteen\n\nThe canteen serves lunch from noon to two o'clock.",
    }
    for name, text in documents.items():
        add_document(platform, project=project, knowledge_base="handbook", name=name, data=text.encode(), actor="t")
    with platform.db.session() as session:
        from deepext.projects import get_project

        project_id = get_project(session, project).id
    messages = [{"role": "user", "content": "How long is my access token valid?"}]
    out, sources = augment_chat(platform, project_id, "handbook", messages, top_k=1)
    assert [s["document"] for s in sources] == ["tokens.md"]
    assert out[0]["role"] == "system" and "[1] tokens.md (chunk 0)\nTokens\n\nAPI tokens expire" in out[0]["content"]
    assert out[1:] == messages
    with pytest.raises(InvalidInput, match="top_k"):
        augment_chat(platform, project_id, "handbook", messages, top_k=0)
    with pytest.raises(NotFound, match="knowledge base 'nope'"):
        augment_chat(platform, project_id, "nope", messages)
