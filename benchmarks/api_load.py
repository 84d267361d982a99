"""REST API throughput and latency: the same FastAPI app through Ray Serve and under plain uvicorn.

In one process run, on a fresh SQLite store (or `--database-url`) with one project of 20 datasets:
an authenticated `GET /api/v1/projects/{project}/datasets` is fired by `--concurrency` clients from
a second process (asyncio + aiohttp) for `--seconds` against each server in turn - uvicorn (one
worker) and Ray Serve (one replica, on the local Ray `deepext up` would start) - after a 2 s
warm-up, alternating for `--rounds` rounds; the round with the median requests/s is reported.

    .venv/bin/python benchmarks/api_load.py [--concurrency 50] [--seconds 15]

Last line: `api_load rps serve=X uvicorn=Y ratio=Z p50_ms serve=.. uvicorn=.. p99_ms serve=.. uvicorn=..`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deepext.ports import free_port

PATH = "/api/v1/projects/bench/datasets"


# ---- the load generator (runs in the second process)
async def _load(url: str, token: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` clients on keep-alive connections (aiohttp: a light client, so the load
    generator takes as little as possible of the CPU the servers share with it)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector, timeout=timeout) as client:

        async def worker(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                started = time.perf_counter()
                async with client.get(PATH) as response:
                    await response.read()
                if record:
                    if response.status == 200:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

        warm = time.perf_counter() + 2.0
        await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
        began = time.perf_counter()
        await asyncio.gather(*(worker(began + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "ok": len(latencies),
        "errors": errors,
    }


def _measure(url: str, token: str, concurrency: int, seconds: float) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--load",
        url,
        "--token",
        token,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator against {url} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median requests/s (its latencies belong to it)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def _wait_ready(url: str, deadline_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {deadline_s} s")


def _seed(settings: Any) -> str:
    from deepext.auth import rbac
    from deepext.auth.tokens import issue_token
    from deepext.auth.users import create_user
    from deepext.platform import Platform
    from deepext.projects import create_project

    platform = Platform.open(settings)
    with platform.db.session() as session:
        user = create_user(session, username="bench", password="benchmark passphrase", actor="bench")
        project = create_project(session, name="bench", actor="bench")
        rbac.grant_project_role(session, user.id, project.id, "viewer")
        import datetime as dt

        _row, token = issue_token(session, user, kind="personal", name="bench", lifetime=dt.timedelta(hours=2))
    with tempfile.TemporaryDirectory() as folder:
        for i in range(20):
            source = Path(folder) / f"d{i}.jsonl"
            source.write_text(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n", encoding="utf-8")
            platform.datasets.push("bench", f"data{i:02d}", source, actor="bench")
    platform.close()
    return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(_load(args.load, args.token, args.concurrency, args.seconds))))
        return

    import ray

    from deepext.cluster import connect_ray
    from deepext.config import Settings
    from deepext.serve.ingress import start_api, stop_api

    home = Path(tempfile.mkdtemp(prefix="deepext-api-bench-"))
    settings = Settings(home=home, database_url=args.database_url, api_port=free_port(), ray_num_cpus=2)
    token = _seed(settings)
    # Ray runs during both measurements, so its own processes load the machine alike for both.
    connect_ray(settings.model_copy(update={"ray_dashboard_port": 0}), log_to_driver=False)
    port = free_port()
    env = {**os.environ, "DEEPEXT_HOME": str(home), "DEEPEXT_DATABASE_URL": args.database_url}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "deepext.serve.app:app_from_settings",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    rounds: dict[str, list[dict[str, Any]]] = {"uvicorn": [], "serve": []}
    try:
        serve_url = start_api(settings).removesuffix("/api/v1")
        urls = {"uvicorn": f"http://127.0.0.1:{port}", "serve": serve_url}
        for url in urls.values():
            _wait_ready(url)
        for _ in range(args.rounds):  # alternate, so drift in the machine's load hits both alike
            for name, url in urls.items():
                rounds[name].append(_measure(url, token, args.concurrency, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)
        stop_api()
        ray.shutdown()
    results = {name: _median(runs) for name, runs in rounds.items()}

    for name, r in results.items():
        print(
            f"{name:8s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
            f"({r['ok']} ok, {r['errors']} errors, {args.concurrency} clients, {args.seconds:g} s)"
        )
    serve, plain = results["serve"], results["uvicorn"]
    print(
        f"api_load rps serve={serve['rps']:.1f} uvicorn={plain['rps']:.1f} ratio={serve['rps'] / plain['rps']:.2f} "
        f"p50_ms serve={serve['p50_ms']:.1f} uvicorn={plain['p50_ms']:.1f} "
        f"p99_ms serve={serve['p99_ms']:.1f} uvicorn={plain['p99_ms']:.1f}"
    )


if __name__ == "__main__":
    main()
