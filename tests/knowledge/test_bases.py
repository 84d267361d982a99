"""Knowledge bases in the metadata store and the vector store together, on SQLite and PostgreSQL:
documents in, search out, repeats stored once, audit rows, and no chunks left behind."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from deepext import audit
from deepext.db.models import AuditEntry
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.knowledge import bases
from deepext.knowledge.bases import (
    add_document,
    collection_name,
    create_knowledge_base,
    delete_document,
    delete_knowledge_base,
    get_knowledge_base,
    list_documents,
    list_knowledge_bases,
    search,
)
from deepext.knowledge.store import vector_store
from deepext.platform import Platform

TOKENS = b"# Tokens\n\nAPI tokens expire after sixty minutes.\n\n## Renewal\n\nRun deepext login to get a new token."
LUNCH = b"The canteen serves lunch from noon to two o'clock, and soup on Fridays."


def _actions(platform: Platform) -> list[str]:
    with platform.db.session() as session:
        return list(session.scalars(select(AuditEntry.action).where(AuditEntry.action.startswith("knowledge"))))


def test_knowledge_bases_are_created_listed_and_refused_twice(platform: Platform, project: str) -> None:
    view = create_knowledge_base(platform, project=project, name="handbook", description="HR", actor="alice")
    assert (view.name, view.embedding_model, view.dimension, view.documents, view.chunks) == (
        "handbook",
        "all-MiniLM-L6-v2",
        384,
        0,
        0,
    )
    assert vector_store(platform.settings).has_collection(collection_name(view.id))
    assert [kb.name for kb in list_knowledge_bases(platform, project)] == ["handbook"]
    with pytest.raises(Conflict, match="already exists"):
        create_knowledge_base(platform, project=project, name="handbook", actor="alice")
    with pytest.raises(InvalidInput, match="knowledge base name 'Bad Name'"):
        create_knowledge_base(platform, project=project, name="Bad Name", actor="alice")
    with pytest.raises(InvalidInput, match="unknown embedding model"):
        create_knowledge_base(platform, project=project, name="other", embedding_model_name="nope", actor="alice")
    with pytest.raises(NotFound, match="knowledge base 'ghost' not found"):
        get_knowledge_base(platform, project, "ghost")
    assert search(platform, project=project, knowledge_base="handbook", query="anything") == []  # empty: no model
    assert _actions(platform) == ["knowledge_base.create"]


@pytest.mark.slow
def test_documents_are_added_once_searched_and_deleted(platform: Platform, project: str) -> None:
    create_knowledge_base(platform, project=project, name="handbook", actor="alice")
    first = add_document(platform, project=project, knowledge_base="handbook", name="tokens.md", data=TOKENS, actor="a")
    assert first.created and first.document.kind == "markdown" and first.document.chunk_count == 2
    again = add_document(platform, project=project, knowledge_base="handbook", name="copy.md", data=TOKENS, actor="a")
    assert not again.created and again.document.id == first.document.id  # same content: stored once
    add_document(platform, project=project, knowledge_base="handbook", name="lunch.txt", data=LUNCH, actor="a")
    kb = get_knowledge_base(platform, project, "handbook")
    assert (kb.documents, kb.chunks) == (2, 3)
    assert [d.name for d in list_documents(platform, project, "handbook")] == ["lunch.txt", "tokens.md"]

    hits = search(platform, project=project, knowledge_base="handbook", query="how do I renew my token?", k=3)
    assert (hits[0].document, hits[0].chunk) == ("tokens.md", 1)
    assert hits[0].text == "Tokens > Renewal\n\nRun deepext login to get a new token."
    assert hits[0].score > hits[-1].score and hits[-1].document == "lunch.txt"

    with pytest.raises(Conflict, match=r"another document named 'lunch\.txt'"):
        add_document(platform, project=project, knowledge_base="handbook", name="lunch.txt", data=b"new", actor="a")
    replaced = add_document(
        platform,
        project=project,
        knowledge_base="handbook",
        name="lunch.txt",
        data=b"Dinner at seven.",
        replace=True,
        actor="a",
    )
    assert replaced.created and replaced.document.id != first.document.id
    store, collection = vector_store(platform.settings), collection_name(kb.id)
    assert store.count(collection) == 3  # the replaced document's chunk is gone

    delete_document(platform, project=project, knowledge_base="handbook", name="tokens.md", actor="a")
    assert [h.document for h in search(platform, project=project, knowledge_base="handbook", query="token")] == [
        "lunch.txt"
    ]
    assert store.count(collection) == 1
    with pytest.raises(NotFound, match=r"document 'tokens\.md' not found"):
        delete_document(platform, project=project, knowledge_base="handbook", name="tokens.md", actor="a")

    delete_knowledge_base(platform, project=project, name="handbook", actor="alice")
    assert not store.has_collection(collection)
    assert list_knowledge_bases(platform, project) == []
    assert _actions(platform) == [
        "knowledge_base.create",
        "knowledge_document.add",
        "knowledge_document.add",
        "knowledge_document.replace",
        "knowledge_document.delete",
        "knowledge_base.delete",
    ]


def test_bad_documents_are_refused_before_any_embedding(platform: Platform, project: str) -> None:
    create_knowledge_base(platform, project=project, name="kb", actor="a")
    for name, field in [("a/b.md", "filename"), ("notes.docx", "filename"), ("bad\x00.md", "filename")]:
        with pytest.raises(InvalidInput) as raised:
            add_document(platform, project=project, knowledge_base="kb", name=name, data=b"x", actor="a")
        assert raised.value.field == field
    with pytest.raises(NotFound):
        add_document(platform, project=project, knowledge_base="missing", name="a.md", data=b"x", actor="a")
    with pytest.raises(InvalidInput, match="query is empty"):
        search(platform, project=project, knowledge_base="kb", query="  ")
    with pytest.raises(InvalidInput, match="k must be between 1 and 100"):
        search(platform, project=project, knowledge_base="kb", query="x", k=101)


@pytest.mark.slow
def test_chunks_of_a_document_whose_row_did_not_commit_are_removed(
    platform: Platform, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = create_knowledge_base(platform, project=project, name="kb", actor="a")

    def failing_record(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(bases.audit, "record", failing_record)
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        add_document(platform, project=project, knowledge_base="kb", name="a.txt", data=LUNCH, actor="a")
    monkeypatch.setattr(bases.audit, "record", audit.record)
    assert vector_store(platform.settings).count(collection_name(kb.id)) == 0
    assert list_documents(platform, project, "kb") == []
