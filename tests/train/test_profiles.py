"""Training parameter profiles: merging (pure), checking settings against the kind's config, versions
in the store (SQLite and PostgreSQL), a job started from a profile, and the REST routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepext.errors import InvalidInput, NotFound
from deepext.platform import Platform
from deepext.train import list_jobs, submit_job
from deepext.train.profiles import apply_profile, check_settings, get_profile, list_profiles, save_profile
from tests.serve.conftest import Api

SMALL_GPU = {
    "sampling": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 16, "temperature": 0.7},
    "optim": {"learning_rate": 2e-5},
    "rewards": [{"name": "valid_json"}],
}


# ---------------------------------------------------------------- pure
def test_the_jobs_fields_are_laid_over_the_profile_field_by_field() -> None:
    merged = apply_profile(SMALL_GPU, {"sampling": {"group_size": 8}, "rewards": [{"name": "exact_match"}], "x": 1})
    assert merged["sampling"] == {"group_size": 8, "prompts_per_step": 2, "max_new_tokens": 16, "temperature": 0.7}
    assert merged["rewards"] == [{"name": "exact_match"}]  # a list is replaced whole
    assert merged["optim"] == {"learning_rate": 2e-5} and merged["x"] == 1
    assert SMALL_GPU["sampling"]["group_size"] == 4  # the profile itself is untouched


@pytest.mark.parametrize(
    ("kind", "settings", "field"),
    [
        ("grpo", {"sampling": {"group_sise": 4}}, "settings.sampling.group_sise"),
        ("grpo", {"sampling": {"group_size": 0}}, "settings.sampling.group_size"),
        ("grpo", {"sampling": {"temperature": "hot"}}, "settings.sampling.temperature"),
        ("grpo", {"model": {"lora": {"rank": -1}}}, "settings.model.lora.rank"),
        ("grpo", {"surprise": 1}, "settings.surprise"),
        ("sft", {"training": {"learning_rate": "fast"}}, "settings.training.learning_rate"),
        ("sft", {}, "settings"),
        ("dpo", {"x": 1}, "kind"),
    ],
)
def test_settings_a_config_cannot_hold_are_refused_naming_the_field(
    kind: str, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_settings(kind, settings)
    assert caught.value.field == field, str(caught.value)


def test_a_partial_config_of_right_fields_passes() -> None:
    assert check_settings("grpo", {**SMALL_GPU, "model": {"lora": {"rank": 16, "alpha": 32}}})
    assert check_settings("sft", {"training": {"learning_rate": 1e-4, "batch_size": 4}})


# ---------------------------------------------------------------- store and submit
def test_saving_versions_a_profile_and_the_same_settings_return_the_newest(platform: Platform, project: str) -> None:
    first = save_profile(platform, project, name="small-gpu", kind="grpo", settings=SMALL_GPU, actor="alice")
    again = save_profile(platform, project, name="small-gpu", kind="grpo", settings=SMALL_GPU, actor="bob")
    changed = {**SMALL_GPU, "optim": {"learning_rate": 1e-5}}
    second = save_profile(platform, project, name="small-gpu", kind="grpo", settings=changed, actor="alice")
    assert (first.version, first.created, again.version, again.created) == (1, True, 1, False)
    assert (second.ref, second.created) == ("small-gpu@2", True)
    assert get_profile(platform, project, "small-gpu").version == 2
    assert get_profile(platform, project, "small-gpu@1").settings == SMALL_GPU
    assert [p.ref for p in list_profiles(platform, project)] == ["small-gpu@2"]
    assert [p.ref for p in list_profiles(platform, project, "small-gpu")] == ["small-gpu@1", "small-gpu@2"]
    with pytest.raises(NotFound):
        get_profile(platform, project, "small-gpu@3")
    with pytest.raises(InvalidInput, match="profile name"):
        save_profile(platform, project, name="Bad Name", kind="grpo", settings=SMALL_GPU, actor="alice")


def test_a_job_from_a_profile_runs_its_settings_with_overrides_and_records_the_version(
    platform: Platform, project: str, tiny_model: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "q.jsonl"
    rows.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    platform.datasets.push(project, "questions", rows, actor="alice")
    save_profile(platform, project, name="small-gpu", kind="grpo", settings=SMALL_GPU, actor="alice")
    own = {"model": {"path": str(tiny_model)}, "data": {"dataset": "questions@1"}, "sampling": {"group_size": 2}}
    job = submit_job(platform, project=project, kind="grpo", config=own, profile="small-gpu", actor="alice")
    assert job.profile == "small-gpu@1"
    assert job.config["sampling"]["group_size"] == 2  # the job's own field wins
    assert job.config["sampling"]["max_new_tokens"] == 16 and job.config["optim"]["learning_rate"] == 2e-5

    for profile, message in (("nope", "does not exist"), ("small-gpu@9", "does not exist"), ("BAD!", "NAME@VERSION")):
        with pytest.raises(InvalidInput, match=message) as caught:
            submit_job(platform, project=project, kind="grpo", config=own, profile=profile, actor="alice")
        assert caught.value.field == "profile"
    with pytest.raises(InvalidInput, match="for grpo jobs, not sft"):
        submit_job(platform, project=project, kind="sft", config=own, profile="small-gpu", actor="alice")
    # The merged config is checked in full: a bad value in the job's own fields still names its field.
    with pytest.raises(InvalidInput) as caught:
        submit_job(
            platform,
            project=project,
            kind="grpo",
            config={**own, "sampling": {"group_size": 0}},
            profile="small-gpu",
            actor="a",
        )
    assert caught.value.field == "sampling.group_size"
    assert len(list_jobs(platform, project=project)) == 1


# ---------------------------------------------------------------- REST
def test_profiles_over_the_api_with_roles_and_field_errors(api: Api) -> None:
    body = {"name": "sft-lora", "kind": "sft", "settings": {"training": {"learning_rate": 1e-4}}}
    saved = api.call("POST", "/projects/p/profiles", "maintainer", json=body)
    assert saved.status_code == 201 and saved.json()["version"] == 1, saved.text
    assert api.call("POST", "/projects/p/profiles", "viewer", json=body).status_code == 403
    bad = api.call("POST", "/projects/p/profiles", "maintainer", json={**body, "settings": {"training": {"lr": 1}}})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "settings.training.lr", bad.text
    listed = api.call("GET", "/projects/p/profiles", "viewer")
    assert [p["name"] for p in listed.json()] == ["sft-lora"]
    assert api.call("GET", "/projects/p/profiles/sft-lora@1", "member").json()["settings"] == body["settings"]
    assert api.call("GET", "/projects/p/profiles/sft-lora@2", "member").status_code == 404
    assert api.call("GET", "/projects/q/profiles", "member").status_code == 404  # not a member of q: not shown
    assert len(list_profiles(api.platform, "p", "sft-lora")) == 1  # the refused saves stored nothing


def test_cli_saves_lists_and_shows_profiles(api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.helpers import invoke_cli

    settings = tmp_path / "small.yaml"
    settings.write_text("sampling:\n  group_size: 4\n", encoding="utf-8")
    save = ("profiles", "save", "small", str(settings), "--kind", "grpo", "-p", "p")
    code, output = invoke_cli(api.platform, monkeypatch, *save, "-d", "for one small GPU")
    assert code == 0 and "profile small@1 (grpo) saved" in output, output
    code, output = invoke_cli(api.platform, monkeypatch, *save)
    assert code == 0 and "small@1 (grpo) unchanged" in output
    settings.write_text("sampling:\n  group_sise: 4\n", encoding="utf-8")
    code, output = invoke_cli(api.platform, monkeypatch, *save)
    assert code == 2 and "settings.sampling.group_sise" in output
    code, output = invoke_cli(api.platform, monkeypatch, "profiles", "list", "-p", "p")
    assert code == 0 and "small@1" in output and "for one small GPU" in output
    code, output = invoke_cli(api.platform, monkeypatch, "profiles", "show", "small", "-p", "p")
    assert code == 0 and '"group_size": 4' in output
