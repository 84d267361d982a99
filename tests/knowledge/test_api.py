"""The knowledge routes through the real app, on SQLite and PostgreSQL: who may do what, uploads
as JSON and as raw bytes (a PDF), repeats, search, deletion, audit rows, near-duplicates, and bad
input as 4xx JSON."""

from __future__ import annotations

import json

import pytest

from tests.knowledge.test_chunking import make_pdf
from tests.serve.conftest import Api

KB = "/projects/p/knowledge-bases"
TOKENS_MD = "# Tokens\n\nAPI tokens expire after sixty minutes.\n\n## Renewal\n\nRun deepext login to get a new token."


def _create(api: Api, name: str = "handbook", caller: str = "maintainer") -> None:
    response = api.call("POST", KB, caller, json={"name": name, "description": "what we know"})
    assert response.status_code == 201, response.text


def test_roles_and_bad_input_on_knowledge_bases(api: Api) -> None:
    assert api.call("POST", KB, "member", json={"name": "handbook"}).status_code == 403
    _create(api)
    again = api.call("POST", KB, "owner", json={"name": "handbook"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    bad = api.call("POST", KB, "owner", json={"name": "No Spaces"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "name"
    unknown = api.call("POST", KB, "owner", json={"name": "x", "embedding_model": "bert"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "embedding_model"

    listed = api.call("GET", KB, "viewer").json()
    assert [(kb["name"], kb["embedding_model"], kb["dimension"], kb["documents"]) for kb in listed] == [
        ("handbook", "all-MiniLM-L6-v2", 384, 0)
    ]
    assert api.call("GET", f"{KB}/handbook", "viewer").json()["description"] == "what we know"
    assert api.call("GET", f"{KB}/handbook", "outsider").status_code == 404  # another project's
    missing = api.call("GET", f"{KB}/ghost", "viewer")
    assert missing.status_code == 404 and "knowledge base 'ghost' not found" in missing.json()["error"]["message"]

    for kwargs, field in [
        ({"json": {}}, "filename"),
        ({"json": {"filename": "a.docx", "text": "x"}}, "filename"),
        ({"json": {"filename": "a.md", "text": "  "}}, "text"),
        ({"content": b"raw bytes"}, "filename"),
        ({"content": b"%PDF-1.4 broken", "params": {"filename": "x.pdf"}}, "file"),
    ]:
        response = api.call("POST", f"{KB}/handbook/documents", "maintainer", **kwargs)
        assert response.status_code == 422, (kwargs, response.text)
        assert response.json()["error"]["field"] == field, response.text
    assert api.call("POST", f"{KB}/handbook/search", "viewer", json={"query": "x", "k": 0}).status_code == 422
    assert api.call("POST", f"{KB}/handbook/search", "viewer", json={"query": "x"}).json() == []  # no documents yet

    assert api.call("DELETE", f"{KB}/handbook", "member").status_code == 403
    assert api.call("DELETE", f"{KB}/handbook", "owner").status_code == 204
    assert api.call("GET", f"{KB}/handbook", "owner").status_code == 404


@pytest.mark.slow
def test_documents_are_uploaded_searched_and_deleted_and_dataset_rows_compared(api: Api) -> None:
    _create(api)
    added = api.call(
        "POST", f"{KB}/handbook/documents", "maintainer", json={"filename": "tokens.md", "text": TOKENS_MD}
    )
    assert added.status_code == 201, added.text
    assert added.json()["created"] is True and added.json()["document"]["chunk_count"] == 2
    rows = api.audit_rows(added.headers["x-request-id"])
    assert [(r.action, r.actor, r.outcome) for r in rows] == [("knowledge_document.add", "maintainer", "ok")]

    repeat = api.call("POST", f"{KB}/handbook/documents", "owner", json={"filename": "again.md", "text": TOKENS_MD})
    assert repeat.status_code == 200 and repeat.json()["created"] is False
    assert repeat.json()["document"]["name"] == "tokens.md"

    pdf = make_pdf(["The canteen serves lunch from noon.", "Soup is served on Fridays."])
    uploaded = api.call("POST", f"{KB}/handbook/documents", "owner", params={"filename": "canteen.pdf"}, content=pdf)
    assert uploaded.status_code == 201 and uploaded.json()["document"]["kind"] == "pdf"
    refused = api.call("POST", f"{KB}/handbook/documents", "member", json={"filename": "x.md", "text": "x"})
    assert refused.status_code == 403

    documents = api.call("GET", f"{KB}/handbook/documents", "viewer").json()
    assert [(d["name"], d["kind"], d["chunk_count"]) for d in documents] == [
        ("canteen.pdf", "pdf", 1),
        ("tokens.md", "markdown", 2),
    ]

    hits = api.call("POST", f"{KB}/handbook/search", "viewer", json={"query": "when is lunch?", "k": 2}).json()
    assert [h["document"] for h in hits] == ["canteen.pdf", "tokens.md"]
    assert hits[0]["text"].startswith("The canteen serves lunch") and hits[0]["score"] > hits[1]["score"]
    assert set(hits[0]) == {"document", "chunk", "score", "text", "document_id"}

    assert api.call("DELETE", f"{KB}/handbook/documents/canteen.pdf", "member").status_code == 403
    deleted = api.call("DELETE", f"{KB}/handbook/documents/canteen.pdf", "maintainer")
    assert deleted.status_code == 204
    assert [r.action for r in api.audit_rows(deleted.headers["x-request-id"])] == ["knowledge_document.delete"]
    hits = api.call("POST", f"{KB}/handbook/search", "member", json={"query": "when is lunch?"}).json()
    assert {h["document"] for h in hits} == {"tokens.md"}
    assert api.call("DELETE", f"{KB}/handbook/documents/canteen.pdf", "maintainer").status_code == 404

    # Near-duplicate rows of a dataset version, with the same model.
    qa_rows = [
        {"prompt": "How can I reset my password?", "completion": "Settings."},
        {"prompt": "What is the capital of France?", "completion": "Paris."},
        {"prompt": "What's the way to reset my password?", "completion": "Settings page."},
    ]
    body = "".join(json.dumps(row) + "\n" for row in qa_rows)
    pushed = api.call(
        "POST", "/projects/p/datasets/qa/versions", "owner", params={"filename": "qa.jsonl"}, content=body
    )
    assert pushed.status_code == 201, pushed.text
    url = "/projects/p/datasets/qa@1/near-duplicates"
    report = api.call("POST", url, "viewer", json={"field": "prompt", "threshold": 0.8})
    assert report.status_code == 200, report.text
    found = report.json()
    assert (found["dataset"], found["rows"], found["total_pairs"]) == ("p/qa@1", 3, 1)
    assert [(p["first"], p["second"]) for p in found["pairs"]] == [(0, 2)]
    bad = api.call("POST", url, "viewer", json={"field": "question"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "field"
    assert api.call("POST", url, "viewer", json={"threshold": 1.5}).status_code == 422
    assert api.call("POST", url, "outsider", json={}).status_code == 404
