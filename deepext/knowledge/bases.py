"""Knowledge bases of a project: create, list, delete; add, list and delete documents; search.

What a knowledge base and its documents are lives in the metadata store (`knowledge_bases`,
`knowledge_documents`); their chunks and vectors live in the vector store, one collection per
knowledge base (`kb_<id>`). The metadata store is the truth: every change writes its audit row in
the same transaction; chunks are written before that transaction commits (and removed again if it
does not), and removed after a deletion commits. Chunks whose document row is gone - a removal
that failed - are never returned by `search`, and a new knowledge base clears any leftover
collection of its id.

Adding a document: bytes -> text (by suffix: .txt, .md, .pdf) -> chunks -> embeddings -> store.
The same content twice is stored once (the second call returns the first document); a new content
under an existing name is refused unless `replace=True`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deepext import audit
from deepext.db.models import KnowledgeBase, KnowledgeDocument
from deepext.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from deepext.knowledge.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, SUFFIXES, chunk_document
from deepext.knowledge.embeddings import DEFAULT_MODEL, embed_texts, embedding_model
from deepext.knowledge.store import Chunk, vector_store
from deepext.platform import Platform
from deepext.projects import check_name, get_project

log = logging.getLogger("deepext.knowledge")
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_QUERY_CHARS = 10_000
MAX_TOP_K = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class KnowledgeBaseView:
    id: int
    project: str
    name: str
    description: str
    embedding_model: str
    dimension: int
    documents: int
    chunks: int
    created_by: str
    created_at: str


@dataclass(frozen=True)
class DocumentView:
    id: int
    knowledge_base: str
    name: str
    kind: str  # text | markdown | pdf
    content_sha256: str
    size_bytes: int
    chunk_count: int
    created_by: str
    created_at: str


@dataclass(frozen=True)
class DocumentOutcome:
    document: DocumentView
    created: bool  # False: this content was already in the knowledge base, that document is returned


@dataclass(frozen=True)
class SearchHit:
    document: str  # the document's name
    chunk: int  # the chunk's position in its document
    score: float  # cosine similarity to the query, higher is closer
    text: str
    document_id: int


def collection_name(knowledge_base_id: int) -> str:
    return f"kb_{knowledge_base_id}"


def check_document_name(name: str) -> str:
    """A file name (no folders, no control characters) with a suffix the chunker reads."""
    if not 1 <= len(name) <= 255 or _CONTROL.search(name) or "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidInput(f"document name {name!r}: a file name of 1-255 characters, no folders", field="filename")
    if PurePosixPath(name).suffix.lower() not in SUFFIXES:
        raise InvalidInput(f"document {name!r}: the name must end in {', '.join(SUFFIXES)}", field="filename")
    return name


# ---- knowledge bases
def create_knowledge_base(
    platform: Platform,
    *,
    project: str,
    name: str,
    description: str = "",
    embedding_model_name: str = DEFAULT_MODEL,
    actor: str,
) -> KnowledgeBaseView:
    check_name(name, "knowledge base")
    model = embedding_model(embedding_model_name)
    store = vector_store(platform.settings)
    with platform.db.session() as session:
        owner = get_project(session, project)
        if _find(session, owner.id, name) is not None:
            raise Conflict(f"knowledge base {name!r} already exists in project {project!r}")
        row = KnowledgeBase(
            project_id=owner.id,
            name=name,
            description=description,
            embedding_model=model.name,
            dimension=model.dimension,
            created_by=actor[:64],
            created_at=dt.datetime.now(dt.UTC),
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"knowledge base {name!r} already exists in project {project!r}") from None
        collection = collection_name(row.id)
        store.drop_collection(collection)  # a leftover of an earlier row with this id is not ours
        store.create_collection(collection, model.dimension)
        audit.record(
            session,
            actor=actor,
            action="knowledge_base.create",
            resource=f"knowledge_base:{project}/{name}",
            project_id=owner.id,
            detail={"embedding_model": model.name},
        )
        return _view(session, row, project)


def list_knowledge_bases(platform: Platform, project: str) -> list[KnowledgeBaseView]:
    with platform.db.session() as session:
        owner = get_project(session, project)
        rows = session.scalars(
            select(KnowledgeBase).where(KnowledgeBase.project_id == owner.id).order_by(KnowledgeBase.name)
        )
        return [_view(session, row, project) for row in rows]


def get_knowledge_base(platform: Platform, project: str, name: str) -> KnowledgeBaseView:
    with platform.db.session() as session:
        return _view(session, _get(session, project, name), project)


def delete_knowledge_base(platform: Platform, *, project: str, name: str, actor: str) -> None:
    """Remove the knowledge base, its documents and its vector collection."""
    store = vector_store(platform.settings)
    with platform.db.session() as session:
        row = _get(session, project, name)
        audit.record(
            session,
            actor=actor,
            action="knowledge_base.delete",
            resource=f"knowledge_base:{project}/{name}",
            project_id=row.project_id,
        )
        session.delete(row)
        kb_id = row.id
    _forget(lambda: store.drop_collection(collection_name(kb_id)))


# ---- documents
def add_document(
    platform: Platform,
    *,
    project: str,
    knowledge_base: str,
    name: str,
    data: bytes,
    actor: str,
    replace: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> DocumentOutcome:
    """Chunk, embed and store a document (see the module docstring for repeats and `replace`)."""
    check_document_name(name)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"document {name!r} has {len(data)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
    digest = hashlib.sha256(data).hexdigest()
    with platform.db.session() as session:  # the cheap refusals first, before any embedding
        kb = _get(session, project, knowledge_base)
        same = _by_hash(session, kb.id, digest)
        if same is not None:
            return DocumentOutcome(_document_view(same, kb.name), created=False)
        if not replace and _by_name(session, kb.id, name) is not None:
            raise _name_taken(name, knowledge_base)
        model_name = kb.embedding_model
    chunked = chunk_document(name, data, max_chars=max_chars, overlap=overlap)
    vectors = embed_texts([c.text for c in chunked.chunks], model_name)

    store = vector_store(platform.settings)
    written: tuple[str, int] | None = None
    replaced: int | None = None
    try:
        with platform.db.session() as session:
            kb = _get(session, project, knowledge_base)
            same = _by_hash(session, kb.id, digest)  # someone added it meanwhile
            if same is not None:
                return DocumentOutcome(_document_view(same, kb.name), created=False)
            collection = collection_name(kb.id)
            old = _by_name(session, kb.id, name)
            if old is not None and not replace:
                raise _name_taken(name, knowledge_base)
            if old is not None:
                replaced = old.id
                session.delete(old)
                session.flush()
            row = KnowledgeDocument(
                knowledge_base_id=kb.id,
                name=name,
                kind=chunked.kind,
                content_sha256=digest,
                size_bytes=len(data),
                chunk_count=len(chunked.chunks),
                created_by=actor[:64],
                created_at=dt.datetime.now(dt.UTC),
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise Conflict(f"document {name!r} was added to {knowledge_base!r} at the same time; retry") from None
            store.create_collection(collection, kb.dimension)  # a no-op unless the store lost it
            written = (collection, row.id)
            store.upsert(
                collection,
                [
                    Chunk(
                        id=f"{row.id}:{c.index}",
                        vector=vectors[c.index],
                        text=c.text,
                        document_id=row.id,
                        source=name,
                        chunk_index=c.index,
                        project=project,
                    )
                    for c in chunked.chunks
                ],
            )
            audit.record(
                session,
                actor=actor,
                action="knowledge_document.replace" if replaced is not None else "knowledge_document.add",
                resource=f"knowledge_base:{project}/{knowledge_base}/{name}",
                project_id=kb.project_id,
                detail={"sha256": digest, "bytes": len(data), "chunks": len(chunked.chunks)},
            )
            view = _document_view(row, kb.name)
    except BaseException:
        if written is not None:  # the row did not commit: its chunks must not stay searchable
            collection, document_id = written
            _forget(lambda: store.delete_document(collection, document_id))
        raise
    if replaced is not None:
        _forget(lambda: store.delete_document(collection, replaced))
    return DocumentOutcome(view, created=True)


def list_documents(platform: Platform, project: str, knowledge_base: str) -> list[DocumentView]:
    with platform.db.session() as session:
        kb = _get(session, project, knowledge_base)
        query = select(KnowledgeDocument).where(KnowledgeDocument.knowledge_base_id == kb.id)
        return [_document_view(row, kb.name) for row in session.scalars(query.order_by(KnowledgeDocument.name))]


def delete_document(platform: Platform, *, project: str, knowledge_base: str, name: str, actor: str) -> None:
    store = vector_store(platform.settings)
    with platform.db.session() as session:
        kb = _get(session, project, knowledge_base)
        row = _by_name(session, kb.id, name)
        if row is None:
            raise NotFound(f"document {name!r} not found in knowledge base {knowledge_base!r}")
        audit.record(
            session,
            actor=actor,
            action="knowledge_document.delete",
            resource=f"knowledge_base:{project}/{knowledge_base}/{name}",
            project_id=kb.project_id,
        )
        session.delete(row)
        collection, document_id = collection_name(kb.id), row.id
    _forget(lambda: store.delete_document(collection, document_id))


# ---- search
def search(platform: Platform, *, project: str, knowledge_base: str, query: str, k: int = 5) -> list[SearchHit]:
    """The `k` chunks closest in meaning to `query`, best first."""
    if not query.strip():
        raise InvalidInput("the query is empty", field="query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS} characters", field="query")
    if not 1 <= k <= MAX_TOP_K:
        raise InvalidInput(f"k must be between 1 and {MAX_TOP_K}", field="k")
    with platform.db.session() as session:
        kb = _get(session, project, knowledge_base)
        kb_id, model_name = kb.id, kb.embedding_model
        ids = select(KnowledgeDocument.id).where(KnowledgeDocument.knowledge_base_id == kb_id)
        documents = set(session.scalars(ids))
    if not documents:
        return []
    vector = embed_texts([query], model_name)[0]
    hits = vector_store(platform.settings).search(collection_name(kb_id), vector, k, where={"project": project})
    return [
        SearchHit(document=h.source, chunk=h.chunk_index, score=h.score, text=h.text, document_id=h.document_id)
        for h in hits
        if h.document_id in documents  # chunks of a document deleted meanwhile are not answers
    ]


# ---- helpers
def _find(session: Session, project_id: int, name: str) -> KnowledgeBase | None:
    return session.scalar(
        select(KnowledgeBase).where(KnowledgeBase.project_id == project_id, KnowledgeBase.name == name)
    )


def _get(session: Session, project: str, name: str) -> KnowledgeBase:
    owner = get_project(session, project)
    row = _find(session, owner.id, name)
    if row is None:
        raise NotFound(f"knowledge base {name!r} not found in project {project!r}")
    return row


def _by_hash(session: Session, kb_id: int, digest: str) -> KnowledgeDocument | None:
    return session.scalar(
        select(KnowledgeDocument).where(
            KnowledgeDocument.knowledge_base_id == kb_id, KnowledgeDocument.content_sha256 == digest
        )
    )


def _by_name(session: Session, kb_id: int, name: str) -> KnowledgeDocument | None:
    return session.scalar(
        select(KnowledgeDocument).where(KnowledgeDocument.knowledge_base_id == kb_id, KnowledgeDocument.name == name)
    )


def _name_taken(name: str, knowledge_base: str) -> Conflict:
    return Conflict(
        f"knowledge base {knowledge_base!r} has another document named {name!r}; "
        "delete it first or replace it (replace=true, --replace)"
    )


def _forget(removal: Callable[[], None]) -> None:
    """Remove chunks the metadata store no longer knows; a failure is logged, not raised (the
    change itself stands, and `search` never returns such chunks)."""
    try:
        removal()
    except Exception:
        log.warning("could not remove chunks from the vector store; they stay unreachable", exc_info=True)


def _view(session: Session, row: KnowledgeBase, project: str) -> KnowledgeBaseView:
    documents, chunks = session.execute(
        select(func.count(KnowledgeDocument.id), func.coalesce(func.sum(KnowledgeDocument.chunk_count), 0)).where(
            KnowledgeDocument.knowledge_base_id == row.id
        )
    ).one()
    return KnowledgeBaseView(
        id=row.id,
        project=project,
        name=row.name,
        description=row.description,
        embedding_model=row.embedding_model,
        dimension=row.dimension,
        documents=int(documents),
        chunks=int(chunks),
        created_by=row.created_by,
        created_at=_iso(row.created_at),
    )


def _document_view(row: KnowledgeDocument, knowledge_base: str) -> DocumentView:
    return DocumentView(
        id=row.id,
        knowledge_base=knowledge_base,
        name=row.name,
        kind=row.kind,
        content_sha256=row.content_sha256,
        size_bytes=row.size_bytes,
        chunk_count=row.chunk_count,
        created_by=row.created_by,
        created_at=_iso(row.created_at),
    )


def _iso(at: dt.datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).isoformat()
