"""Knowledge bases of a project and their documents; semantic search; near-duplicate rows of a
dataset version. Reading and searching need `knowledge.read`, changes `knowledge.write`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from deepext.errors import InvalidInput, PayloadTooLarge, invalid_config
from deepext.knowledge import bases
from deepext.knowledge.bases import MAX_DOCUMENT_BYTES, MAX_QUERY_CHARS, MAX_TOP_K, DocumentView, KnowledgeBaseView
from deepext.knowledge.bases import SearchHit as Hit
from deepext.knowledge.duplicates import MAX_PAIRS, NearDuplicateReport, find_near_duplicates
from deepext.knowledge.embeddings import DEFAULT_MODEL
from deepext.serve.deps import Access, PlatformDep, allow

router = APIRouter(prefix="/projects/{project}/knowledge-bases", tags=["knowledge"])
duplicates_router = APIRouter(prefix="/projects/{project}/datasets", tags=["knowledge"])


class KnowledgeBaseCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=10_000)
    embedding_model: str = Field(DEFAULT_MODEL, min_length=1, max_length=128)


class DocumentText(BaseModel):
    """A text or Markdown document sent as JSON (PDFs are sent as raw bytes)."""

    filename: str = Field(min_length=1, max_length=255, description="notes.md, guide.txt, ...")
    text: str = Field(max_length=MAX_DOCUMENT_BYTES)


class DocumentAdded(BaseModel):
    created: bool = Field(description="False when this content was already in the knowledge base.")
    document: DocumentView


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(5, ge=1, le=MAX_TOP_K)


class NearDuplicatesRequest(BaseModel):
    field: str | None = Field(
        None, min_length=1, max_length=256, description="The column to compare; none: whole rows."
    )
    threshold: float = Field(0.9, gt=0, le=1, description="Least cosine similarity of a reported pair.")
    max_pairs: int = Field(MAX_PAIRS, ge=1, le=100_000)


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DocumentText.model_json_schema()},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.get("")
def knowledge_bases(
    project: str, access: Annotated[Access, allow("knowledge", "read")], platform: PlatformDep
) -> list[KnowledgeBaseView]:
    return bases.list_knowledge_bases(platform, access.project_name)


@router.post("", status_code=201)
def create_knowledge_base(
    project: str,
    body: KnowledgeBaseCreate,
    access: Annotated[Access, allow("knowledge", "write")],
    platform: PlatformDep,
) -> KnowledgeBaseView:
    return bases.create_knowledge_base(
        platform,
        project=access.project_name,
        name=body.name,
        description=body.description,
        embedding_model_name=body.embedding_model,
        actor=access.actor,
    )


@router.get("/{name}")
def knowledge_base(
    project: str, name: str, access: Annotated[Access, allow("knowledge", "read")], platform: PlatformDep
) -> KnowledgeBaseView:
    return bases.get_knowledge_base(platform, access.project_name, name)


@router.delete("/{name}", status_code=204)
def delete_knowledge_base(
    project: str, name: str, access: Annotated[Access, allow("knowledge", "write")], platform: PlatformDep
) -> Response:
    bases.delete_knowledge_base(platform, project=access.project_name, name=name, actor=access.actor)
    return Response(status_code=204)


@router.get("/{name}/documents")
def documents(
    project: str, name: str, access: Annotated[Access, allow("knowledge", "read")], platform: PlatformDep
) -> list[DocumentView]:
    return bases.list_documents(platform, access.project_name, name)


@router.post("/{name}/documents", status_code=201, openapi_extra=_UPLOAD_BODY)
async def add_document(
    project: str,
    name: str,
    request: Request,
    response: Response,
    access: Annotated[Access, allow("knowledge", "write")],
    platform: PlatformDep,
    filename: Annotated[
        str | None, Query(min_length=1, max_length=255, description="The document's name, for a raw-bytes body.")
    ] = None,
    replace: Annotated[bool, Query(description="Replace a document of the same name.")] = False,
) -> DocumentAdded:
    """Add a document: JSON `{"filename", "text"}`, or the file's bytes (.txt, .md, .pdf) with
    `?filename=`. 200 with the existing document when this content was added before."""
    limit = min(MAX_DOCUMENT_BYTES, platform.settings.api_max_upload_mb * 1024 * 1024)
    is_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
    body_limit = 2 * limit if is_json else limit  # JSON escapes make text longer on the wire
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        raise PayloadTooLarge(f"document of {int(declared)} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > body_limit:
            raise PayloadTooLarge(f"document exceeds the limit of {limit} bytes")
    if is_json:
        try:
            sent = DocumentText.model_validate_json(bytes(body))
        except ValidationError as exc:
            raise invalid_config("document", exc) from None
        document_name, data = sent.filename, sent.text.encode("utf-8")
    else:
        if filename is None:
            raise InvalidInput("send JSON {filename, text}, or the file's bytes with ?filename=", field="filename")
        document_name, data = filename, bytes(body)
    if not data.strip():
        raise InvalidInput("the document is empty", field="text" if is_json else "body")
    outcome = await run_in_threadpool(
        bases.add_document,
        platform,
        project=access.project_name,
        knowledge_base=name,
        name=document_name,
        data=data,
        actor=access.actor,
        replace=replace,
    )
    if not outcome.created:
        response.status_code = 200
    return DocumentAdded(created=outcome.created, document=outcome.document)


@router.delete("/{name}/documents/{document}", status_code=204)
def delete_document(
    project: str,
    name: str,
    document: str,
    access: Annotated[Access, allow("knowledge", "write")],
    platform: PlatformDep,
) -> Response:
    bases.delete_document(platform, project=access.project_name, knowledge_base=name, name=document, actor=access.actor)
    return Response(status_code=204)


@router.post("/{name}/search")
def search(
    project: str,
    name: str,
    body: SearchRequest,
    access: Annotated[Access, allow("knowledge", "read")],
    platform: PlatformDep,
) -> list[Hit]:
    """The `k` chunks closest in meaning to `query`, best first."""
    return bases.search(platform, project=access.project_name, knowledge_base=name, query=body.query, k=body.k)


@duplicates_router.post("/{ref}/near-duplicates")
def near_duplicates(
    project: str,
    ref: str,
    body: NearDuplicatesRequest,
    access: Annotated[Access, allow("knowledge", "read")],
    platform: PlatformDep,
) -> NearDuplicateReport:
    """Pairs of rows of the version `ref` (NAME, NAME@N, NAME@LABEL) whose texts mean nearly the same."""
    return find_near_duplicates(
        platform,
        project=access.project_name,
        dataset=ref,
        field=body.field,
        threshold=body.threshold,
        max_pairs=body.max_pairs,
    )
