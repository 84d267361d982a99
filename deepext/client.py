"""A thin typed client for the deepext REST API (used by the Gradio app, CI scripts and tests).

    client = DeepextClient("http://127.0.0.1:8000")
    client.login("alice", password)                    # or DeepextClient(url, token="dxt_...")
    version = client.upload_dataset("demo", "qa", "data.jsonl")
    job = client.submit_job("demo", "grpo", config)

Answers are parsed into the same types the server declares; an error answer raises `ApiError` with
its status, code, message, field and request id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter

from deepext.datasets.service import VersionView
from deepext.eval.results import RunView
from deepext.eval.suite import SuiteView
from deepext.models.registry import BaseModelView
from deepext.models.versions import ModelVersionView
from deepext.serve.routes.audit_log import AuditRow, ChainCheck
from deepext.serve.routes.auth import LoginResponse, Me, TokenCreated, TokenPublic
from deepext.serve.routes.datasets import DatasetSummary, SplitResult, Uploaded
from deepext.serve.routes.jobs import JobDetail, MetricRow
from deepext.serve.routes.models import Lineage
from deepext.serve.routes.projects import Member, ProjectPublic
from deepext.serve.routes.users import UserPublic
from deepext.train.jobs import JobView

_CHUNK = 1024 * 1024


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None, request_id: str) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status, self.code, self.message, self.field, self.request_id = status, code, message, field, request_id


class DeepextClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/api/v1")
        self.token = token
        self._http = httpx.Client(base_url=f"{self.base_url}/api/v1", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DeepextClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- plumbing
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:500]}
            raise ApiError(
                response.status_code,
                error.get("code", "http_error"),
                error.get("message", ""),
                error.get("field"),
                response.headers.get("x-request-id", ""),
            )
        return response

    def _call(self, kind: Any, method: str, path: str, **kwargs: Any) -> Any:
        """The answer parsed as `kind` (each public method declares the type it returns)."""
        return TypeAdapter(kind).validate_python(self._request(method, path, **kwargs).json())

    # ---- auth
    def login(self, username: str, password: str) -> LoginResponse:
        answer: LoginResponse = self._call(
            LoginResponse, "POST", "/auth/login", json={"username": username, "password": password}
        )
        self.token = answer.token
        return answer

    def logout(self) -> None:
        self._request("POST", "/auth/logout")
        self.token = None

    def me(self) -> Me:
        return self._call(Me, "GET", "/auth/me")

    def create_token(
        self, name: str, *, expires_in_days: int = 90, projects: list[str] | None = None, role: str | None = None
    ) -> TokenCreated:
        body = {"name": name, "expires_in_days": expires_in_days, "projects": projects, "role": role}
        return self._call(TokenCreated, "POST", "/auth/tokens", json=body)

    def tokens(self) -> list[TokenPublic]:
        return self._call(list[TokenPublic], "GET", "/auth/tokens")

    def revoke_token(self, token_id: int) -> None:
        self._request("DELETE", f"/auth/tokens/{token_id}")

    # ---- users (admins)
    def create_user(self, username: str, password: str, *, admin: bool = False, email: str | None = None) -> UserPublic:
        body = {"username": username, "password": password, "admin": admin, "email": email}
        return self._call(UserPublic, "POST", "/users", json=body)

    def users(self) -> list[UserPublic]:
        return self._call(list[UserPublic], "GET", "/users")

    # ---- projects
    def projects(self) -> list[ProjectPublic]:
        return self._call(list[ProjectPublic], "GET", "/projects")

    def create_project(self, name: str, description: str = "") -> ProjectPublic:
        return self._call(ProjectPublic, "POST", "/projects", json={"name": name, "description": description})

    def members(self, project: str) -> list[Member]:
        return self._call(list[Member], "GET", f"/projects/{project}/members")

    def set_member(self, project: str, username: str, role: str) -> Member:
        return self._call(Member, "PUT", f"/projects/{project}/members/{username}", json={"role": role})

    def remove_member(self, project: str, username: str) -> None:
        self._request("DELETE", f"/projects/{project}/members/{username}")

    # ---- datasets
    def datasets(self, project: str) -> list[DatasetSummary]:
        return self._call(list[DatasetSummary], "GET", f"/projects/{project}/datasets")

    def dataset_versions(self, project: str, name: str) -> list[VersionView]:
        return self._call(list[VersionView], "GET", f"/projects/{project}/datasets/{name}/versions")

    def dataset_version(self, project: str, name: str, selector: str | int) -> VersionView:
        return self._call(VersionView, "GET", f"/projects/{project}/datasets/{name}/versions/{selector}")

    def preview(self, project: str, name: str, selector: str | int, rows: int = 10) -> list[dict[str, Any]]:
        path = f"/projects/{project}/datasets/{name}/versions/{selector}/preview"
        return self._call(list[dict[str, Any]], "GET", path, params={"rows": rows})

    def upload_dataset(
        self, project: str, name: str, path: Path | str, *, labels: list[str] | None = None, description: str = ""
    ) -> Uploaded:
        """Stream the file (never read whole into memory)."""
        path = Path(path)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    yield chunk

        params: dict[str, Any] = {"filename": path.name, "labels": labels or [], "description": description}
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
        return self._call(
            Uploaded,
            "POST",
            f"/projects/{project}/datasets/{name}/versions",
            params=params,
            content=chunks(),
            headers=headers,
        )

    def split_dataset(
        self, project: str, name: str, selector: str | int, *, eval_ratio: float, seed: int = 0
    ) -> SplitResult:
        path = f"/projects/{project}/datasets/{name}/versions/{selector}/split"
        return self._call(SplitResult, "POST", path, json={"eval_ratio": eval_ratio, "seed": seed})

    # ---- models
    def base_models(self) -> list[BaseModelView]:
        return self._call(list[BaseModelView], "GET", "/base-models")

    def model_versions(self, project: str, *, name: str | None = None) -> list[ModelVersionView]:
        return self._call(
            list[ModelVersionView], "GET", f"/projects/{project}/models", params={"name": name} if name else {}
        )

    def model_version(self, project: str, ref: str) -> ModelVersionView:
        return self._call(ModelVersionView, "GET", f"/projects/{project}/models/{ref}")

    def lineage(self, project: str, ref: str) -> Lineage:
        return self._call(Lineage, "GET", f"/projects/{project}/models/{ref}/lineage")

    # ---- jobs
    def submit_job(
        self,
        project: str,
        kind: str,
        config: dict[str, Any],
        *,
        name: str = "",
        priority: int = 0,
        max_retries: int = 0,
    ) -> JobView:
        body = {"kind": kind, "config": config, "name": name, "priority": priority, "max_retries": max_retries}
        return self._call(JobView, "POST", f"/projects/{project}/jobs", json=body)

    def jobs(self, project: str, *, states: list[str] | None = None) -> list[JobView]:
        return self._call(list[JobView], "GET", f"/projects/{project}/jobs", params={"state": states or []})

    def job(self, project: str, job_id: int) -> JobDetail:
        return self._call(JobDetail, "GET", f"/projects/{project}/jobs/{job_id}")

    def job_logs(self, project: str, job_id: int) -> str:
        return self._request("GET", f"/projects/{project}/jobs/{job_id}/logs").text

    def job_metrics(self, project: str, job_id: int, *, after_step: int = -1) -> list[MetricRow]:
        path = f"/projects/{project}/jobs/{job_id}/metrics"
        return self._call(list[MetricRow], "GET", path, params={"after_step": after_step})

    def cancel_job(self, project: str, job_id: int) -> JobView:
        return self._call(JobView, "POST", f"/projects/{project}/jobs/{job_id}/cancel")

    def retry_job(self, project: str, job_id: int) -> JobView:
        return self._call(JobView, "POST", f"/projects/{project}/jobs/{job_id}/retry")

    # ---- evaluations
    def push_suite(self, project: str, suite: dict[str, Any]) -> SuiteView:
        return self._call(SuiteView, "POST", f"/projects/{project}/evaluations/suites", json=suite)

    def suites(self, project: str) -> list[SuiteView]:
        return self._call(list[SuiteView], "GET", f"/projects/{project}/evaluations/suites")

    def start_evaluation(self, project: str, suite: str, target: str, *, target_kind: str = "model_version") -> JobView:
        body = {"suite": suite, "target": target, "target_kind": target_kind}
        return self._call(JobView, "POST", f"/projects/{project}/evaluations/runs", json=body)

    def evaluation_runs(self, project: str, *, suite: str | None = None) -> list[RunView]:
        params = {"suite": suite} if suite else {}
        return self._call(list[RunView], "GET", f"/projects/{project}/evaluations/runs", params=params)

    def evaluation_run(self, project: str, run_id: int) -> RunView:
        return self._call(RunView, "GET", f"/projects/{project}/evaluations/runs/{run_id}")

    # ---- audit (admins)
    def audit(self, **filters: Any) -> list[AuditRow]:
        return self._call(list[AuditRow], "GET", "/audit", params={k: v for k, v in filters.items() if v is not None})

    def verify_audit(self) -> ChainCheck:
        return self._call(ChainCheck, "GET", "/audit/verify")
