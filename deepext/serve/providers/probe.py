"""A provider's "test connection": one `GET {base_url}/models` with its key, before or after saving
it, reporting whether the server answers, whether it takes the key, how fast, and the first models
it lists. Nothing is stored and no audit row is written: a failed test leaves no trace but its
answer. Air-gapped, an address off the loopback interface is refused before any call."""

from __future__ import annotations

import time
from typing import Literal

import httpx
from pydantic import BaseModel

from deepext.config import Settings
from deepext.serve.providers.forward import ANTHROPIC_VERSION
from deepext.serve.providers.registry import check_air_gap

LISTED = 20  # models named in the answer, at most
CONNECT_TIMEOUT_S = 5.0  # a test should answer "not reachable" quickly


class ProviderProbe(BaseModel):
    reachable: bool  # the server answered over HTTP
    auth: Literal["ok", "refused", "unknown"]  # 2xx: ok; 401/403: refused; else unknown
    status_code: int | None
    latency_ms: float | None
    models: list[str]  # the first models the server lists
    detail: str


def probe_provider(
    settings: Settings, *, kind: str, base_url: str, api_key: str | None, timeout_s: float = 10.0
) -> ProviderProbe:
    check_air_gap(settings, "test", base_url)
    headers = {"accept": "application/json"}
    if kind == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if api_key:
            headers["x-api-key"] = api_key
    elif api_key:
        headers["authorization"] = f"Bearer {api_key}"
    url = f"{base_url.rstrip('/')}/models"
    started = time.perf_counter()
    try:
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return ProviderProbe(reachable=False, auth="unknown", status_code=None, latency_ms=None, models=[],
                             detail=f"GET {url}: {reason}")  # fmt: skip
    latency = round((time.perf_counter() - started) * 1000, 1)
    status = response.status_code
    if status in (401, 403):
        auth: Literal["ok", "refused", "unknown"] = "refused"
        detail = f"GET {url}: HTTP {status}: the server refused the key" + ("" if api_key else " (none was given)")
    elif 200 <= status < 300:
        auth, detail = "ok", f"GET {url}: HTTP {status} in {latency:.0f} ms"
    else:
        auth, detail = "unknown", f"GET {url}: HTTP {status} in {latency:.0f} ms"
    return ProviderProbe(reachable=True, auth=auth, status_code=status, latency_ms=latency,
                         models=_models(response) if auth == "ok" else [], detail=detail)  # fmt: skip


def _models(response: httpx.Response) -> list[str]:
    """Model ids from an OpenAI- or Anthropic-style listing (`{"data": [{"id": ...}]}`)."""
    try:
        data = response.json().get("data") or []
        return [str(item["id"]) for item in data[:LISTED] if isinstance(item, dict) and "id" in item]
    except (ValueError, AttributeError):
        return []
