"""The web app's logic without a browser: rights from the policy, errors as text, expiry, the job
form and the metric plots."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import gradio as gr
import pytest

from apps.gradio.engine import Engine, error_text
from apps.gradio.pages.training import (
    job_config,
    latest_values,
    parse_yaml,
    plot_frames,
    progress_html,
    total_steps,
)
from apps.gradio.session import EXPIRED, UiSession
from deepext.client import ApiError
from deepext.train.jobs import JobView


def test_rights_follow_the_policy_file() -> None:
    viewer = UiSession(token="t", username="v", roles=(("p", "viewer"),), project="p")
    maintainer = UiSession(token="t", username="m", roles=(("p", "maintainer"),), project="p")
    assert viewer.may("jobs", "read") and not viewer.may("jobs", "create")
    assert maintainer.may("jobs", "create") and not maintainer.may("members", "manage")
    assert not maintainer.may("jobs", "create", project="q")
    assert UiSession(token="t", admin=True).may("members", "manage", project="anything")


def test_api_errors_become_readable_text_and_401_expires_the_session() -> None:
    engine = Engine("http://127.0.0.1:1/api/v1")
    assert engine.api_url == "http://127.0.0.1:1"
    session = UiSession(token="t", username="u")

    def refused(session: UiSession, engine: Engine, name: str) -> tuple[str, str]:
        raise ApiError(422, "invalid", "data.jsonl, row 3: not JSON", "body", "req-1")

    def expired(session: UiSession, engine: Engine, name: str) -> tuple[str, str]:
        raise ApiError(401, "unauthenticated", "token expired", None, "req-2")

    kept, status, value = engine.action(refused, 1)(session, "x")
    assert kept == gr.skip() and "row 3: not JSON" in status and "req-1" in status and value == gr.skip()
    assert "Traceback" not in status
    gone, status, _ = engine.action(expired, 1)(session, "x")
    assert not gone.signed_in and gone.notice == EXPIRED
    assert "HTTP 422 invalid" in error_text(ApiError(422, "invalid", "bad", None, ""))


def test_the_job_form_builds_a_grpo_config_and_the_yaml_round_trips() -> None:
    fields: dict[str, Any] = dict(
        name="try",
        model="tiny@1",
        dataset="capitals@train",
        rewards="json_valid:0.5, exact_match",
        steps=20,
        learning_rate=1e-5,
        group_size=4,
        prompts_per_step=2,
        max_new_tokens=32,
        temperature=1.0,
        kl_coef=0.0,
        lora_rank=8,
        batch_size=8,
    )
    config = job_config("grpo", **fields)
    assert config["rewards"] == [{"name": "json_valid", "weight": 0.5}, {"name": "exact_match"}]
    assert config["schedule"] == {"steps": 20} and config["model"]["lora"]["rank"] == 8
    sft = job_config("sft", **fields)
    assert sft["training"]["max_steps"] == 20 and "rewards" not in sft
    from deepext.train.sweep import parse_sweep

    sweep = job_config("sweep", **{**fields, "rewards": "valid_json", "model": "/models/tiny"})
    assert sweep["base"]["schedule"] == {"steps": 20}
    assert parse_sweep(sweep).search_space["optim.learning_rate"].loguniform == pytest.approx((1e-6, 1e-4))
    import yaml

    assert parse_yaml(yaml.safe_dump(config)) == config


def test_metric_rows_become_one_frame_per_plot_and_progress_counts_steps() -> None:
    rows = [
        {"step": s, "values": {"reward_mean": s / 10, "reward/json_mean": 0.5, "loss": 1 - s / 10, "kl": 0.01}}
        for s in range(3)
    ]
    frames = plot_frames(rows)
    assert set(frames["reward"]["series"]) == {"reward_mean", "reward/json_mean"}
    assert list(frames["loss"]["value"]) == [1.0, 0.9, 0.8]
    assert len(frames["kl"]) == 3 and frames["completion length"].empty
    line = "step 2 (3 logged): kl 0.01 · loss 0.8 · reward/json_mean 0.5 · reward_mean 0.2"
    assert latest_values(rows) == f"<small>{line}</small>"
    sweep_rows = [
        {"step": n, "values": {"trial": 1 + n % 2, "trial_step": 1 + n // 2, "reward_mean": n}} for n in range(4)
    ]
    curves = plot_frames(sweep_rows)["reward"]
    assert sorted(set(curves["series"])) == ["trial 1 reward_mean", "trial 2 reward_mean"]
    assert list(curves[curves["series"] == "trial 2 reward_mean"]["step"]) == [1, 2]
    assert "no metrics yet" in latest_values([])
    now = dt.datetime.now(dt.UTC)
    fields = dict(id=1, project="p", kind="grpo", name="g", state="running", config={"schedule": {"steps": 4}})
    fields |= dict(resources={}, priority=0, owner="o", ray_job_id=None, attempts=1, max_retries=0, error=None)
    fields |= dict(metrics={}, output_key=None, created_at=now, started_at=now, finished_at=None)
    job = JobView(**fields)  # type: ignore[arg-type]
    assert total_steps(job) == 4
    assert 'value="0.500"' in progress_html(job, 2)


def test_the_lineage_picture_runs_from_the_base_model_to_the_version() -> None:
    from apps.gradio.pages.models import lineage_html
    from deepext.models.registry import BaseModelView
    from deepext.models.versions import ModelVersionView
    from deepext.serve.routes.models import Lineage

    base = BaseModelView(1, "tiny", "/m", "k", "Qwen2ForCausalLM", 1000, None, {}, "2026-01-01T00:00:00")

    def version(n: int, parent: str | None) -> ModelVersionView:
        return ModelVersionView(
            n, "p", "sft", n, f"sft@{n}", "tiny", parent, "qa@1" if n == 2 else None, 7 if n == 2 else None,
            "lora", "k", None, None, {}, "candidate", [], 0, 0, None, "2026-01-01T00:00:00",
        )  # fmt: skip

    picture = lineage_html(Lineage(versions=[version(2, "sft@1"), version(1, None)], base_model=base))
    assert picture.count('class="lineage-node') == 3 and picture.count("lineage-arrow") == 2
    assert picture.index("tiny") < picture.index("sft@1") < picture.index("sft@2")
    assert "data qa@1 · job 7" in picture and "lineage-current" in picture.split("sft@1")[1]


def test_run_tables_and_the_comparison_summary() -> None:
    from apps.gradio.pages.evaluation import checks_table, comparison_summary, failures_table
    from deepext.eval.checks import CheckResult
    from deepext.eval.compare import Comparison, Flip
    from deepext.eval.results import ExampleResult, RunView

    checks = {"correct": {"pass_rate": 0.5, "mean_score": 0.5, "count": 4, "failures": 2, "severity": "error"}}
    run = RunView(
        1, "p", "s@1", "s", 1, 1, "model_version", "sft@1", 1, None, "succeeded",
        {"checks": checks, "pass_rate": 0.5, "score": 0.5}, 4, 1.0, None, "2026-01-01T00:00:00", None,
    )  # fmt: skip
    table = checks_table(run)
    assert list(table["pass rate"]) == ["50.0%"] and list(table["failures"]) == [2]
    failed = ExampleResult(3, {}, "q3", "out", {"correct": CheckResult(False, 0.0, "expected a3")}, False)
    assert list(failures_table([failed])["reasons"]) == ["correct: expected a3"]
    comparison = Comparison(run, run, (), (Flip(3, ("correct",)),), (), 4, (), ())
    summary = comparison_summary(comparison)
    assert "(1):</b> #3 (correct)" in summary and "Fixes (fail in A, pass in B):</b> none" in summary


def test_ab_streams_interleave_and_rag_sources_are_shown() -> None:
    from apps.gradio.pages.playground import merge_streams, rag_field, sources_html

    merged = list(merge_streams([iter(["a1", "a2"]), iter(["b1"])]))
    assert sorted(merged) == [(0, "a1"), (0, "a2"), (1, "b1")]
    assert [p for i, p in merged if i == 0] == ["a1", "a2"]
    assert rag_field(False, "kb", 4) is None and rag_field(True, "kb", 3.0) == {"knowledge_base": "kb", "top_k": 3}
    shown = sources_html([{"n": 1, "document": "faq.md", "chunk": 2, "score": 0.91, "text": "<b>Paris</b>"}])
    assert "[1] faq.md #2 · score 0.910" in shown and "&lt;b&gt;Paris" in shown


def test_chat_stream_hands_the_rag_sources_event_to_its_callback() -> None:
    import httpx

    from deepext.client import DeepextClient

    seen: dict[str, Any] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen["body"] = request.read()
        from deepext.serve.routes.openai import _sources_event  # the gateway's own event, as it sends it

        answer = {"choices": [{"delta": {"content": "Hi"}}]}
        text = _sources_event("p/m", [{"n": 1, "document": "d"}]) + f"data: {json.dumps(answer)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    client = DeepextClient("http://api", token="t")
    client._http = httpx.Client(base_url="http://api/api/v1", transport=httpx.MockTransport(answer))
    sources: list[dict[str, Any]] = []
    rag = {"knowledge_base": "kb", "top_k": 2}
    pieces = list(client.chat_stream("p/m", [{"role": "user", "content": "hi"}], rag=rag, on_sources=sources.extend))
    assert pieces == ["Hi"] and sources == [{"n": 1, "document": "d"}]
    assert json.loads(seen["body"])["rag"] == rag


def test_the_provider_form_leaves_empty_fields_out() -> None:
    from apps.gradio.pages.providers import provider_spec

    assert provider_spec(" openai ", "", "", "", "", "") == {"name": "openai"}
    spec = provider_spec("local", "", "openai", "http://127.0.0.1:9/v1", "a, b", "sk-x")
    assert spec == {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["a", "b"],
                    "api_key": "sk-x"}  # fmt: skip
    assert provider_spec("lm", "", "", "http://127.0.0.1:9/v1", "", "")["kind"] == "openai"  # the default kind
    assert "kind" not in provider_spec("lm", "lmstudio", "", "http://127.0.0.1:9/v1", "", "")  # the preset's
