"""Jobs in the store (state machine, events, retries, queue order) and the scheduler's pure choice.

Store tests run on SQLite and on the real local PostgreSQL; nothing here starts Ray.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from deepext.db.models import JobState
from deepext.errors import Conflict, InvalidInput
from deepext.platform import Platform
from deepext.train import get_job, job_events, job_metrics, list_jobs, retry, submit_job
from deepext.train.jobs import create_job, fail, queue_position, report_metrics, transition
from deepext.train.scheduler import Candidate, pick_jobs
from deepext.train.service import cancel_job

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def candidate(job_id: int, project: int, priority: int = 0, cpus: float = 1, age: int = 0) -> Candidate:
    return Candidate(job_id, project, priority, T0 + dt.timedelta(seconds=age or job_id), {"CPU": cpus, "GPU": 0})


# ---------------------------------------------------------------- the scheduler's choice (pure)
def test_pick_orders_by_priority_then_age() -> None:
    queued = [candidate(1, 1), candidate(2, 1, priority=5), candidate(3, 1, priority=5, age=0)]
    assert pick_jobs(queued, {}, per_project_limit=3, free={"CPU": 8, "GPU": 0}) == [2, 3, 1]


def test_pick_respects_the_per_project_limit_counting_running_jobs() -> None:
    queued = [candidate(i, project=1 if i < 5 else 2) for i in range(1, 8)]
    chosen = pick_jobs(queued, {1: 1}, per_project_limit=2, free={"CPU": 100, "GPU": 0})
    assert chosen == [1, 5, 6]  # project 1 had one running: one more; project 2: two


def test_pick_admits_only_what_fits_and_lets_smaller_jobs_pass() -> None:
    queued = [candidate(1, 1, cpus=3), candidate(2, 2, cpus=2), candidate(3, 3, cpus=1)]
    assert pick_jobs(queued, {}, per_project_limit=2, free={"CPU": 2.5, "GPU": 0}) == [2]
    assert pick_jobs(queued, {}, per_project_limit=2, free={"CPU": 3, "GPU": 0}) == [1]
    gpu_job = Candidate(4, 1, 9, T0, {"CPU": 1, "GPU": 1})
    assert pick_jobs([gpu_job], {}, per_project_limit=2, free={"CPU": 8, "GPU": 0}) == []


# ---------------------------------------------------------------- the state machine (store)
def new_job(platform: Platform, project: str, **overrides: Any) -> int:
    fields: dict[str, Any] = {"kind": "custom", "config": {"x": 1}, "resources": {"CPU": 1}, "actor": "alice"}
    return create_job(platform, project=project, **{**fields, **overrides}).id


def test_a_job_walks_the_states_and_every_move_is_an_event(platform: Platform, project: str) -> None:
    job_id = new_job(platform, project, name="walker", priority=3)
    transition(platform, job_id, JobState.STARTING, "admitted")
    transition(platform, job_id, JobState.RUNNING, "entry point started")
    report_metrics(platform, job_id, 1, {"loss": 2.0, "note": "a"})
    report_metrics(platform, job_id, 2, {"loss": 1.5})
    job = transition(platform, job_id, JobState.SUCCEEDED, "done")
    assert (job.state, job.name, job.priority, job.owner) == ("succeeded", "walker", 3, "alice")
    assert job.started_at is not None and job.finished_at is not None and job.finished_at >= job.started_at
    assert job.metrics == {"loss": 1.5, "note": "a", "step": 2}
    assert [m["loss"] for m in job_metrics(platform, job_id)] == [2.0, 1.5]
    events = job_events(platform, job_id)
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, "queued"),
        ("queued", "starting"),
        ("starting", "running"),
        ("running", "succeeded"),
    ]
    assert events[-1].reason == "done" and all(e.at.tzinfo is not None for e in events)


def test_moves_the_machine_forbids_raise_conflict_and_change_nothing(platform: Platform, project: str) -> None:
    job_id = new_job(platform, project)
    with pytest.raises(Conflict, match="cannot become running"):
        transition(platform, job_id, JobState.RUNNING, "skipping starting")
    transition(platform, job_id, JobState.CANCELLED, "user")
    with pytest.raises(Conflict, match="cancelled"):
        transition(platform, job_id, JobState.SUCCEEDED, "too late")
    assert get_job(platform, job_id).state == "cancelled"
    assert len(job_events(platform, job_id)) == 2


def test_a_failure_with_retries_left_requeues_then_stays_failed(platform: Platform, project: str) -> None:
    job_id = new_job(platform, project, max_retries=1)

    def attempt() -> None:
        def bump(job: Any) -> None:
            job.attempts += 1

        transition(platform, job_id, JobState.STARTING, "admitted", update=bump)

    attempt()
    assert fail(platform, job_id, "boom 1").state == "queued"
    attempt()
    job = fail(platform, job_id, "boom 2")
    assert (job.state, job.error, job.attempts) == ("failed", "boom 2", 2)
    assert retry(platform, job_id, actor="bob").state == "queued"
    assert get_job(platform, job_id).error is None
    with pytest.raises(Conflict, match="not cancelled or failed"):
        retry(platform, job_id, actor="bob")


def test_queue_position_follows_priority_then_age(platform: Platform, project: str) -> None:
    low = new_job(platform, project)
    high = new_job(platform, project, priority=10)
    later_low = new_job(platform, project)
    assert [queue_position(platform, j) for j in (high, low, later_low)] == [1, 2, 3]
    cancel_job(platform, high, actor="alice")  # a queued job cancels without Ray
    assert queue_position(platform, high) is None and queue_position(platform, low) == 1
    assert [j.id for j in list_jobs(platform, project=project, states=["queued"])] == [later_low, low]


# ---------------------------------------------------------------- checks at submit
def test_submit_refuses_bad_jobs_naming_the_field_and_queues_nothing(
    platform: Platform, project: str, tiny_model: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    grpo = {"model": {"path": str(tiny_model)}, "data": {"path": str(prompts)}, "rewards": [{"name": "valid_json"}]}
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("grpo", {**grpo, "sampling": {"group_size": 0}}, "sampling.group_size"),
        ("grpo", {**grpo, "surprise": 1}, "surprise"),
        ("grpo", {**grpo, "data": {"dataset": f"{project}/nope@1"}}, "data.dataset"),
        ("grpo", {**grpo, "model": {"path": str(not_a_model)}}, "model.path"),
        ("custom", {"script": str(tmp_path / "missing.py")}, "script"),
        ("custom", {"script": str(prompts)}, "script"),
        ("custom", {"script": str(prompts), "colour": 1}, "colour"),
        ("banana", {}, "kind"),
    ]
    for kind, config, field in cases:
        with pytest.raises(InvalidInput) as caught:
            submit_job(platform, project=project, kind=kind, config=config, actor="alice")
        assert caught.value.field == field, (kind, config, str(caught.value))
    assert list_jobs(platform, project=project) == []


def test_submit_pins_the_dataset_version_and_stores_a_custom_script(
    platform: Platform, project: str, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    platform.datasets.push(project, "pairs", rows, labels=["train"], actor="alice")
    script = tmp_path / "train.py"
    script.write_text("print('hello')\n", encoding="utf-8")
    job = submit_job(
        platform,
        project=project,
        kind="custom",
        config={"script": str(script), "dataset": "pairs@train", "params": {"lr": 0.1}},
        actor="alice",
        priority=2,
    )
    assert job.config["dataset"] == f"{project}/pairs@1"
    assert platform.artifacts.read_bytes(job.config["script_key"]) == b"print('hello')\n"
    assert (job.state, job.resources, job.priority) == ("queued", {"CPU": 1.0, "GPU": 0.0}, 2)
