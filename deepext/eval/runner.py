"""Run a stored suite against a model: generate on Ray with vLLM actors, check, store, aggregate.

    run = evaluate(platform, project="demo", suite="capitals-json", target="capitals@2")

The suite's dataset rows become prompts (the model's chat template unless the suite says not), the
vLLM actors generate every output data-parallel, each check scores each output (a judge model
answers the `llm_judge` checks first), and the examples and aggregates are stored against the model
version. Runs as an `eval` job through the orchestrator, or directly from the CLI.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepext.errors import InvalidInput
from deepext.eval.checks import Check
from deepext.eval.endpoint import (
    GATEWAY_KINDS,
    Endpoint,
    gateway_endpoint,
    gateway_url,
    generate_with_endpoint,
    parse_endpoint_target,
)
from deepext.eval.generate import GenerationSettings, generate_with_vllm, render_prompts
from deepext.eval.results import RunView, evaluate_example, fail_run, finish_run, record_examples, start_run
from deepext.eval.suite import SuiteSpec, get_suite
from deepext.platform import Platform
from deepext.serve.providers.registry import check_air_gap


@dataclass(frozen=True)
class Workers:
    """How generation spreads over the cluster."""

    count: int = 1
    cpus: float = 1
    gpus: float = 0
    threads: int | None = None


def target_path(platform: Platform, project: str, target: str, kind: str) -> Path:
    """The local model folder of a model version or a registered base model."""
    if kind == "model_version":
        from deepext.models.versions import model_version_path

        return model_version_path(platform, project, target)
    if kind == "base_model":
        from deepext.models.registry import base_model_path

        return base_model_path(platform, target)
    raise InvalidInput(f"target kind {kind!r} has no model folder: it is called as an endpoint", field="target")


def evaluate(
    platform: Platform,
    *,
    project: str,
    suite: str,
    target: str,
    target_kind: str = "model_version",
    workers: Workers = Workers(),
    job_id: int | None = None,
    actor: str = "deepext",
    caller: str | None = None,
    gateway: str | None = None,
    endpoint_key_env: str | None = None,
    progress: Callable[[str], None] = lambda _message: None,
) -> RunView:
    """Evaluate `target` with the suite `suite` (NAME or NAME@N) and store the run; returns it.

    A model version or base model is generated with vLLM actors on Ray. A deployment or provider
    model is called through the gateway (at `gateway`, default `gateway_url`) as user `caller`
    (default: `actor`); an `endpoint` target (`BASE_URL#MODEL`) directly, with the API key in the
    environment variable `endpoint_key_env` if it wants one."""
    stored = get_suite(platform, project, suite)
    spec = stored.spec
    remote = target_kind in (*GATEWAY_KINDS, "endpoint")
    model = None if remote else target_path(platform, project, target, target_kind)
    rows = _rows(platform, spec)
    run = start_run(
        platform, project=project, suite=stored.ref, target=target, target_kind=target_kind, job_id=job_id, actor=actor
    )
    started = time.perf_counter()
    gateway = gateway or gateway_url(platform)
    try:
        if model is None:
            progress(f"asking {target} for {len(rows)} outputs")
            with _endpoint(platform, target, target_kind, caller or actor, gateway, endpoint_key_env) as endpoint:
                prompts, outputs = _generate_remote(endpoint, spec, rows)
        else:
            progress(f"generating {len(rows)} outputs with {workers.count} vLLM worker(s)")
            prompts, outputs = _generate(model, spec, rows, workers)
        checks = spec.build_checks()
        _judge(platform, project, checks, rows, outputs, workers, progress, caller or actor, gateway)
        progress("checking outputs")
        examples = [
            evaluate_example(checks, index=i, row=row, prompt=prompt, output=output)
            for i, (row, prompt, output) in enumerate(zip(rows, prompts, outputs, strict=True))
        ]
        record_examples(platform, run.id, examples)
        return finish_run(platform, run.id, seconds=time.perf_counter() - started)
    except BaseException as exc:
        fail_run(platform, run.id, f"{type(exc).__name__}: {exc}")
        raise


def _rows(platform: Platform, spec: SuiteSpec) -> list[dict[str, Any]]:
    from deepext.grpo.data import read_rows

    rows, source = read_rows(spec.dataset, None, platform)
    rows = rows[: spec.limit] if spec.limit else rows
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get(spec.prompt_field), str):
            raise InvalidInput(f"{source}, row {number}: no text in field {spec.prompt_field!r}", field="prompt_field")
    return rows


def _generate(
    model: Path, spec: SuiteSpec, rows: list[dict[str, Any]], workers: Workers
) -> tuple[list[str], list[str]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [str(row[spec.prompt_field]) for row in rows]
    ids = render_prompts(tokenizer, texts, chat_template=spec.chat_template, system_prompt=spec.system_prompt)
    gen = spec.generation
    settings = GenerationSettings(gen.max_new_tokens, gen.temperature, gen.top_p, gen.seed or 0)
    longest = max(len(p) for p in ids) + gen.max_new_tokens
    outputs = generate_with_vllm(
        model,
        ids,
        settings,
        workers=workers.count,
        cpus_per_worker=workers.cpus,
        gpus_per_worker=workers.gpus,
        threads=workers.threads,
        max_model_len=max(256, longest),
    )
    prompts = [str(tokenizer.decode(p)) for p in ids]
    return prompts, outputs


def _endpoint(
    platform: Platform, target: str, kind: str, caller: str, gateway: str, key_env: str | None
) -> contextlib.AbstractContextManager[Endpoint]:
    if kind == "endpoint":
        url, model = parse_endpoint_target(target)
        check_air_gap(platform.settings, "endpoint", url)  # the one model call here outside the gateway
        key = os.environ.get(key_env) if key_env else None
        if key_env and not key:
            raise InvalidInput(f"environment variable {key_env} (the endpoint's API key) is not set", field="target")
        return contextlib.nullcontext(Endpoint(url, model, key))
    return gateway_endpoint(platform, target, kind, caller, gateway)


def _generate_remote(endpoint: Endpoint, spec: SuiteSpec, rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The suite's prompts as chat messages (or raw text without a chat template) to an endpoint."""
    texts = [str(row[spec.prompt_field]) for row in rows]
    gen = spec.generation
    settings = GenerationSettings(gen.max_new_tokens, gen.temperature, gen.top_p, gen.seed or 0)
    outputs = generate_with_endpoint(
        endpoint, texts, settings, chat=spec.chat_template, system_prompt=spec.system_prompt
    )
    return texts, outputs


