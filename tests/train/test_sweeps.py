"""Sweeps: a bad search space is refused before anything is queued; a sweep of GRPO trials on the tiny
model runs on Ray Tune (ASHA) as a job, ASHA stops a poor trial early, and the best trial's model is
registered with the sweep as its job; the learners' placement group of a trial that Tune ends is released."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepext.errors import InvalidInput
from deepext.platform import Platform
from deepext.train import submit_job
from tests.helpers import lab_platform, ray_holders, scheduler_running


def grpo_base(model: Path, prompts: Path) -> dict[str, Any]:
    return {
        "name": "sweep-base",
        "model": {"path": str(model)},
        "data": {"path": str(prompts)},
        "rewards": [{"name": "length_penalty", "params": {"max_chars": 12}}],
        "sampling": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 12},
        "optim": {"learning_rate": 0.001},
        "schedule": {"steps": 4},
        "resources": {"rollout_cpus": 0.45, "learner_cpus": 0.45, "threads_per_worker": 1, "max_model_len": 128},
    }


def write_prompts(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Count to {i}"}) + "\n" for i in range(8)))
    return path


@pytest.mark.parametrize(
    ("space", "field", "reason"),
    [
        ({"optim.learnin_rate": {"choice": [0.1]}}, "search_space.optim.learnin_rate", "Extra inputs"),
        ({"algorithm.kl_coef": {"choice": []}}, "search_space.algorithm.kl_coef", "at least one value"),
        ({"optim.learning_rate": {"uniform": [0.1, 0.01]}}, "search_space.optim.learning_rate", "low < high"),
        ({"optim.learning_rate": {"loguniform": [0, 0.1]}}, "search_space.optim.learning_rate", "low > 0"),
        ({"sampling.group_size": {"grid": [1, 4]}}, "search_space.sampling.group_size", "does not fit"),
        ({"schedule.steps.x": {"choice": [1]}}, "search_space.schedule.steps.x", "not a section"),
        (
            {"optim.learning_rate": {"choice": [1], "uniform": [0, 1]}},
            "search_space.optim.learning_rate",
            "exactly one",
        ),
    ],
)
def test_a_bad_search_space_is_refused_before_anything_is_queued(
    platform: Platform, project: str, tiny_model: Path, tmp_path: Path, space: dict[str, Any], field: str, reason: str
) -> None:
    from deepext.train import list_jobs

    config = {"kind": "grpo", "base": grpo_base(tiny_model, write_prompts(tmp_path / "p.jsonl")), "search_space": space}
    with pytest.raises(InvalidInput) as refused:
        submit_job(platform, project=project, kind="sweep", config=config, actor="t")
    assert refused.value.field == field and reason in str(refused.value), str(refused.value)
    assert list_jobs(platform, project=project) == []


def test_a_sweep_names_a_wrong_base_field_under_base(platform: Platform, project: str, tmp_path: Path) -> None:
    base = {**grpo_base(tmp_path / "no-model", write_prompts(tmp_path / "p.jsonl"))}
    config = {"kind": "grpo", "base": base, "search_space": {"optim.learning_rate": {"choice": [0.1]}}}
    with pytest.raises(InvalidInput) as refused:
        submit_job(platform, project=project, kind="sweep", config=config, actor="t")
    assert refused.value.field == "base.model.path"


@pytest.fixture
def lab(tmp_path: Path, postgres_url: str, ray_session: str) -> Iterator[Platform]:
    """The platform's store and settings; the test starts (and restarts) its scheduler itself."""
    platform = lab_platform(tmp_path, postgres_url, ray_session, "lab")
    try:
        yield platform
    finally:
        platform.close()


