"""Deployment requests the platform refuses before recording anything (no Ray, no engine): a
context longer than the model can read is a 422 naming `max_model_len`, not a deployment that
fails minutes later in vLLM."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from deepext.db.models import Deployment
from deepext.models.registry import register_base_model
from deepext.models.versions import register_model_version
from tests.serve.conftest import Api


def test_a_context_longer_than_the_models_positions_is_refused_and_records_nothing(api: Api, tiny_model: Path) -> None:
    register_base_model(api.platform, "tiny-base", tiny_model, actor="test")
    register_model_version(api.platform, project="p", name="m", folder=tiny_model, base_model="tiny-base", actor="t")

    body = {"name": "chat", "model_version": "m@1", "max_model_len": 2048}  # the tiny model has 1024 positions
    refused = api.call("POST", "/projects/p/deployments", "maintainer", json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "max_model_len", error
    assert "2048" in error["message"] and "max_position_embeddings 1024" in error["message"], error
    with api.platform.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Deployment)) == 0
    assert [(row.action, row.outcome) for row in api.audit_rows(refused.headers["x-request-id"])] == [
        ("deployments.write", "invalid")
    ]

    accepted = api.call("POST", "/projects/p/deployments", "maintainer", json={**body, "max_model_len": 1024})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["max_model_len"] == 1024
