"""A thin typed client for the deepext REST API (used by the Gradio app, CI scripts and tests).

    client = DeepextClient("http://127.0.0.1:8000")
    client.login("alice", password)                    # or DeepextClient(url, token="dxt_...")
    version = client.upload_dataset("demo", "qa", "data.jsonl")
    job = client.submit_job("demo", "grpo", config)

Answers are parsed into the same types the server declares; an error answer raises `ApiError` with
its status, code, message, field and request id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
from pydantic import TypeAdapter

from deepext.dashboard import Dashboard
from deepext.datasets.service import VersionView
from deepext.eval.compare import Comparison
from deepext.eval.results import ExampleResult, RunView
from deepext.eval.suite import SuiteView
from deepext.knowledge.bases import KnowledgeBaseView
from deepext.models.registry import BaseModelView
from deepext.models.versions import ModelVersionView
from deepext.serve.deployments import DeploymentView
from deepext.serve.providers.probe import ProviderProbe
from deepext.serve.providers.registry import ProviderPublic
from deepext.serve.routes.audit_log import AuditRow, ChainCheck
from deepext.serve.routes.auth import LoginResponse, Me, TokenCreated, TokenPublic
from deepext.serve.routes.datasets import DatasetSummary, SplitResult, Uploaded
from deepext.serve.routes.jobs import JobDetail, MetricRow
from deepext.serve.routes.models import Lineage
from deepext.serve.routes.projects import Member, ProjectPublic
from deepext.serve.routes.users import UserPublic
from deepext.train.compare import Comparison as JobComparison
from deepext.train.jobs import JobView
from deepext.train.profiles import ProfileView
from deepext.train.trials import TrialView

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
            self._raise(response)
        return response

    @staticmethod
    def _raise(response: httpx.Response) -> NoReturn:
        """The error answer as an `ApiError` (its JSON `error` body, or the text of a non-JSON one)."""
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
        self,
        project: str,
        name: str,
        path: Path | str,
        *,
        labels: list[str] | None = None,
        description: str = "",
        progress: Callable[[int, int], None] | None = None,
    ) -> Uploaded:
        """Stream the file (never read whole into memory); `progress(sent, total)` after each chunk."""
        path = Path(path)
        total = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            sent = 0
            with path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    yield chunk
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, total)

        params: dict[str, Any] = {"filename": path.name, "labels": labels or [], "description": description}
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(total)}
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

    def change_model_version(
        self,
        project: str,
        ref: str,
        *,
        stage: str | None = None,
        add_tags: list[str] | None = None,
        remove_tags: list[str] | None = None,
    ) -> ModelVersionView:
        """Move a version to `stage`, or add / remove tags (the API takes one kind of change per call)."""
        body: dict[str, Any] = {"stage": stage} if stage is not None else {}
        body |= {"add_tags": add_tags or [], "remove_tags": remove_tags or []}
        return self._call(ModelVersionView, "PATCH", f"/projects/{project}/models/{ref}", json=body)

    # ---- deployments
    def deployments(self, project: str) -> list[DeploymentView]:
        return self._call(list[DeploymentView], "GET", f"/projects/{project}/deployments")

    def deploy(self, project: str, name: str, model_version: str, **settings: Any) -> DeploymentView:
        """Deploy `model_version` as PROJECT/`name`; `settings`: min_replicas, max_replicas,
        cpus_per_replica, gpus_per_replica, max_model_len, lora_slots."""
        body = {"name": name, "model_version": model_version, **settings}
        return self._call(DeploymentView, "POST", f"/projects/{project}/deployments", json=body)

    def undeploy(self, project: str, name: str) -> DeploymentView:
        return self._call(DeploymentView, "DELETE", f"/projects/{project}/deployments/{name}")

    # ---- providers (keys go in, never come out)
    def providers(self, project: str) -> list[ProviderPublic]:
        return self._call(list[ProviderPublic], "GET", f"/projects/{project}/providers")

    def create_provider(self, project: str, spec: dict[str, Any]) -> ProviderPublic:
        return self._call(ProviderPublic, "POST", f"/projects/{project}/providers", json=spec)

    def update_provider(self, project: str, name: str, changes: dict[str, Any]) -> ProviderPublic:
        """Change the given fields; `{"api_key": None}` removes the key."""
        return self._call(ProviderPublic, "PATCH", f"/projects/{project}/providers/{name}", json=changes)

    def test_provider(
        self, project: str, spec: dict[str, Any] | None = None, *, name: str | None = None
    ) -> ProviderProbe:
        """Test a provider spec before saving it, or (`name=`) a saved provider with its stored key."""
        if name is not None:
            return self._call(ProviderProbe, "POST", f"/projects/{project}/providers/{name}/test")
        return self._call(ProviderProbe, "POST", f"/projects/{project}/providers/test", json=spec)

    def delete_provider(self, project: str, name: str) -> None:
        self._request("DELETE", f"/projects/{project}/providers/{name}")

    # ---- knowledge bases
    def knowledge_bases(self, project: str) -> list[KnowledgeBaseView]:
        return self._call(list[KnowledgeBaseView], "GET", f"/projects/{project}/knowledge-bases")

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
        profile: str | None = None,
    ) -> JobView:
        body = {"kind": kind, "config": config, "name": name, "priority": priority, "max_retries": max_retries}
        if profile:
            body["profile"] = profile
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

    def job_trials(self, project: str, job_id: int) -> list[TrialView]:
        return self._call(list[TrialView], "GET", f"/projects/{project}/jobs/{job_id}/trials")

    def cancel_job(self, project: str, job_id: int) -> JobView:
        return self._call(JobView, "POST", f"/projects/{project}/jobs/{job_id}/cancel")

    def retry_job(self, project: str, job_id: int) -> JobView:
        return self._call(JobView, "POST", f"/projects/{project}/jobs/{job_id}/retry")

    def export_model_version(
        self,
        project: str,
        ref: str,
        *,
        quantizations: list[str] | None = None,
        ollama: bool = False,
        lmstudio: bool = False,
    ) -> JobView:
        body = {"quantizations": quantizations or ["f16", "q8_0"], "ollama": ollama, "lmstudio": lmstudio}
        return self._call(JobView, "POST", f"/projects/{project}/models/{ref}/export", json=body)

    def compare_jobs(self, project: str, job_ids: list[int]) -> JobComparison:
        return self._call(JobComparison, "GET", f"/projects/{project}/jobs/compare", params={"ids": job_ids})

    def save_profile(
        self, project: str, name: str, kind: str, settings: dict[str, Any], *, description: str = ""
    ) -> ProfileView:
        body = {"name": name, "kind": kind, "settings": settings, "description": description}
        return self._call(ProfileView, "POST", f"/projects/{project}/profiles", json=body)

    def profiles(self, project: str, *, name: str | None = None) -> list[ProfileView]:
        params = {"name": name} if name else {}
        return self._call(list[ProfileView], "GET", f"/projects/{project}/profiles", params=params)

    def profile(self, project: str, ref: str) -> ProfileView:
        return self._call(ProfileView, "GET", f"/projects/{project}/profiles/{ref}")

    def dashboard(self, project: str) -> Dashboard:
        return self._call(Dashboard, "GET", f"/projects/{project}/dashboard")

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

    def evaluation_examples(
        self, project: str, run_id: int, *, failed_only: bool = False, limit: int = 100, offset: int = 0
    ) -> list[ExampleResult]:
        """A run's examples (the row, prompt, output and each check's verdict with its reason)."""
        params = {"failed_only": failed_only, "limit": limit, "offset": offset}
        path = f"/projects/{project}/evaluations/runs/{run_id}/examples"
        return self._call(list[ExampleResult], "GET", path, params=params)

    def compare_evaluations(self, project: str, baseline: int, candidate: int) -> Comparison:
        params = {"baseline": baseline, "candidate": candidate}
        return self._call(Comparison, "GET", f"/projects/{project}/evaluations/compare", params=params)

    # ---- audit (admins)
    def audit(self, **filters: Any) -> list[AuditRow]:
        return self._call(list[AuditRow], "GET", "/audit", params={k: v for k, v in filters.items() if v is not None})

    def verify_audit(self) -> ChainCheck:
        return self._call(ChainCheck, "GET", "/audit/verify")

    def export_audit(self, format: str = "jsonl", **filters: Any) -> bytes:
        """Every matching audit row, oldest first, as JSON lines or CSV."""
        params = {"format": format, **{k: v for k, v in filters.items() if v is not None}}
        return self._request("GET", "/audit/export", params=params).content

    def update_user(
        self, username: str, *, active: bool | None = None, admin: bool | None = None, password: str | None = None
    ) -> UserPublic:
        body = {"active": active, "admin": admin, "password": password}
        return self._call(UserPublic, "PATCH", f"/users/{username}", json=body)

    # ---- the OpenAI-compatible gateway (/v1, beside /api/v1)
    def _openai(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._request(method, f"{self.base_url}/v1{path}", **kwargs)

    def chat_models(self) -> list[str]:
        """The model names the caller may chat with (`PROJECT/NAME`, `PROJECT/PROVIDER/MODEL`)."""
        return [card["id"] for card in self._openai("GET", "/models").json()["data"]]

    def chat_stream(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        rag: dict[str, Any] | None = None,
        on_sources: Callable[[list[dict[str, Any]]], None] | None = None,
        **sampling: Any,
    ) -> Iterator[str]:
        """The assistant's answer to `messages`, piece by piece as the model streams it. With `rag`
        (`{"knowledge_base": NAME, "top_k": K}`) the gateway retrieves first and sends the passages it
        used as one `{"sources": [...]}` event before the answer; `on_sources` receives them."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"model": model, "messages": messages, "stream": True, **sampling}
        if rag is not None:
            body["rag"] = rag
        url = f"{self.base_url}/v1/chat/completions"
        with self._http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                self._raise(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"]
                    raise ApiError(500, error.get("code", "stream_error"), error.get("message", ""), None, "")
                if "sources" in chunk and not chunk.get("choices"):  # the gateway's RAG event
                    if on_sources is not None:
                        on_sources(list(chunk["sources"]))
                    continue
                for choice in chunk.get("choices", []):
                    if piece := (choice.get("delta") or {}).get("content"):
                        yield piece
