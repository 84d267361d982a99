"""Evaluation through OpenAI-compatible endpoints: target names, and the concurrent caller's order,
retries and errors. The throttling and failing server here is a stand-in written for these tests
(no real server can be made to throttle on demand); the real gateway and vLLM are exercised in
tests/serve/test_model_serving.py."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deepext.errors import InvalidInput, Unavailable
from deepext.eval.endpoint import Endpoint, check_gateway_target, generate_with_endpoint, parse_endpoint_target
from deepext.eval.generate import GenerationSettings
from tests.helpers import uvicorn_in_thread


def test_target_names_are_checked() -> None:
    assert parse_endpoint_target("http://10.0.0.5:8000/v1/#qwen2.5") == ("http://10.0.0.5:8000/v1", "qwen2.5")
    assert check_gateway_target("p/chat", "deployment") == "p"
    assert check_gateway_target("p/openai/gpt-4o-mini", "provider") == "p"
    for bad, kind in [
        ("ftp://x#m", "endpoint"),
        ("http://x/v1", "endpoint"),
        ("chat", "deployment"),
        ("p/o", "provider"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            parse_endpoint_target(bad) if kind == "endpoint" else check_gateway_target(bad, kind)
        assert caught.value.field == "target" and bad in str(caught.value)


def _stand_in_server() -> tuple[FastAPI, Counter[str]]:
    """Throttles each prompt's first call (429), refuses the prompt "forbidden" (403), and answers
    every other call with the prompt reversed; counts calls per prompt and checks the key."""
    app, calls = FastAPI(), Counter[str]()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        assert request.headers["authorization"] == "Bearer sk-test"
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        calls[prompt] += 1
        if prompt == "forbidden":
            return JSONResponse({"error": {"message": "not your model"}}, status_code=403)
        if calls[prompt] == 1:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        assert body["max_tokens"] == 5 and body["messages"][0] == {"role": "system", "content": "be brief"}
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": prompt[::-1]}}]}

    @app.post("/v1/completions")
    async def complete(request: Request) -> Any:
        body = await request.json()
        return {"choices": [{"index": 0, "text": body["prompt"].upper()}]}

    return app, calls


def test_answers_keep_prompt_order_and_throttling_is_retried() -> None:
    app, calls = _stand_in_server()
    prompts = [f"prompt {i}" for i in range(12)]
    seen: list[int] = []
    with uvicorn_in_thread(app) as url:
        endpoint = Endpoint(f"{url}/v1", "m", "sk-test")
        settings = GenerationSettings(max_new_tokens=5)
        answers = generate_with_endpoint(
            endpoint, prompts, settings, system_prompt="be brief", concurrency=4, progress=lambda d, _t: seen.append(d)
        )
        assert answers == [p[::-1] for p in prompts]
        assert all(calls[p] == 2 for p in prompts) and seen == list(range(1, 13))
        assert generate_with_endpoint(endpoint, ["abc"], settings, chat=False) == ["ABC"]
        with pytest.raises(Unavailable, match=r"403 for prompt 2 \(m\): not your model"):
            generate_with_endpoint(endpoint, ["ok", "forbidden"], settings, system_prompt="be brief")
