"""Model serving throughput: a deployment on Ray Serve, called at its direct endpoint and through
deepext's /v1 gateway, against vLLM's own OpenAI server (`vllm serve`), same tiny model, same
engine settings, same load.

In one process run: a tiny random Qwen2-shaped model is built; `--clients` concurrent clients
(asyncio + aiohttp, in a second process) stream chat completions of exactly `--tokens` tokens
(`ignore_eos`) for `--seconds`, first against `python -m vllm.entrypoints.openai.api_server`, then
against the same model deployed with deepext (REST API and deployment on a local Ray Serve, calls
authenticated with a platform token): at the deployment's direct endpoint
(`/deployments/bench/tiny/v1`: HAProxy -> the engine's replica) and through the gateway (`/v1`:
HAProxy -> API replica -> the engine's replica). Both engines: float32, eager, 1 GiB KV cache,
256 tokens.

    .venv/bin/python benchmarks/serve_vs_vllm.py [--clients 8] [--tokens 32] [--seconds 20] [--rounds 1]

With `--rounds N` the whole comparison runs N times (each round restarts both servers) and the
last line gives medians; each round's ratio is taken within the round.

Last line: `serve_vs_vllm tokens_per_s direct=X gateway=Y vllm=Z ratio=X/Z gateway_ratio=Y/Z
ttft_p50_ms direct=.. gateway=.. vllm=.. ttft_p99_ms ..`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deepext.ports import free_port

MAX_MODEL_LEN = 256


# ---- the load generator (second process)
async def _load(url: str, key: str, model: str, clients: int, tokens: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    ttfts: list[float] = []
    completion_tokens = 0
    errors = 0
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story about a robot."}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {key}"}

    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def client(until: float, record: bool) -> None:
            nonlocal completion_tokens, errors
            while time.perf_counter() < until:
                started = time.perf_counter()
                first: float | None = None
                used = 0
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    if response.status != 200:
                        errors += 1
                        await response.read()
                        continue
                    async for raw in response.content:
                        line = raw.decode().strip()
                        if not line.startswith("data:") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[5:])
                        if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                            first = time.perf_counter() - started
                        if chunk.get("usage"):
                            used = chunk["usage"]["completion_tokens"]
                if record:
                    completion_tokens += used
                    if first is not None:
                        ttfts.append(first)

        warm = time.perf_counter() + 5
        await asyncio.gather(*(client(warm, False) for _ in range(clients)))
        began = time.perf_counter()
        await asyncio.gather(*(client(began + seconds, True) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    ttfts.sort()

    def pct(q: float) -> float:
        return ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] * 1000 if ttfts else float("nan")

    return {
        "tokens_per_s": completion_tokens / elapsed,
        "ttft_p50_ms": pct(0.5),
        "ttft_p99_ms": pct(0.99),
        "requests": len(ttfts),
        "errors": errors,
    }


def _measure(url: str, key: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--load",
        url,
        "--key",
        key,
        "--model",
        model,
        "--clients",
        str(args.clients),
        "--tokens",
        str(args.tokens),
        "--seconds",
        str(args.seconds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator against {url} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _wait_for(url: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def _vllm_serve(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--served-model-name",
            "tiny",
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            str(MAX_MODEL_LEN),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/v1/models")
        return _measure(f"http://127.0.0.1:{port}", "none", "tiny", args)
    finally:
        server.terminate()
        server.wait(timeout=60)


def _deepext(model: Path, home: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    import datetime as dt

    import ray

    from deepext.auth import rbac
    from deepext.auth.tokens import issue_token
    from deepext.auth.users import create_user
    from deepext.cluster import connect_ray
    from deepext.config import Settings
    from deepext.models.registry import register_base_model
    from deepext.models.versions import register_model_version
    from deepext.platform import Platform
    from deepext.projects import create_project
    from deepext.serve.deployments import create_deployment, get_deployment, reconcile
    from deepext.serve.ingress import start_api

    settings = Settings(home=home, api_port=free_port(), ray_num_cpus=2, ray_dashboard_port=0)
    platform = Platform.open(settings)
    with platform.db.session() as session:
        user = create_user(session, username="bench", password="benchmark passphrase", actor="bench")
        project = create_project(session, name="bench", actor="bench")
        rbac.grant_project_role(session, user.id, project.id, "member")
        _row, key = issue_token(session, user, kind="personal", name="bench", lifetime=dt.timedelta(hours=2))
    register_base_model(platform, "tiny", model, actor="bench")
    register_model_version(platform, project="bench", name="tiny", folder=model, base_model="tiny", actor="bench")
    create_deployment(
        platform, project="bench", name="tiny", model_version="tiny@1", max_model_len=MAX_MODEL_LEN, actor="bench"
    )
    connect_ray(settings, log_to_driver=False)
    try:
        url = start_api(settings).removesuffix("/api/v1")
        deadline = time.monotonic() + 300
        while get_deployment(platform, "bench", "tiny").state != "running":
            reconcile(platform)
            if time.monotonic() > deadline or get_deployment(platform, "bench", "tiny").state == "failed":
                raise RuntimeError(f"deployment did not come up: {get_deployment(platform, 'bench', 'tiny')}")
            time.sleep(1)
        direct = _measure(f"{url}/deployments/bench/tiny", key, "bench/tiny", args)
        return {"direct": direct, "gateway": _measure(url, key, "bench/tiny", args)}
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="vLLM, then deepext, this many times; medians")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        result = asyncio.run(_load(args.load, args.key, args.model, args.clients, args.tokens, args.seconds))
        print(json.dumps(result))
        return

    from deepext.models.tiny import TinyModelSpec, create_tiny_model

    work = Path(tempfile.mkdtemp(prefix="deepext-serve-bench-"))
    model = create_tiny_model(work / "tiny", TinyModelSpec(seed=3))
    rounds = []
    for number in range(1, args.rounds + 1):
        results = {"vllm": _vllm_serve(model, args), **_deepext(model, work / f"home-{number}", args)}
        for name, r in results.items():
            print(
                f"round {number} {name:8s} {r['tokens_per_s']:8.1f} tokens/s  TTFT p50 {r['ttft_p50_ms']:7.1f} ms  "
                f"p99 {r['ttft_p99_ms']:7.1f} ms  ({r['requests']} requests, {r['errors']} errors)",
                flush=True,
            )
        rounds.append(results)

    def median(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    def each(key: str) -> str:
        return " ".join(f"{name}={median(name, key):.1f}" for name in ("direct", "gateway", "vllm"))

    def ratio(name: str) -> float:  # each round's ratio: the machine's speed drifts between rounds
        return statistics.median(r[name]["tokens_per_s"] / r["vllm"]["tokens_per_s"] for r in rounds)

    print(
        f"serve_vs_vllm tokens_per_s {each('tokens_per_s')} ratio={ratio('direct'):.2f} "
        f"gateway_ratio={ratio('gateway'):.2f} ttft_p50_ms {each('ttft_p50_ms')} ttft_p99_ms {each('ttft_p99_ms')}"
        + (f" (medians of {len(rounds)} rounds)" if len(rounds) > 1 else "")
    )


if __name__ == "__main__":
    main()