@pytest.mark.slow
def test_asha_stops_a_poor_trial_the_best_is_registered_and_the_sweep_outlives_a_platform_restart(
    lab: Platform, tiny_model: Path, tmp_path: Path
) -> None:
    """Two trials, one at a time (each trial starts a vLLM engine and Ray Train learners: about a
    minute on 2 cores), over a grid of completion lengths under a length penalty: the trial sampling
    24 tokens scores far worse than the one sampling 2 before it, so ASHA stops it at its first rung.
    The platform is restarted while the first trial runs, and the sweep still ends as it should.
    (The issue's 6-trial sweep over learning rate and KL, two at a time, is
    `benchmarks/sweep_vs_sequential.py`; releasing a stopped trial's learners is tested below.)"""
    from deepext.models.registry import register_base_model
    from deepext.models.versions import get_model_version
    from deepext.train import get_job, job_metrics, wait_for_job
    from deepext.train.trials import list_trials

    register_base_model(lab, "tiny", tiny_model, actor="test")
    lab.datasets.push("lab", "counting", write_prompts(tmp_path / "counting.jsonl"), actor="test")
    base = grpo_base(tiny_model, tmp_path / "unused.jsonl")
    base["model"], base["data"], base["schedule"] = {"path": "tiny"}, {"dataset": "counting@1"}, {"steps": 2}
    config = {
        "kind": "grpo",
        "base": base,
        "search_space": {
            "sampling.max_new_tokens": {"grid": [2, 24]},
            "optim.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
        },
        "metric": "reward_mean",
        "mode": "max",
        "trials": 1,  # samples of the space, each with every grid value: 2 trials
        "concurrency": 1,
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "seed": 7,
    }
    started = time.monotonic()
    job = submit_job(lab, project="lab", kind="sweep", config=config, name="counting", actor="t")
    assert job.resources["CPU"] == pytest.approx(0.9)  # one trial's learners and rollout workers
    with scheduler_running(lab):
        deadline = time.monotonic() + 300
        while not any(t.state == "running" for t in list_trials(lab, job.id)):
            assert time.monotonic() < deadline and get_job(lab, job.id).state != "failed", get_job(lab, job.id).error
            time.sleep(0.5)
    # The platform goes down mid-sweep (its scheduler stops, its store connection closes) and comes back:
    # the sweep runs on as its Ray job, and the new platform follows it to the end.
    lab.close()
    restarted = Platform.open(lab.settings)
    try:
        with scheduler_running(restarted):
            done = wait_for_job(restarted, job.id, timeout=600)
    finally:
        restarted.close()
    print(f"\nsweep of 2 trials: {time.monotonic() - started:.0f} s")
    trials = list_trials(lab, job.id)
    for trial in trials:
        print(f"trial {trial.number} {trial.trial_id}: {trial.state} after {trial.steps} of 2 steps, "
              f"reward_mean {trial.metrics.get('reward_mean')}, {trial.config} {trial.error or ''}")  # fmt: skip
    assert done.state == "succeeded", done.error

    assert len(trials) == 2 and all(set(t.config) == set(config["search_space"]) for t in trials)
    assert [t.config["sampling.max_new_tokens"] for t in trials] == [2, 24]
    assert {t.state for t in trials} <= {"completed", "stopped"}
    assert trials[1].state == "stopped" and trials[1].steps < 2  # ASHA ended it before the last step
    assert all(t.steps < 2 for t in trials if t.state == "stopped")
    assert all(t.steps == 2 for t in trials if t.state == "completed")

    rows = job_metrics(lab, job.id)
    assert {row["trial"] for row in rows} == {t.number for t in trials}  # every trial's curve is kept
    best = done.metrics["best_trial"]
    version = get_model_version(lab, "lab", "counting@1")
    assert version.job_id == job.id and version.base_model == "tiny"
    winner = next(t for t in trials if t.trial_id == best)
    finished = [t for t in trials if t.state == "completed"]
    assert winner in finished and winner.metrics["reward_mean"] == max(t.metrics["reward_mean"] for t in finished)
    assert winner.config["sampling.max_new_tokens"] == 2

    # Nothing of the sweep holds the cluster's CPUs once its job has ended (the next job needs them).
    import ray

    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"], ray_holders()


