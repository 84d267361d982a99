"""A registered model version deployed on Ray Serve (Ray Serve LLM, a real vLLM engine on the CPU)
and called with the official `openai` client through the platform's authenticated /v1 gateway:
chat, streaming with usage, n > 1, JSON Schema output, completions, per-project visibility, usage
counters, and undeploy; and through the deployment's direct endpoint on Serve's HTTP port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import select

from deepext.config import Settings
from deepext.db.models import AuditEntry
from deepext.models.registry import register_base_model
from deepext.models.versions import get_model_version, register_model_version
from deepext.platform import Platform
from deepext.ports import free_port
from deepext.serve.app import create_app
from deepext.serve.deployments import reconcile
from tests.helpers import uvicorn_in_thread
from tests.serve.conftest import seed_users

SERVE_PORT = free_port()
SERVE_URL = f"http://127.0.0.1:{SERVE_PORT}"


def _until(
    platform: Platform, api: str, headers: dict[str, str], state: str, timeout: float = 240, name: str = "chat"
) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        reconcile(platform)
        view = httpx.get(f"{api}/projects/p/deployments", headers=headers).json()
        current = [d for d in view if d["name"] == name]
        if (not current and state == "stopped") or (current and current[0]["state"] == state):
            return current[0] if current else {}
        assert not current or current[0]["state"] != "failed", current[0]["error"]
        assert time.monotonic() < deadline, f"deployment still {current}"
        time.sleep(1.0)


@pytest.fixture
def served(ray_session: str, tiny_model: Path, tmp_path: Path) -> Iterator[tuple[Platform, str, dict[str, str]]]:
    """The platform, the URL of its API (uvicorn in this process), and tokens; Serve's own HTTP
    port (HAProxy) is `SERVE_URL`, where direct endpoints are."""
    from ray import serve

    platform = Platform.open(Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'm.db'}"))
    tokens = seed_users(platform)
    register_base_model(platform, "tiny-base", tiny_model, actor="test")
    register_model_version(
        platform, project="p", name="assistant", folder=tiny_model, base_model="tiny-base", actor="test"
    )
    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    try:
        with uvicorn_in_thread(create_app(platform)) as url:
            try:
                yield platform, url, tokens
            finally:  # while the API's event loop, which holds deployment handles, still runs
                serve.shutdown()
    finally:
        platform.close()


def _evaluate_through_the_gateway(platform: Platform, url: str, tokens: dict[str, str], tmp_path: Path) -> None:
    """The deployment as an evaluation target, and as its own judge, through the gateway as a
    member; the same model as a plain OpenAI-compatible endpoint; refused for a viewer."""
    from deepext.errors import Unavailable
    from deepext.eval.endpoint import GATEWAY_KINDS
    from deepext.eval.results import list_runs
    from deepext.eval.runner import evaluate
    from deepext.eval.suite import push_suite

    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Say {i}", "answer": str(i)}) + "\n" for i in range(6)))
    platform.datasets.push("p", "qa", rows, actor="test")
    judge = {"rubric": "Is it right?", "scale": "1-5", "pass_at": 4, "judge": "p/chat"}
    checks = [
        {"name": "exact", "type": "exact_match"},
        {"name": "judge", "type": "llm_judge", "severity": "info", "params": judge},
    ]
    suite = {"name": "qa", "dataset": "qa@1", "generation": {"max_new_tokens": 8}, "checks": checks}
    push_suite(platform, "p", suite, actor="test")
    before = get_model_version(platform, "p", "assistant@1").usage_requests

    run = evaluate(platform, project="p", suite="qa", target="p/chat", target_kind="deployment",
                   actor="member", gateway=f"{url}/v1")  # fmt: skip
    assert run.state == "succeeded" and run.examples_count == 6 and "deployment" in GATEWAY_KINDS
    assert get_model_version(platform, "p", "assistant@1").usage_requests == before + 12  # 6 answers, 6 verdicts
    with platform.db.session() as session:  # the run's token was revoked when it ended
        from deepext.db.models import ApiToken

        minted = session.scalars(select(ApiToken).where(ApiToken.name == "evaluation of p/chat")).all()
        assert minted and all(t.revoked_at is not None for t in minted)

    import os

    os.environ["TEST_ENDPOINT_KEY"] = tokens["member"]
    try:
        direct = evaluate(platform, project="p", suite="qa", target=f"{url}/v1#p/chat", target_kind="endpoint",
                          actor="test", caller="member", gateway=f"{url}/v1",
                          endpoint_key_env="TEST_ENDPOINT_KEY")  # fmt: skip
    finally:
        del os.environ["TEST_ENDPOINT_KEY"]
    assert direct.state == "succeeded" and direct.examples_count == 6
    with pytest.raises(Unavailable, match="403 for prompt"):
        evaluate(platform, project="p", suite="qa", target="p/chat", target_kind="deployment",
                 actor="viewer", gateway=f"{url}/v1")  # fmt: skip
    assert [r.state for r in list_runs(platform, "p")][:1] == ["failed"]


@pytest.mark.slow
def test_a_deployed_version_answers_the_openai_client(
    served: tuple[Platform, str, dict[str, str]], tiny_model: Path, tmp_path: Path
) -> None:
    """One engine for the whole test (an engine start is the slow part): the base deployment has
    LoRA slots, and the LoRA version runs on it before both are stopped."""
    platform, url, tokens = served
    api, maintainer = f"{url}/api/v1", {"Authorization": f"Bearer {tokens['maintainer']}"}
    import httpx

    body = {"name": "chat", "model_version": "assistant@1", "max_model_len": 256, "lora_slots": 2}
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

    # A streamed prompt over the deployment's length: vLLM refuses it before the stream begins, and
    # the client gets a 422 naming the length, never a server error.
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        list(client.chat.completions.create(model="p/chat", messages=[{"role": "user", "content": "word " * 400}],
                                            max_tokens=4, stream=True))  # fmt: skip
    assert "256" in str(refused.value), refused.value

    # vLLM's request model (run in the engine's replica, not the API's) refuses a malformed body: a
    # 422 naming the body.
    member = {"Authorization": f"Bearer {tokens['member']}"}
    malformed = httpx.post(f"{url}/v1/chat/completions", json={"model": "p/chat", "messages": "hi"}, headers=member)
    error = malformed.json()["error"]
    assert malformed.status_code == 422 and error["field"] == "body", malformed.text
    assert "invalid chat request" in error["message"] and "messages" in error["message"]

    # Model calls are usage, not changes: the audit log holds the two refusals and no answered call.
    with platform.db.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.resource.like("POST /v1/%"))).all()
        assert [(r.outcome, r.detail) for r in rows] == [("invalid", {"status": 422})] * 2

    _evaluate_through_the_gateway(platform, url, tokens, tmp_path)

    outsider = openai.OpenAI(base_url=f"{url}/v1", api_key=tokens["outsider"])
    assert outsider.models.list().data == []
    with pytest.raises(openai.NotFoundError):
        outsider.chat.completions.create(model="p/chat", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="dxt_wrong").models.list()

    assert created.json()["direct_path"] == "/deployments/p/chat/v1"
    _direct_endpoint(platform, tokens)

    _lora_version_beside_its_base(platform, url, tokens, tiny_model, tmp_path)

    stopped = httpx.delete(f"{api}/projects/p/deployments/chat", headers=maintainer)
    assert stopped.status_code == 202 and stopped.json()["state"] == "stopping"
    _until(platform, api, maintainer, "stopped")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="p/chat", messages=[{"role": "user", "content": "x"}], max_tokens=2)


def _direct_endpoint(platform: Platform, tokens: dict[str, str]) -> None:
    """The deployment's own endpoint, served by its engine's replica behind Serve's HAProxy: the
    same tokens, roles, public name and usage accounting as the gateway; vLLM's other routes closed."""
    import httpx

    base = f"{SERVE_URL}/deployments/p/chat/v1"
    client = openai.OpenAI(base_url=base, api_key=tokens["member"])
    assert [m.id for m in client.models.list().data] == ["p/chat"]
    before = get_model_version(platform, "p", "assistant@1").usage_requests
    hello = [{"role": "user", "content": "hello"}]

    answer = client.chat.completions.create(model="p/chat", messages=hello, max_tokens=6, n=2, temperature=1.0)
    assert answer.model == "p/chat" and len(answer.choices) == 2
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="p/chat", messages=hello, max_tokens=6, stream=True))
    assert chunks and {c.model for c in chunks} == {"p/chat"}
    assert not any(c.usage for c in chunks)  # asked for by the gate, not by the client: not passed on
    with_usage = list(client.chat.completions.create(model="p/chat", messages=hello, max_tokens=6, stream=True,
                                                     stream_options={"include_usage": True}))  # fmt: skip
    usage = [c.usage for c in with_usage if c.usage]
    assert len(usage) == 1 and usage[0].completion_tokens > 0
    completion = client.completions.create(model="p/chat", prompt="Once upon", max_tokens=4)
    assert completion.model == "p/chat" and completion.usage is not None and completion.usage.prompt_tokens > 0

    deadline = time.monotonic() + 10
    while get_model_version(platform, "p", "assistant@1").usage_requests < before + 4:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with platform.db.session() as session:
        from deepext.db.models import UsageEvent

        events = session.scalars(select(UsageEvent).order_by(UsageEvent.id.desc()).limit(4)).all()
    assert [(e.model, e.actor, e.status, e.endpoint) for e in reversed(events)] == [
        ("p/chat", "member", "ok", "chat")] * 3 + [("p/chat", "member", "ok", "completions")]  # fmt: skip
    assert all(e.completion_tokens > 0 and e.prompt_tokens > 0 for e in events)  # the streams' too
    assert events[2].ttft_ms is not None and events[2].stream

    ask = {"model": "p/chat", "messages": hello, "max_tokens": 2}
    with pytest.raises(openai.NotFoundError):  # outside the caller's projects the model does not exist
        openai.OpenAI(base_url=base, api_key=tokens["outsider"]).chat.completions.create(**ask)
    with pytest.raises(openai.PermissionDeniedError):  # a viewer may not chat
        openai.OpenAI(base_url=base, api_key=tokens["viewer"]).chat.completions.create(**ask)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="dxt_wrong").models.list()
    with pytest.raises(openai.NotFoundError, match="serves 'p/chat'"):
        client.chat.completions.create(**{**ask, "model": "p/other"})
    member = {"Authorization": f"Bearer {tokens['member']}"}
    for method, path in [("POST", "tokenize"), ("GET", "metrics"), ("POST", "v1/embeddings"), ("GET", "health")]:
        closed = httpx.request(method, f"{SERVE_URL}/deployments/p/chat/{path}", json={"prompt": "x"}, headers=member)
        assert closed.status_code == 404 and closed.json()["error"]["code"] == "not_found", (path, closed.text)
    bad = httpx.post(f"{base}/chat/completions", content=b"{not json", headers=member)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "body", bad.text
    assert get_model_version(platform, "p", "assistant@1").usage_requests == before + 4  # refusals count nothing