def _judge(
    platform: Platform,
    project: str,
    checks: list[Check],
    rows: list[dict[str, Any]],
    outputs: list[str],
    workers: Workers,
    progress: Callable[[str], None],
    caller: str,
    gateway: str,
) -> None:
    """Ask each `llm_judge` check's judge model for its verdicts; they go into the rows for the check.
    A judge is a model version (`NAME@N`) or base model on vLLM actors, or a gateway model: a
    deployment `PROJECT/NAME` or provider model `PROJECT/PROVIDER/MODEL`."""
    from transformers import AutoTokenizer

    for check in checks:
        if check.spec.type != "llm_judge":
            continue
        judge_ref = str(check.spec.params.get("judge", ""))
        progress(f"judging {check.spec.name} with {judge_ref}")
        prompts = [check.judge_prompt(output, row) for output, row in zip(outputs, rows, strict=True)]  # type: ignore[attr-defined]
        if "/" in judge_ref:
            kind = "deployment" if judge_ref.count("/") == 1 else "provider"
            with gateway_endpoint(platform, judge_ref, kind, caller, gateway) as endpoint:
                verdicts = generate_with_endpoint(endpoint, prompts, GenerationSettings(max_new_tokens=64))
        else:
            kind = "model_version" if "@" in judge_ref else "base_model"
            judge = target_path(platform, project, judge_ref, kind)
            ids = render_prompts(AutoTokenizer.from_pretrained(judge), prompts)
            verdicts = generate_with_vllm(
                judge,
                ids,
                GenerationSettings(max_new_tokens=64),
                workers=workers.count,
                cpus_per_worker=workers.cpus,
                gpus_per_worker=workers.gpus,  # a judge on the GPUs the suite's generation gets
                threads=workers.threads,
                max_model_len=max(len(p) for p in ids) + 64,
            )
        for row, verdict in zip(rows, verdicts, strict=True):
            row[check.judgement_key] = verdict  # type: ignore[attr-defined]
