"""The gateway in front of a real OpenAI-compatible server no one here wrote: vLLM's own
`python -m vllm.entrypoints.openai.api_server` (what `vllm serve` runs) on a tiny model, started once
for the module with `--api-key`, so it answers only requests that carry the provider's key - the
calls that succeed prove the gateway sends the key it decrypted, the one that fails with a wrong key
proves vLLM checks it. Called with the official `openai` client over real HTTP through /v1: chat,
`n` > 1, streaming with and without the usage chunk, completions, allow-list, and the usage events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from deepext.db.models import UsageEvent
from deepext.serve.app import create_app
from tests.helpers import free_port, uvicorn_in_thread
from tests.serve.conftest import Api

UPSTREAM_KEY = "sk-vllm-test-3a1f9c0b7e2d4c68"  # a made-up key vLLM is told to require
# The gateway's database side runs on both backends in test_providers.py and test_gateway_usage.py;
# the calls through vLLM run on SQLite only, to keep CI within its time.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's OpenAI server on the tiny model (float32, eager, 256 tokens, 1 GiB KV cache); its /v1 URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(tiny_model), "--served-model-name", "tiny"),
        *("--dtype", "float32", "--enforce-eager", "--max-model-len", "256"),
        *("--host", "127.0.0.1", "--port", str(port), "--api-key", UPSTREAM_KEY),
    ]
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, f"vLLM exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"vLLM did not start:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield f"{url}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_vllm_behind_the_gateway(api: Api, vllm_server: str) -> None:
    body = {
        "name": "local-vllm",
        "kind": "openai",
        "base_url": vllm_server,
        "api_key": UPSTREAM_KEY,
        "models": ["tiny"],
    }
    created = api.call("POST", "/projects/p/providers", "maintainer", json=body)
    assert created.status_code == 201, created.text
    with uvicorn_in_thread(create_app(api.platform)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=api.tokens["member"], max_retries=0)
        assert "p/local-vllm/tiny" in [m.id for m in client.models.list().data]

        messages: list = [{"role": "user", "content": "hello"}]
        answer = client.chat.completions.create(
            model="p/local-vllm/tiny", messages=messages, max_tokens=6, n=2, temperature=1.0, seed=1
        )
        assert answer.model == "p/local-vllm/tiny" and len(answer.choices) == 2
        assert answer.usage is not None and answer.usage.completion_tokens > 0

        chunks = list(
            client.chat.completions.create(
                model="p/local-vllm/tiny",
                messages=messages,
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert {c.model for c in chunks} == {"p/local-vllm/tiny"}
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
        plain = list(
            client.chat.completions.create(model="p/local-vllm/tiny", messages=messages, max_tokens=4, stream=True)
        )
        assert plain and all(c.usage is None for c in plain)  # the usage chunk the gateway asked for is not passed on

        completion = client.completions.create(model="p/local-vllm/tiny", prompt="Once upon", max_tokens=4)
        assert completion.model == "p/local-vllm/tiny" and completion.usage is not None

        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="p/local-vllm/other", messages=messages, max_tokens=2)
        with pytest.raises(openai.UnprocessableEntityError, match="provider 'local-vllm' answered 400"):
            client.chat.completions.create(model="p/local-vllm/tiny", messages=messages, max_tokens=100_000)

        changed = api.call("PATCH", "/projects/p/providers/local-vllm", "owner", json={"api_key": "sk-wrong"})
        assert changed.status_code == 200
        with pytest.raises(openai.APIStatusError, match="provider 'local-vllm' answered 401") as refused:
            client.chat.completions.create(model="p/local-vllm/tiny", messages=messages, max_tokens=2)
        assert refused.value.status_code == 502

    with api.platform.db.session() as session:
        events = session.scalars(select(UsageEvent).order_by(UsageEvent.id)).all()
    assert [(e.endpoint, e.stream, e.status) for e in events] == [
        ("chat", False, "ok"),
        ("chat", True, "ok"),
        ("chat", True, "ok"),
        ("completions", False, "ok"),
        ("chat", False, "error"),
        ("chat", False, "error"),
    ]
    assert all(e.completion_tokens > 0 and e.prompt_tokens > 0 for e in events[:4])  # streams without usage too
    assert events[0].completion_tokens == answer.usage.completion_tokens
    assert all(e.ttft_ms is not None and e.ttft_ms <= e.latency_ms for e in events[1:3])
    assert {e.actor for e in events} == {"member"} and all(e.target_kind == "provider" for e in events)

    report = api.call("GET", "/projects/p/usage", "viewer", params={"group_by": ["provider", "model"]}).json()
    (row,) = report["rows"]
    assert (row["provider"], row["model"], row["requests"], row["errors"]) == ("local-vllm", "p/local-vllm/tiny", 6, 2)


@pytest.mark.slow
def test_chat_answers_from_a_knowledge_base_with_its_sources(api: Api, vllm_server: str) -> None:
    provider = {"name": "local-vllm", "kind": "openai", "base_url": vllm_server, "api_key": UPSTREAM_KEY}
    assert api.call("POST", "/projects/p/providers", "maintainer", json=provider).status_code == 201
    assert api.call("POST", "/projects/p/knowledge-bases", "maintainer", json={"name": "handbook"}).status_code == 201
    notes = "# Returns\n\nCustomers may return a product within 30 days.\n\n# Shipping\n\nWe ship to Peru."
    added = api.call(
        "POST",
        "/projects/p/knowledge-bases/handbook/documents",
        "maintainer",
        json={"filename": "policy.md", "text": notes},
    )
    assert added.status_code == 201, added.text
    messages: list = [{"role": "user", "content": "How many days do I have to return a product?"}]
    with uvicorn_in_thread(create_app(api.platform)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=api.tokens["member"], max_retries=0)
        ask = {"model": "p/local-vllm/tiny", "messages": messages, "max_tokens": 4}
        plain = client.chat.completions.create(**ask)
        grounded = client.chat.completions.create(**ask, extra_body={"rag": {"knowledge_base": "handbook", "top_k": 1}})
        sources = (grounded.model_extra or {})["sources"]
        assert [(s["n"], s["document"]) for s in sources] == [(1, "policy.md")] and "30 days" in sources[0]["text"]
        assert grounded.usage and plain.usage and grounded.usage.prompt_tokens > plain.usage.prompt_tokens + 10

        streamed = list(
            client.chat.completions.create(
                **ask, stream=True, extra_body={"rag": {"knowledge_base": "handbook", "top_k": 1}}
            )
        )
        assert (streamed[0].model_extra or {})["sources"][0]["document"] == "policy.md" and not streamed[0].choices
        assert any(c.choices and c.choices[0].delta.content for c in streamed[1:])

        with pytest.raises(openai.UnprocessableEntityError, match="rag"):
            client.chat.completions.create(**ask, extra_body={"rag": {"knowledge_base": "handbook", "top_k": 0}})
        with pytest.raises(openai.NotFoundError, match="nope"):
            client.chat.completions.create(**ask, extra_body={"rag": {"knowledge_base": "nope"}})


@pytest.mark.slow
def test_a_provider_model_is_an_evaluation_target_and_judge(api: Api, vllm_server: str, tmp_path: Path) -> None:
    """The same suite code path as for a deployment: through the gateway, as the member who asks."""
    import json

    from deepext.eval.runner import evaluate
    from deepext.eval.suite import push_suite

    provider = {"name": "local-vllm", "kind": "openai", "base_url": vllm_server, "api_key": UPSTREAM_KEY}
    assert api.call("POST", "/projects/p/providers", "maintainer", json=provider).status_code == 201
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Say {i}", "answer": str(i)}) + "\n" for i in range(4)))
    api.platform.datasets.push("p", "qa", rows, actor="test")
    judge = {"rubric": "Is it right?", "scale": "1-5", "pass_at": 4, "judge": "p/local-vllm/tiny"}
    checks = [{"name": "exact", "type": "exact_match"}, {"name": "judge", "type": "llm_judge", "params": judge}]
    suite = {"name": "qa", "dataset": "qa@1", "generation": {"max_new_tokens": 8}, "checks": checks}
    push_suite(api.platform, "p", suite, actor="test")
    with uvicorn_in_thread(create_app(api.platform)) as url:
        run = evaluate(api.platform, project="p", suite="qa", target="p/local-vllm/tiny", target_kind="provider",
                       actor="member", gateway=f"{url}/v1")  # fmt: skip
    assert run.state == "succeeded" and run.examples_count == 4 and run.target == "p/local-vllm/tiny"
    with api.platform.db.session() as session:
        events = session.scalars(select(UsageEvent)).all()
    assert len(events) == 8 and {e.actor for e in events} == {"member"}  # 4 answers and 4 verdicts, as the member
