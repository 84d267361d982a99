"""A registered model version deployed on Ray Serve (Ray Serve LLM, a real vLLM engine on the CPU)
and called with the official `openai` client through the platform's authenticated /v1 gateway:
chat, streaming with usage, n > 1, JSON Schema output, completions, per-project visibility, usage
counters, and undeploy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from deepext.config import Settings
from deepext.models.registry import register_base_model
from deepext.models.versions import get_model_version, register_model_version
from deepext.platform import Platform
from deepext.serve.app import create_app
from deepext.serve.deployments import reconcile
from tests.helpers import uvicorn_in_thread
from tests.serve.conftest import seed_users


def _until(platform: Platform, api: str, headers: dict[str, str], state: str, timeout: float = 240) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        reconcile(platform)
        view = httpx.get(f"{api}/projects/p/deployments", headers=headers).json()
        current = [d for d in view if d["name"] == "chat"]
        if (not current and state == "stopped") or (current and current[0]["state"] == state):
            return current[0] if current else {}
        assert not current or current[0]["state"] != "failed", current[0]["error"]
        assert time.monotonic() < deadline, f"deployment still {current}"
        time.sleep(1.0)


@pytest.fixture
def served(ray_session: str, tiny_model: Path, tmp_path: Path) -> Iterator[tuple[Platform, str, dict[str, str]]]:
    from ray import serve

    platform = Platform.open(Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'm.db'}"))
    tokens = seed_users(platform)
    register_base_model(platform, "tiny-base", tiny_model, actor="test")
    register_model_version(
        platform, project="p", name="assistant", folder=tiny_model, base_model="tiny-base", actor="test"
    )
    serve.start()
    try:
        with uvicorn_in_thread(create_app(platform)) as url:
            yield platform, url, tokens
    finally:
        serve.shutdown()
        platform.close()


@pytest.mark.slow
def test_a_deployed_version_answers_the_openai_client(served: tuple[Platform, str, dict[str, str]]) -> None:
    platform, url, tokens = served
    api, maintainer = f"{url}/api/v1", {"Authorization": f"Bearer {tokens['maintainer']}"}
    import httpx

    body = {"name": "chat", "model_version": "assistant@1", "max_model_len": 256}
    created = httpx.post(f"{api}/projects/p/deployments", json=body, headers=maintainer)
    assert created.status_code == 202, created.text
    assert created.json()["state"] == "deploying"
    started = time.monotonic()
    assert _until(platform, api, maintainer, "running")["model"] == "p/chat"
    print(f"deployed in {time.monotonic() - started:.1f} s")

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=tokens["member"])
    assert [m.id for m in client.models.list().data] == ["p/chat"]
    answer = client.chat.completions.create(
        model="p/chat", messages=[{"role": "user", "content": "hello"}], max_tokens=6, n=2, temperature=1.0, seed=1
    )
    assert answer.model == "p/chat" and len(answer.choices) == 2
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="p/chat",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens >= 1 and isinstance(text, str)
    assert {c.model for c in chunks} == {"p/chat"}

    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    structured = client.chat.completions.create(
        model="p/chat",
        messages=[{"role": "user", "content": "a number"}],
        max_tokens=24,
        response_format={"type": "json_schema", "json_schema": {"name": "number", "schema": schema}},
    )
    assert isinstance(json.loads(structured.choices[0].message.content or "")["n"], int)

    completion = client.completions.create(model="p/chat", prompt="Once upon", max_tokens=4)
    assert completion.usage is not None and completion.usage.prompt_tokens > 0

    deadline = time.monotonic() + 10  # a stream is counted once its last event has gone out
    while (version := get_model_version(platform, "p", "assistant@1")).usage_requests < 4:
        assert time.monotonic() < deadline, version
        time.sleep(0.2)
    assert version.usage_requests == 4 and version.usage_tokens > 0

    outsider = openai.OpenAI(base_url=f"{url}/v1", api_key=tokens["outsider"])
    assert outsider.models.list().data == []
    with pytest.raises(openai.NotFoundError):
        outsider.chat.completions.create(model="p/chat", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="dxt_wrong").models.list()

    stopped = httpx.delete(f"{api}/projects/p/deployments/chat", headers=maintainer)
    assert stopped.status_code == 202 and stopped.json()["state"] == "stopping"
    _until(platform, api, maintainer, "stopped")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="p/chat", messages=[{"role": "user", "content": "x"}], max_tokens=2)
