"""Evaluation through an OpenAI-compatible endpoint: the platform's own gateway (a deployment,
`PROJECT/NAME`, or a provider model, `PROJECT/PROVIDER/MODEL`) or any other base URL.

The outputs come from concurrent `/chat/completions` calls (or `/completions` when the suite
renders no chat template); calls through the gateway are authenticated by a token minted for the
run's caller, scoped to the model's project and revoked when the run ends, so the gateway applies
that user's rights and counts the usage as theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from deepext.errors import InvalidInput, NotFound, Unavailable
from deepext.eval.generate import GenerationSettings
from deepext.platform import Platform

GATEWAY_KINDS = ("deployment", "provider")
RETRYABLE = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # up to and including /v1
    model: str
    api_key: str | None = None


def parse_endpoint_target(target: str) -> tuple[str, str]:
    """`URL#MODEL` -> (URL, MODEL): an OpenAI-compatible base URL and the model to ask there."""
    url, _, model = target.partition("#")
    if not url.startswith(("http://", "https://")) or not model:
        raise InvalidInput(
            f"endpoint target {target!r}: expected BASE_URL#MODEL, e.g. http://10.0.0.5:8000/v1#qwen2.5-7b",
            field="target",
        )
    return url.rstrip("/"), model


def check_gateway_target(target: str, kind: str) -> str:
    """The project of a deployment (`PROJECT/NAME`) or provider model (`PROJECT/PROVIDER/MODEL`)."""
    parts = target.split("/")
    wanted = 2 if kind == "deployment" else 3
    if len(parts) < wanted or not all(parts[:wanted]):
        shape = "PROJECT/NAME" if kind == "deployment" else "PROJECT/PROVIDER/MODEL"
        raise InvalidInput(f"{kind} target {target!r}: expected {shape}", field="target")
    return parts[0]


def gateway_url(platform: Platform) -> str:
    """Where this platform's /v1 gateway listens (`DEEPEXT_GATEWAY_URL`, else the API's address)."""
    settings = platform.settings
    configured = os.environ.get("DEEPEXT_GATEWAY_URL")
    if configured:
        return configured.rstrip("/")
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    return f"http://{host}:{settings.api_port}/v1"


@contextlib.contextmanager
def gateway_endpoint(platform: Platform, model: str, kind: str, caller: str, base_url: str) -> Iterator[Endpoint]:
    """An `Endpoint` for the gateway model `model`, called as user `caller` with a token that only
    reaches the model's project, lives at most a day and is revoked on exit."""
    from sqlalchemy import select

    from deepext.auth.tokens import issue_token, revoke_token
    from deepext.db.models import Project, User

    project = check_gateway_target(model, kind)
    with platform.db.session() as session:
        user = session.scalar(select(User).where(User.username == caller))
        if user is None:
            raise NotFound(f"user {caller!r} not found: an evaluation through the gateway runs as a user")
        project_id = session.scalar(select(Project.id).where(Project.name == project))
        if project_id is None:
            raise NotFound(f"project {project!r} not found")
        token, secret = issue_token(
            session, user, kind="personal", name=f"evaluation of {model}"[:64],
            lifetime=dt.timedelta(days=1), project_ids=[project_id],
        )  # fmt: skip
        token_id, user_id = token.id, user.id
    try:
        yield Endpoint(base_url, model, secret)
    finally:
        with platform.db.session() as session:
            revoke_token(session, user_id, token_id, actor=caller)


def generate_with_endpoint(
    endpoint: Endpoint,
    prompts: list[str],
    settings: GenerationSettings,
    *,
    chat: bool = True,
    system_prompt: str | None = None,
    concurrency: int = 8,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> list[str]:
    """One greedy-or-sampled answer per prompt, in prompt order, `concurrency` calls at a time.
    Throttling and server errors are retried with backoff; any other refusal fails the run naming
    the prompt and the endpoint's message."""
    return asyncio.run(_generate(endpoint, prompts, settings, chat, system_prompt, concurrency, progress))


async def _generate(
    endpoint: Endpoint,
    prompts: list[str],
    settings: GenerationSettings,
    chat: bool,
    system_prompt: str | None,
    concurrency: int,
    progress: Callable[[int, int], None],
) -> list[str]:
    import httpx

    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    sampling = {
        "model": endpoint.model,
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "seed": settings.seed,
    }
    path = "/chat/completions" if chat else "/completions"
    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    def body(prompt: str) -> dict[str, Any]:
        if not chat:
            return {**sampling, "prompt": prompt}
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return {**sampling, "messages": [*system, {"role": "user", "content": prompt}]}

    async def ask(client: httpx.AsyncClient, index: int, prompt: str) -> str:
        nonlocal done
        async with gate:
            for attempt in range(4):
                response = await client.post(f"{endpoint.base_url}{path}", json=body(prompt))
                if response.status_code not in RETRYABLE or attempt == 3:
                    break
                await asyncio.sleep(0.5 * 2**attempt)
        if response.status_code != 200:
            raise Unavailable(
                f"{endpoint.base_url} answered {response.status_code} for prompt {index + 1} "
                f"({endpoint.model}): {_message(response)}"
            )
        choice = response.json()["choices"][0]
        done += 1
        progress(done, len(prompts))
        return str((choice.get("message") or {}).get("content") or "") if chat else str(choice.get("text") or "")

    timeout = httpx.Timeout(600.0, connect=10.0)
    async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
        return list(await asyncio.gather(*(ask(client, i, p) for i, p in enumerate(prompts))))


def _message(response: Any) -> str:
    try:
        payload = response.json()
    except ValueError:
        return str(response.text)[:300]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))[:300]
    return str(payload)[:300]
