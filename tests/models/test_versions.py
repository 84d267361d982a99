"""Model versions: numbering, lineage, stages, tags, usage counters, model sources and the CLI.

Every test runs on SQLite and on the real PostgreSQL (the `platform` fixture). Model folders are a
config.json plus a small file: the registry stores and reads bytes, it never loads a model.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import deepext
from deepext import audit
from deepext.db.models import AuditEntry, Job, ModelVersion, PretrainedModel
from deepext.errors import InvalidInput, NotFound
from deepext.models.registry import BaseModelView, base_model_path, register_base_model
from deepext.models.versions import (
    ModelVersionView,
    get_model_version,
    lineage,
    list_model_versions,
    model_version_path,
    record_usage,
    register_model_version,
    resolve_model_source,
    set_stage,
    tag,
)
from deepext.platform import Platform
from deepext.projects import create_project, get_project
from tests.helpers import invoke_cli as _cli


def _model_folder(path: Path, weights: bytes = b"weights") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}))
    (path / "model.bin").write_bytes(weights)
    return path


@pytest.fixture
def base(platform: Platform, tmp_path: Path) -> str:
    register_base_model(platform, "tiny", _model_folder(tmp_path / "base", b"base weights"), actor="test")
    return "tiny"


def _register(
    platform: Platform, tmp_path: Path, name: str, weights: bytes, *, parent: str | None = None, **kwargs: Any
) -> ModelVersionView:
    folder = _model_folder(tmp_path / f"{name}-{hashlib.sha256(weights).hexdigest()[:8]}", weights)
    return register_model_version(
        platform, project="demo", name=name, folder=folder, base_model="tiny", parent=parent, actor="test", **kwargs
    )


def _version_rows(platform: Platform) -> int:
    with platform.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(ModelVersion)) or 0)


def _audit(platform: Platform) -> list[AuditEntry]:
    with platform.db.session() as session:
        assert audit.verify_chain(session) is None
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


# ---- registering and reading
def test_versions_are_numbered_per_name_and_record_their_inputs(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    config = {"lr": 1e-4, "model": {"path": "tiny"}, "epochs": 1}
    first = _register(platform, tmp_path, "sft", b"v1", config=config, metrics={"loss": 0.5})
    second = _register(platform, tmp_path, "sft", b"v2")
    other = _register(platform, tmp_path, "rm", b"rm1")

    assert (first.ref, second.ref, other.ref) == ("sft@1", "sft@2", "rm@1")
    assert (first.project, first.base_model, first.parent, first.kind, first.stage) == (
        "demo",
        "tiny",
        None,
        "full",
        "candidate",
    )
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    assert first.config_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert second.config_hash is None
    assert first.code_version and first.code_version.startswith(deepext.__version__)
    assert first.metrics == {"loss": 0.5}
    assert (first.tags, first.usage_requests, first.usage_tokens, first.last_used_at) == ([], 0, 0, None)

    assert get_model_version(platform, project, "sft") == second
    assert get_model_version(platform, project, "sft@1") == first
    assert [v.ref for v in list_model_versions(platform, project)] == ["rm@1", "sft@1", "sft@2"]
    assert [v.ref for v in list_model_versions(platform, project, name="sft")] == ["sft@1", "sft@2"]
    assert (model_version_path(platform, project, "sft@1") / "model.bin").read_bytes() == b"v1"
    assert (model_version_path(platform, project, "sft@2") / "config.json").is_file()
    register = [e for e in _audit(platform) if e.action == "model_version.register"]
    assert [e.resource for e in register] == ["model:demo/sft@1", "model:demo/sft@2", "model:demo/rm@1"]


def test_references_that_name_nothing_say_what_is_missing(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    _register(platform, tmp_path, "sft", b"v1")
    with pytest.raises(NotFound, match=r"model demo/sft@7 not found; it has versions 1-1"):
        get_model_version(platform, project, "sft@7")
    with pytest.raises(NotFound, match=r"model demo/sft has no version in stage 'production'"):
        get_model_version(platform, project, "sft@production")
    with pytest.raises(NotFound, match=r"model demo/sft has no version tagged 'best'"):
        get_model_version(platform, project, "sft@best")
    with pytest.raises(NotFound, match=r"model demo/ghost not found"):
        get_model_version(platform, project, "ghost")
    with pytest.raises(InvalidInput, match="expected NAME, NAME@VERSION"):
        get_model_version(platform, project, "Not A Ref")
    with pytest.raises(NotFound, match="project 'elsewhere' not found"):
        get_model_version(platform, "elsewhere", "sft")


def test_lineage_runs_through_parents_to_the_base_model(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    _register(platform, tmp_path, "sft", b"a")
    _register(platform, tmp_path, "dpo", b"b", parent="sft@1")
    third = _register(platform, tmp_path, "grpo", b"c", parent="dpo")  # newest dpo = dpo@1
    assert third.parent == "dpo@1"

    chain = lineage(platform, project, "grpo@1")
    assert [step.ref for step in chain[:-1] if isinstance(step, ModelVersionView)] == ["grpo@1", "dpo@1", "sft@1"]
    assert isinstance(chain[-1], BaseModelView) and chain[-1].name == "tiny"
    assert [type(step) for step in lineage(platform, project, "sft@1")] == [ModelVersionView, BaseModelView]


def test_a_lora_version_stores_the_merged_model_and_the_adapter(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.bin").write_bytes(b"lora")
    version = _register(platform, tmp_path, "lora", b"merged", kind="lora", adapter_folder=adapter)
    assert version.kind == "lora"
    assert (model_version_path(platform, project, "lora@1") / "model.bin").read_bytes() == b"merged"
    assert (model_version_path(platform, project, "lora@1", adapter=True) / "adapter_model.bin").read_bytes() == b"lora"
    _register(platform, tmp_path, "sft", b"full")
    with pytest.raises(NotFound, match="has no adapter folder"):
        model_version_path(platform, project, "sft@1", adapter=True)


def test_a_version_names_its_dataset_version_and_job(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    rows = tmp_path / "qa.jsonl"
    rows.write_text('{"prompt": "p", "completion": "c"}\n')
    with platform.db.session() as session:
        create_project(session, name="lab", actor="test")
        own_job = Job(project_id=get_project(session, project).id, kind="sft", config={})
        lab_job = Job(project_id=get_project(session, "lab").id, kind="sft", config={})
        session.add_all([own_job, lab_job])
    own = platform.datasets.push(project, "qa", rows, actor="test").version
    shared = platform.datasets.push("lab", "shared", rows, actor="test").version

    first = _register(platform, tmp_path, "sft", b"v1", dataset_version_id=own.id, job_id=own_job.id)
    assert (first.dataset_version, first.job_id) == ("qa@1", own_job.id)
    # A job may train on another project's dataset; the job itself must be the project's own.
    assert _register(platform, tmp_path, "sft", b"v2", dataset_version_id=shared.id).dataset_version == "lab/shared@1"
    with pytest.raises(NotFound, match=f"job {lab_job.id} not found in project 'demo'"):
        _register(platform, tmp_path, "sft", b"v3", job_id=lab_job.id)


# ---- what a failed registration leaves behind: nothing
@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"folder": "not-a-model"}, InvalidInput, r"not-a-model is not a model folder \(no config.json\)"),
        ({"base_model": "ghost"}, NotFound, "base model 'ghost' not found"),
        ({"parent": "ghost@1"}, NotFound, "model demo/ghost not found"),
        ({"parent": "sft@9"}, NotFound, "model demo/sft@9 not found"),
        ({"kind": "lora"}, InvalidInput, "a lora version needs its adapter_folder"),
        ({"kind": "qlora"}, InvalidInput, "model kind 'qlora'"),
        ({"dataset_version_id": 999}, NotFound, "dataset version id 999 not found"),
        ({"job_id": 999}, NotFound, "job 999 not found"),
        ({"name": "Bad Name"}, InvalidInput, "model name 'Bad Name'"),
        ({"project": "elsewhere"}, NotFound, "project 'elsewhere' not found"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_stored(
    platform: Platform,
    project: str,
    base: str,
    tmp_path: Path,
    change: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    _register(platform, tmp_path, "sft", b"v1")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "model.bin").write_bytes(b"x")
    arguments: dict[str, object] = {
        "project": project,
        "name": "sft",
        "folder": _model_folder(tmp_path / "candidate", b"new bytes"),
        "base_model": base,
        "actor": "test",
    }
    arguments.update({k: tmp_path / str(v) if k == "folder" else v for k, v in change.items()})
    blobs = set(platform.artifacts.iter_keys())
    with pytest.raises(error, match=message):
        register_model_version(platform, **arguments)  # type: ignore[arg-type]
    assert _version_rows(platform) == 1
    assert set(platform.artifacts.iter_keys()) == blobs


def test_a_parent_from_another_base_model_is_refused(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    register_base_model(platform, "other", _model_folder(tmp_path / "other-base", b"other"), actor="test")
    _register(platform, tmp_path, "sft", b"v1")
    with pytest.raises(InvalidInput, match="descends from base model 'tiny', not 'other'"):
        register_model_version(
            platform,
            project=project,
            name="dpo",
            folder=_model_folder(tmp_path / "dpo", b"dpo"),
            base_model="other",
            parent="sft@1",
            actor="test",
        )


def test_a_failure_inside_the_transaction_leaves_no_row(
    platform: Platform, project: str, base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit, "record", broken)
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        _register(platform, tmp_path, "sft", b"v1")
    assert _version_rows(platform) == 0
    monkeypatch.undo()
    assert _register(platform, tmp_path, "sft", b"v1").version == 1  # the number was never taken


# ---- stages, tags, usage
def test_promoting_to_production_archives_the_previous_production_version(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    for weights in (b"v1", b"v2", b"v3"):
        _register(platform, tmp_path, "sft", weights)
    _register(platform, tmp_path, "rm", b"rm")
    set_stage(platform, project, "rm@1", "production", actor="test")
    assert set_stage(platform, project, "sft@1", "production", actor="test").stage == "production"
    promoted = set_stage(platform, project, "sft@2", "production", actor="test")

    assert promoted.stage == "production"
    assert get_model_version(platform, project, "sft@production") == promoted
    assert get_model_version(platform, project, "sft@1").stage == "archived"
    assert get_model_version(platform, project, "sft@archived").ref == "sft@1"
    assert get_model_version(platform, project, "sft@candidate").ref == "sft@3"
    assert get_model_version(platform, project, "rm@1").stage == "production"  # another name is untouched
    assert [v.ref for v in list_model_versions(platform, project, stage="production")] == ["rm@1", "sft@2"]
    stage_entries = [e for e in _audit(platform) if e.action == "model_version.stage"]
    assert stage_entries[-1].detail == {"from": "candidate", "to": "production", "archived": ["sft@1"]}
    with pytest.raises(InvalidInput, match="stage 'live'"):
        set_stage(platform, project, "sft@3", "live", actor="test")


def test_tags_are_added_removed_and_select_versions(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    _register(platform, tmp_path, "sft", b"v1")
    _register(platform, tmp_path, "sft", b"v2")
    assert tag(platform, project, "sft@1", add=["best", "eval-ok"], actor="test").tags == ["best", "eval-ok"]
    assert tag(platform, project, "sft@1", add=["best"], remove=["eval-ok"], actor="test").tags == ["best"]
    assert get_model_version(platform, project, "sft@best").ref == "sft@1"
    for bad in ("production", "12", "-x"):
        with pytest.raises(InvalidInput, match=f"tag {bad!r}"):
            tag(platform, project, "sft@1", add=[bad], actor="test")
    actions = [e.action for e in _audit(platform)]
    assert actions.count("model_version.tag") == 2


def test_usage_counters_survive_concurrent_increments(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    version = _register(platform, tmp_path, "sft", b"v1")
    threads, per_thread = 8, 25
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            for _ in range(per_thread):
                record_usage(platform, version.id, tokens=3)
        except BaseException as exc:  # reported below: a thread's exception would be lost
            errors.append(exc)

    workers = [threading.Thread(target=serve) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    used = get_model_version(platform, project, "sft@1")
    assert (used.usage_requests, used.usage_tokens) == (threads * per_thread, threads * per_thread * 3)
    assert used.last_used_at is not None
    with pytest.raises(NotFound, match="model version id 999999 not found"):
        record_usage(platform, 999_999)
    with pytest.raises(InvalidInput, match="must not be negative"):
        record_usage(platform, version.id, tokens=-1)


# ---- model sources for training
def test_resolve_model_source_for_versions_base_models_and_folders(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    _register(platform, tmp_path, "sft", b"v1")
    set_stage(platform, project, "sft@1", "production", actor="test")
    _register(platform, tmp_path, "sft", b"v2")

    from_version = resolve_model_source(platform, project, "sft@production")
    assert (from_version.base_model, from_version.parent) == ("tiny", "sft@1")
    assert (from_version.path / "model.bin").read_bytes() == b"v1"
    assert resolve_model_source(platform, project, "sft").parent == "sft@2"

    from_base = resolve_model_source(platform, project, "tiny")
    assert (from_base.path, from_base.base_model, from_base.parent) == (base_model_path(platform, "tiny"), "tiny", None)

    folder = _model_folder(tmp_path / "My Model_v2", b"local")
    from_folder = resolve_model_source(platform, project, str(folder))
    assert (from_folder.base_model, from_folder.parent) == ("my-model_v2", None)
    assert (from_folder.path / "model.bin").read_bytes() == b"local"
    again = resolve_model_source(platform, project, folder)
    assert again == from_folder  # the same folder reuses its registration
    with platform.db.session() as session:
        assert session.scalar(select(func.count()).select_from(PretrainedModel)) == 2
    (folder / "model.bin").write_bytes(b"changed")  # new bytes, same folder name: a new base model
    assert resolve_model_source(platform, project, folder).base_model == "my-model_v2-2"
    same_bytes_elsewhere = _model_folder(tmp_path / "copy", b"base weights")
    assert resolve_model_source(platform, project, same_bytes_elsewhere).base_model == "tiny"


def test_resolve_model_source_refuses_what_is_no_model(
    platform: Platform, project: str, base: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match=r"empty is not a model folder \(no config.json\)") as info:
        resolve_model_source(platform, project, str(empty))
    assert info.value.field == "model.path"
    with pytest.raises(NotFound, match="no such folder"):
        resolve_model_source(platform, project, "/no/such/model")
    with pytest.raises(NotFound, match="model 'ghost': not a model version of project 'demo'"):
        resolve_model_source(platform, project, "ghost")
    with pytest.raises(NotFound, match="model 'org/ghost': not a model version"):
        resolve_model_source(platform, project, "org/ghost")
    with pytest.raises(NotFound, match="model demo/ghost not found"):
        resolve_model_source(platform, project, "ghost@production")


# ---- CLI
def test_cli_lists_shows_traces_and_tags_versions(
    platform: Platform, project: str, base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _cli(platform, monkeypatch, "models", "list")
    assert (code, output.strip()) == (0, "no model versions in demo match")
    _register(platform, tmp_path, "sft", b"v1", metrics={"eval/accuracy": 0.75})
    _register(platform, tmp_path, "sft", b"v2", parent="sft@1")
    record_usage(platform, get_model_version(platform, project, "sft@2").id, requests=3, tokens=120)

    code, output = _cli(platform, monkeypatch, "models", "list")
    assert code == 0, output
    lines = [line.split("\t") for line in output.strip().splitlines()]
    assert lines[0][:4] == ["ref", "stage", "kind", "base model"]
    assert [line[0] for line in lines[1:]] == ["sft@1", "sft@2"]
    assert lines[2][4] == "sft@1" and lines[2][7:9] == ["3", "120"]

    code, output = _cli(platform, monkeypatch, "models", "tag", "sft@1", "--add", "best", "--stage", "production")
    assert code == 0, output
    assert "demo/sft@1: stage production, tags best" in output
    code, output = _cli(platform, monkeypatch, "models", "tag", "sft@2", "--stage", "production", "-p", "demo")
    assert "demo/sft@1: archived (was production)" in output
    code, output = _cli(platform, monkeypatch, "models", "list", "--stage", "archived")
    assert [line.split("\t")[0] for line in output.strip().splitlines()[1:]] == ["sft@1"]

    code, output = _cli(platform, monkeypatch, "models", "show", "sft@best")
    assert code == 0, output
    assert "demo/sft@1" in output and "lineage       sft@1 -> tiny (base)" in output
    assert "eval/accuracy" in output and "0.75" in output
    code, output = _cli(platform, monkeypatch, "models", "show", "sft@production", "--json")
    shown = json.loads(output)
    assert (shown["ref"], shown["usage_requests"], shown["lineage"]) == ("sft@2", 3, ["sft@2", "sft@1", "tiny (base)"])

    code, output = _cli(platform, monkeypatch, "models", "lineage", "sft@2")
    assert code == 0, output
    steps = output.strip().splitlines()
    assert steps[0].startswith("sft@2  production  full") and steps[1].startswith("sft@1  archived  full")
    assert steps[2].startswith("tiny  base model (folder,")

    code, output = _cli(platform, monkeypatch, "models", "show", "sft@9")
    assert code == 1 and "error: model demo/sft@9 not found" in output
    code, output = _cli(platform, monkeypatch, "models", "tag", "sft@1", "--stage", "live")
    assert code == 2 and "stage 'live'" in output