def _lora_adapter(base: Path, out: Path) -> tuple[Path, Path]:
    """A rank-8 LoRA adapter on `base` with random (not zero) B matrices, so it changes the
    output, and the merged model; returns (merged folder, adapter folder)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(model, config)
    tuned.save_pretrained(out / "adapter")
    tuned.merge_and_unload().save_pretrained(out / "merged")
    AutoTokenizer.from_pretrained(base).save_pretrained(out / "merged")
    return out / "merged", out / "adapter"


def _lora_version_beside_its_base(
    platform: Platform, url: str, tokens: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    """A LoRA version deployed onto the running base deployment `p/chat` (lora_slots 2): no second
    engine, its own name and counters, the adapter applied and kept loaded."""
    import httpx
    from ray import serve

    api, maintainer = f"{url}/api/v1", {"Authorization": f"Bearer {tokens['maintainer']}"}
    merged, adapter = _lora_adapter(tiny_model, tmp_path / "lora")
    register_model_version(
        platform, project="p", name="tuned", folder=merged, adapter_folder=adapter, kind="lora",
        base_model="tiny-base", actor="test",
    )  # fmt: skip

    register_model_version(
        platform,
        project="p",
        name="tuned",
        folder=merged,
        adapter_folder=adapter,
        kind="lora",
        base_model="tiny-base",
        parent="tuned@1",
        actor="test",
    )  # fmt: skip  (trained on tuned@1, which nothing serves)
    refused = httpx.post(
        f"{api}/projects/p/deployments", json={"name": "t", "model_version": "tuned@2"}, headers=maintainer
    )
    assert refused.status_code == 409 and "lora_slots" in refused.json()["error"]["message"], refused.text

    lora = httpx.post(
        f"{api}/projects/p/deployments", json={"name": "tuned", "model_version": "tuned@1"}, headers=maintainer
    )
    assert lora.status_code == 202 and lora.json()["host_deployment_id"] is not None, lora.text
    assert _until(platform, api, maintainer, "running", name="tuned")["max_model_len"] == 256  # the host's
    assert [name for name in serve.status().applications if name.startswith("deepext-model-")] == [
        f"deepext-model-{lora.json()['host_deployment_id']}"
    ]  # one engine for the two

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=tokens["member"])
    assert sorted(m.id for m in client.models.list().data) == ["p/chat", "p/tuned"]
    ask = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12, "temperature": 0.0}
    base_before = get_model_version(platform, "p", "assistant@1").usage_requests
    from_base = client.chat.completions.create(model="p/chat", **ask).choices[0].message.content
    from_lora = client.chat.completions.create(model="p/tuned", **ask)
    assert from_lora.model == "p/tuned" and from_lora.usage is not None
    assert from_lora.choices[0].message.content != from_base  # the adapter is applied
    assert client.chat.completions.create(model="p/tuned", **ask).choices[0].message.content == (
        from_lora.choices[0].message.content
    )  # and stays loaded
    streamed = client.chat.completions.create(model="p/tuned", stream=True, **ask)
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == from_lora.choices[0].message.content
    )
    deadline = time.monotonic() + 10  # counted per version: the adapter's, not the host's
    while get_model_version(platform, "p", "tuned@1").usage_requests < 3:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert get_model_version(platform, "p", "assistant@1").usage_requests == base_before + 1

    busy = httpx.delete(f"{api}/projects/p/deployments/chat", headers=maintainer)
    assert busy.status_code == 409 and "tuned" in busy.json()["error"]["message"], busy.text
    assert httpx.delete(f"{api}/projects/p/deployments/tuned", headers=maintainer).status_code == 202
    _until(platform, api, maintainer, "stopped", name="tuned")
