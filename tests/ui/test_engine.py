"""The web app's logic without a browser: rights from the policy, errors as text, expiry, the job
form and the metric plots."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import gradio as gr
import pytest

from apps.gradio.engine import Engine, error_text
from apps.gradio.pages.job_form import form_values, job_config, lay_form_over, parse_yaml, profile_settings
from apps.gradio.pages.training import latest_values, plot_frames, progress_html, total_steps
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


NOW = dt.datetime.now(dt.UTC)
JOB_FIELDS = dict(id=1, project="p", kind="grpo", name="g", state="running", config={"schedule": {"steps": 4}})
JOB_FIELDS |= dict(resources={}, priority=0, owner="o", ray_job_id=None, attempts=1, max_retries=0, error=None)
JOB_FIELDS |= dict(metrics={}, output_key=None, created_at=NOW, started_at=NOW, finished_at=None)


def form_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        name="try", model="tiny", dataset="q@1", rewards="valid_json", steps=20, learning_rate=1e-5, group_size=4,
        prompts_per_step=2, max_new_tokens=32, temperature=1.0, kl_coef=0.0, lora_rank=8, batch_size=8,
    )  # fmt: skip
    return {**fields, **changes}


def test_a_field_edit_changes_only_what_it_spells_in_the_yaml() -> None:
    stored = job_config("grpo", **form_fields())
    stored["rewards"] = [{"name": "valid_json", "params": {"strict": True}}]
    stored["model"]["lora"] = {"rank": 8, "alpha": 64, "dropout": 0.1}
    stored["resources"] = {"num_learners": 2}
    # A copied job's YAML keeps what the form cannot spell while the fields say the same ...
    assert form_values(stored) == form_fields()
    kept = lay_form_over(stored, "grpo", job_config("grpo", **form_fields(steps=30)))
    assert kept["schedule"]["steps"] == 30 and kept["resources"] == {"num_learners": 2}
    assert kept["rewards"] == stored["rewards"] and kept["model"]["lora"]["alpha"] == 64
    # ... and takes the form's word once a field says something else.
    changed = lay_form_over(stored, "grpo", job_config("grpo", **form_fields(rewards="valid_json:2", lora_rank=0)))
    assert changed["rewards"] == [{"name": "valid_json", "weight": 2.0}] and "lora" not in changed["model"]
    # Switching kind drops the other kind's sections; a sweep starts over.
    sft = lay_form_over(stored, "sft", job_config("sft", **form_fields()))
    assert "sampling" not in sft and "rewards" not in sft and sft["training"]["max_steps"] == 20
    assert sft["resources"] == {"num_learners": 2}
    sweep = lay_form_over(stored, "sweep", job_config("sweep", **form_fields()))
    assert sweep["search_space"] and "resources" not in sweep
    assert form_values(sweep)["steps"] == 20 and lay_form_over({}, "grpo", stored) == stored


def test_the_yaml_view_follows_the_fields_before_it_was_ever_shown() -> None:
    from apps.gradio.pages.job_form import FORM_FIELDS
    from apps.gradio.pages.training import form_yaml

    values = [form_fields()[name] for name in FORM_FIELDS]
    text = form_yaml("grpo", None, *values)  # a closed accordion's code box holds None
    assert parse_yaml(text) == job_config("grpo", **form_fields())
    assert parse_yaml(form_yaml("grpo", "a: [unclosed", *values)) == job_config("grpo", **form_fields())
    with pytest.raises(ValueError, match="mapping"):
        parse_yaml(None)


def test_a_profile_keeps_the_settings_not_what_is_trained() -> None:
    config = {**job_config("grpo", **form_fields()), "resources": {"num_learners": 2}}
    settings = profile_settings(config)
    assert "name" not in settings and "data" not in settings and settings["model"] == {"lora": {"rank": 8, "alpha": 16}}
    assert settings["resources"] == {"num_learners": 2} and settings["sampling"]["group_size"] == 4
    bare = profile_settings(job_config("grpo", **form_fields(lora_rank=0, rewards="")))
    assert "model" not in bare and "rewards" not in bare and bare["schedule"] == {"steps": 20}


def test_the_comparison_table_highlights_what_differs_and_the_dashboard_fills_its_days() -> None:
    from apps.gradio.pages.dashboard import cluster_html, counts_html, days_frame
    from apps.gradio.pages.job_compare import compare_frames, diff_html
    from deepext.dashboard import ClusterUse, Dashboard
    from deepext.train.compare import Comparison, config_rows

    job = JobView(**{**JOB_FIELDS, "name": "<b>x</b>"})  # type: ignore[arg-type]
    rows = config_rows([{"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}])
    comparison = Comparison(jobs=[job, job], rows=rows, series={"kl": {"1": [[1, 0.1]]}, "loss": {"1": [[1, 2.0]]}})
    table = diff_html(comparison, only_differing=False)
    assert table.count('class="differs"') == 1 and table.count('class="same"') == 1 and "&lt;b&gt;" in table
    assert "b.c" in diff_html(comparison, only_differing=True) and "<code>a</code>" not in diff_html(
        comparison, only_differing=True
    )
    reward, loss, kl = compare_frames(comparison)
    assert reward.empty and list(loss["series"]) == ["#1 loss"] and list(kl["value"]) == [0.1]

    use = ClusterUse(nodes=1, total={"CPU": 2.0, "memory": 4.0 * 2**30}, used={"CPU": 1.0, "memory": 2.0**30})
    board = Dashboard(
        project="p", datasets=2, jobs_by_state={"queued": 1, "failed": 2}, model_versions_by_stage={"candidate": 1},
        deployments_by_state={}, evaluations=0, cluster=use,
        jobs_per_day=[{"day": "2026-12-03"}, {"day": "2026-12-04", "failed": 2}],
    )  # fmt: skip
    cards = counts_html(board)
    assert 'data-card="jobs"' in cards and ">3<" in cards and "failed 2 · queued 1" in cards
    assert days_frame(board).to_dict("records") == [
        {"day": "12-03", "state": "none", "jobs": 0},
        {"day": "12-04", "state": "failed", "jobs": 2},
    ]
    shown = cluster_html(board.cluster)
    assert "1 of 2 in use" in shown and "1.0 of 4.0 GiB" in shown and "no GPU" in shown
    assert "unavailable: gone" in cluster_html(ClusterUse(error="gone"))


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
    job = JobView(**JOB_FIELDS)  # type: ignore[arg-type]
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
