"""Evaluation suites: parsing (errors name the field), versions pinned to a dataset version, the CLI.

Parsing tests are pure; the store tests run on SQLite and on the real PostgreSQL (`platform`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from deepext import audit
from deepext.db.models import AuditEntry
from deepext.errors import InvalidInput, NotFound
from deepext.eval.checks import CHECK_TYPES
from deepext.eval.suite import SuiteSpec, get_suite, list_suites, load_suite, parse_suite, push_suite
from deepext.platform import Platform
from tests.helpers import invoke_cli as _cli


def suite_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "qa-suite",
        "description": "sums",
        "dataset": "qa@golden",
        "checks": [
            {"name": "correct", "type": "exact_match", "params": {"reference_field": "answer"}, "weight": 2},
            {"name": "no_pii", "type": "exact_match", "severity": "critical", "message": "no emails"},
        ],
    }
    data.update(changes)
    return data


def _check(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "exact_match", **fields}


@pytest.fixture
def dataset(platform: Platform, project: str, tmp_path: Path) -> str:
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]
    source = tmp_path / "qa.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return platform.datasets.push(project, "qa", source, labels=["golden"], actor="test").version.ref


# ---- parsing
def test_a_suite_gets_its_defaults_and_working_checks() -> None:
    spec = parse_suite(suite_dict())
    assert (spec.prompt_field, spec.chat_template, spec.system_prompt, spec.limit) == ("prompt", True, None, None)
    generation = spec.generation
    assert (generation.max_new_tokens, generation.temperature, generation.top_p, generation.seed) == (
        256,
        0.0,
        1.0,
        None,
    )
    assert [(c.name, c.severity, c.weight) for c in spec.check_specs()] == [
        ("correct", "error", 2.0),
        ("no_pii", "critical", 1.0),
    ]
    correct, _ = spec.build_checks()
    assert correct.evaluate(" 4 ", {"answer": "4"}).passed
    assert not correct.evaluate("5", {"answer": "4"}).passed
    assert parse_suite(spec) is spec


THREE_CHECKS = [_check("a"), _check("b"), _check("c")]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"checks": [*THREE_CHECKS[:2], {"name": "c", "type": "nope"}]}, "checks[2].type"),
        ({"checks": [_check("a"), _check("b", severity="fatal")]}, "checks[1].severity"),
        ({"checks": [_check("a"), _check("a")]}, "checks[1].name"),
        ({"checks": [_check("bad name")]}, "checks[0].name"),
        ({"checks": [_check("a", weight=-1)]}, "checks[0].weight"),
        ({"checks": [_check("a", colour="red")]}, "checks[0].colour"),
        ({"checks": [{"type": "exact_match"}]}, "checks[0].name"),
        ({"checks": []}, "checks"),
        ({"generation": {"temperature": "hot"}}, "generation.temperature"),
        ({"generation": {"max_new_tokens": 0}}, "generation.max_new_tokens"),
        ({"chat_template": "yes"}, "chat_template"),
        ({"limit": 0}, "limit"),
        ({"prompt_fields": "question"}, "prompt_fields"),
        ({"dataset": "demo/QA@"}, "dataset"),
        ({"dataset": "Bad Project/qa@1"}, "dataset"),
        ({"name": "Bad Name"}, "name"),
    ],
)
def test_errors_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_suite(suite_dict(**changes))
    assert caught.value.field == field
    assert field in str(caught.value)


def test_a_missing_field_is_named() -> None:
    data = suite_dict()
    del data["dataset"]
    with pytest.raises(InvalidInput, match="dataset: Field required") as caught:
        parse_suite(data)
    assert caught.value.field == "dataset"


def test_unknown_check_type_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="unknown type 'nope'") as caught:
        parse_suite(suite_dict(checks=[_check("a", type="nope")]))
    assert "exact_match" in str(caught.value) and caught.value.field == "checks[0].type"


def test_other_check_types_are_built_when_the_checks_module_has_them() -> None:
    checks = [_check("correct")]
    if "regex" in CHECK_TYPES:
        checks.append({"name": "digits", "type": "regex", "params": {"pattern": "^[0-9]+$"}})
    if "json_valid" in CHECK_TYPES:
        checks.append({"name": "json", "type": "json_valid"})
    assert len(parse_suite(suite_dict(checks=checks)).build_checks()) == len(checks)


def test_load_suite_reads_yaml_and_names_file_and_field(tmp_path: Path) -> None:
    good = tmp_path / "suite.yaml"
    good.write_text(yaml.safe_dump(suite_dict(limit=3, generation={"temperature": 0, "seed": 7})), encoding="utf-8")
    spec = load_suite(good)
    assert (spec.limit, spec.generation.temperature, spec.generation.seed) == (3, 0.0, 7)

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(suite_dict(checks=[*THREE_CHECKS[:2], _check("c", type="nope")])))
    with pytest.raises(InvalidInput, match=r"wrong\.yaml: checks\[2\]\.type") as caught:
        load_suite(wrong)
    assert caught.value.field == "checks[2].type"

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(InvalidInput, match=r"broken\.yaml"):
        load_suite(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- name: x\n")
    with pytest.raises(InvalidInput, match="expected a mapping"):
        load_suite(listed)
    with pytest.raises(InvalidInput, match=r"missing\.yaml"):
        load_suite(tmp_path / "missing.yaml")


# ---- versions
def test_push_pins_the_dataset_and_stores_a_version_per_content(
    platform: Platform, project: str, dataset: str, tmp_path: Path
) -> None:
    first = push_suite(platform, project, suite_dict(), actor="test")
    assert (first.ref, first.created, first.spec.dataset) == ("qa-suite@1", True, "demo/qa@1")
    assert isinstance(first.spec, SuiteSpec) and len(first.content_hash) == 64

    again = push_suite(platform, project, suite_dict(), actor="test")
    assert (again.id, again.version, again.created) == (first.id, 1, False)
    pinned = push_suite(platform, project, suite_dict(dataset="demo/qa@1"), actor="test")
    assert (pinned.id, pinned.created) == (first.id, False)  # the same pinned content

    file = tmp_path / "suite.yaml"
    file.write_text(yaml.safe_dump(suite_dict(checks=[_check("correct")])), encoding="utf-8")
    second = push_suite(platform, project, file, actor="test")
    assert (second.ref, second.created, [c.name for c in second.spec.checks]) == ("qa-suite@2", True, ["correct"])
    assert push_suite(platform, project, str(file), actor="test").id == second.id

    reverted = push_suite(platform, project, suite_dict(), actor="test")
    assert (reverted.ref, reverted.content_hash) == ("qa-suite@3", first.content_hash)  # newest = what was pushed

    # the label moves to a new dataset version: the same file now means other rows, so a new version
    source = tmp_path / "qa2.jsonl"
    source.write_text(json.dumps({"prompt": "What is 9 + 1?", "answer": "10"}) + "\n", encoding="utf-8")
    platform.datasets.push(project, "qa", source, labels=["golden"], actor="test")
    platform.datasets.label(project, "qa@1", remove=["golden"], actor="test")
    moved = push_suite(platform, project, suite_dict(), actor="test")
    assert (moved.ref, moved.spec.dataset) == ("qa-suite@4", "demo/qa@2")

    with platform.db.session() as session:
        assert audit.verify_chain(session) is None
        pushes = session.scalars(select(AuditEntry.resource).where(AuditEntry.action == "eval_suite.push")).all()
    assert pushes == [f"eval_suite:demo/qa-suite@{n}" for n in (1, 2, 3, 4)]


def test_get_and_list_suites(platform: Platform, project: str, dataset: str) -> None:
    push_suite(platform, project, suite_dict(), actor="test")
    push_suite(platform, project, suite_dict(description="v2"), actor="test")
    push_suite(platform, project, suite_dict(name="other"), actor="test")

    assert get_suite(platform, project, "qa-suite").ref == "qa-suite@2"
    assert get_suite(platform, project, "qa-suite@1").spec.description == "sums"
    assert [s.ref for s in list_suites(platform, project)] == ["other@1", "qa-suite@2"]
    assert [s.ref for s in list_suites(platform, project, name="qa-suite")] == ["qa-suite@1", "qa-suite@2"]
    with pytest.raises(NotFound, match="it has versions 1-2"):
        get_suite(platform, project, "qa-suite@9")
    with pytest.raises(NotFound, match="suite demo/ghost not found"):
        get_suite(platform, project, "ghost")
    with pytest.raises(InvalidInput, match="expected NAME or NAME@VERSION"):
        get_suite(platform, project, "qa-suite@latest")


def test_a_dataset_that_does_not_exist_is_refused(platform: Platform, project: str, dataset: str) -> None:
    with pytest.raises(InvalidInput, match="dataset: dataset demo/qa@9 has no such version") as caught:
        push_suite(platform, project, suite_dict(dataset="qa@9"), actor="test")
    assert caught.value.field == "dataset"
    with pytest.raises(InvalidInput, match="dataset"):
        push_suite(platform, project, suite_dict(dataset="elsewhere/qa@1"), actor="test")
    assert list_suites(platform, project) == []


# ---- CLI
def test_cli_pushes_lists_and_shows_suites(
    platform: Platform, project: str, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _cli(platform, monkeypatch, "eval", "suites", "list")
    assert (code, output.strip()) == (0, "no suites in demo; push one with `deepext eval suites push FILE`")
    file = tmp_path / "suite.yaml"
    file.write_text(yaml.safe_dump(suite_dict()), encoding="utf-8")

    code, output = _cli(platform, monkeypatch, "eval", "suites", "push", str(file))
    assert (code, output.strip()) == (0, "pushed demo/qa-suite@1: dataset demo/qa@1, 2 checks")
    code, output = _cli(platform, monkeypatch, "eval", "suites", "push", str(file), "-p", "demo")
    assert (code, output.strip()) == (0, "unchanged, still demo/qa-suite@1: dataset demo/qa@1, 2 checks")

    code, output = _cli(platform, monkeypatch, "eval", "suites", "list")
    lines = [line.split("\t") for line in output.strip().splitlines()]
    assert code == 0 and lines[0][:3] == ["suite", "dataset", "checks"]
    assert lines[1][:4] == ["qa-suite@1", "demo/qa@1", "2", "sums"]

    code, output = _cli(platform, monkeypatch, "eval", "suites", "show", "qa-suite")
    assert code == 0 and output.startswith("demo/qa-suite@1")
    shown = yaml.safe_load(output.split("\n", 1)[1])
    assert shown["dataset"] == "demo/qa@1" and shown["checks"][1]["severity"] == "critical"
    code, output = _cli(platform, monkeypatch, "eval", "suites", "show", "qa-suite@1", "--json")
    assert json.loads(output)["ref"] == "qa-suite@1"

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(suite_dict(checks=[_check("a"), _check("b"), _check("c", type="nope")])))
    code, output = _cli(platform, monkeypatch, "eval", "suites", "push", str(bad))
    assert code == 2 and "checks[2].type" in output
    code, output = _cli(platform, monkeypatch, "eval", "suites", "show", "ghost")
    assert code == 1 and "error: suite demo/ghost not found" in output