@pytest.mark.slow
def test_the_learners_group_of_an_ended_trial_is_released(ray_session: str, tmp_path: Path) -> None:
    """A trial that Tune stops dies with its Ray Train controller, and Ray keeps the learners' placement
    group (made by an actor) until the job ends; the sweep's driver removes the group the run recorded."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    from deepext.train.learner_groups import GROUP_FILE, release_learner_group

    group = placement_group([{"CPU": 0.1}])
    ray.get(group.ready(), timeout=60)
    (tmp_path / GROUP_FILE).write_text(group.id.hex())
    assert placement_group_table(group)["state"] == "CREATED"

    assert release_learner_group(tmp_path) is True
    deadline = time.monotonic() + 30
    while placement_group_table(group)["state"] != "REMOVED" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert placement_group_table(group)["state"] == "REMOVED"
    assert release_learner_group(tmp_path) is False  # already gone: nothing to do
    assert release_learner_group(tmp_path / "never-started") is False  # no group recorded


class TrainController:
    """Named as Ray Train's controller is, which is how the sweep's driver finds one."""

    def ping(self) -> str:
        return "alive"


@pytest.mark.slow
def test_a_sweep_ends_the_controllers_and_groups_its_stopped_trials_left(ray_session: str) -> None:
    """What a stopped trial can leave behind while its controller restarts its workers (a Ray Train
    controller, a fresh placement group) is ended by the sweep's driver once Tune is done."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    from deepext.train.learner_groups import release_job_leftovers

    controller = ray.remote(num_cpus=0)(TrainController).remote()
    assert ray.get(controller.ping.remote(), timeout=60) == "alive"
    group = placement_group([{"CPU": 0.1}])
    ray.get(group.ready(), timeout=60)

    ended = release_job_leftovers()
    assert f"controller {controller._actor_id.hex()}" in ended and f"placement group {group.id.hex()}" in ended
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(controller.ping.remote(), timeout=60)
    deadline = time.monotonic() + 30
    while placement_group_table(group)["state"] != "REMOVED" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert placement_group_table(group)["state"] == "REMOVED"


def test_the_cli_queues_shows_and_stops_a_sweep(
    platform: Platform, project: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deepext sweeps run / show / stop` on the metadata store (no trial runs: the rows are written as the
    sweep's Tune callback writes them)."""
    import yaml

    from deepext.train import get_job
    from deepext.train.trials import record_trial
    from tests.helpers import invoke_cli

    config = {"kind": "grpo", "base": grpo_base(tiny_model, write_prompts(tmp_path / "p.jsonl")),
              "search_space": {"optim.learning_rate": {"choice": [0.01, 0.001]}}, "trials": 2}  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    code, output = invoke_cli(platform, monkeypatch, "sweeps", "run", str(tmp_path / "sweep.yaml"), "-p", project)
    assert code == 0, output
    job_id = int(output.split()[1])
    assert output.startswith(f"sweep {job_id} queued") and get_job(platform, job_id).kind == "sweep"

    record_trial(platform, job_id, "t_00000", 1, state="completed", config={"optim.learning_rate": 0.01},
                 metrics={"reward_mean": 0.75}, steps=4)  # fmt: skip
    record_trial(platform, job_id, "t_00001", 2, state="running", config={"optim.learning_rate": 0.001},
                 metrics={"reward_mean": 0.25}, steps=1)  # fmt: skip
    code, output = invoke_cli(platform, monkeypatch, "sweeps", "show", str(job_id))
    assert code == 0, output
    assert f"sweep {job_id} (" in output and "queued" in output
    assert "t_00000" in output and "completed" in output and "0.75" in output
    assert "t_00001" in output and "running" in output and "0.25" in output

    code, output = invoke_cli(platform, monkeypatch, "sweeps", "stop", str(job_id))
    assert code == 0 and f"sweep {job_id} is cancelled" in output, output
    assert get_job(platform, job_id).state == "cancelled"
    # Stopping the sweep ends the trial still running with it (its Ray job, trials included, is stopped).
    from deepext.train.trials import list_trials

    trials = {t.trial_id: t for t in list_trials(platform, job_id)}
    assert (trials["t_00000"].state, trials["t_00001"].state) == ("completed", "stopped")
    assert trials["t_00001"].error and "the sweep was cancelled" in trials["t_00001"].error
