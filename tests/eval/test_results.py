"""Evaluation runs: storing examples, aggregates computed by hand, comparing runs, the gate and its CLI.

Every store test runs on SQLite and on the real PostgreSQL (the `platform` fixture).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.eval.checks import CheckResult, CheckSpec
from deepext.eval.compare import Comparison, MetricDelta, compare_runs, gate, parse_requirement
from deepext.eval.results import (
    ExampleResult,
    RunView,
    aggregate,
    evaluate_example,
    fail_run,
    finish_run,
    get_run,
    latest_run,
    list_runs,
    record_examples,
    run_examples,
    start_run,
)
from deepext.eval.suite import SuiteView, push_suite
from deepext.models.registry import register_base_model
from deepext.models.versions import register_model_version
from deepext.platform import Platform
from tests.helpers import invoke_cli as _cli

CHECKS = [
    {"name": "correct", "type": "exact_match", "params": {"reference_field": "answer"}, "weight": 2},
    {"name": "tone", "type": "exact_match", "params": {"reference_field": "greeting"}, "severity": "warning"},
    {"name": "no_pii", "type": "exact_match", "params": {"reference_field": "clean"}, "severity": "critical"},
]


@pytest.fixture
def suite(platform: Platform, project: str, tmp_path: Path) -> SuiteView:
    source = tmp_path / "qa.jsonl"
    source.write_text(json.dumps({"prompt": "p", "answer": "x"}) + "\n", encoding="utf-8")
    platform.datasets.push(project, "qa", source, actor="test")
    return push_suite(platform, project, {"name": "qa-suite", "dataset": "qa@1", "checks": CHECKS}, actor="test")


def _model_folder(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}))
    (path / "model.bin").write_bytes(weights)
    return path


@pytest.fixture
def models(platform: Platform, project: str, tmp_path: Path) -> list[str]:
    """sft@1 and sft@2, registered from two small folders."""
    register_base_model(platform, "tiny", _model_folder(tmp_path / "base", b"base"), actor="test")
    refs = []
    for n in (1, 2):
        folder = _model_folder(tmp_path / f"sft{n}", f"v{n}".encode())
        view = register_model_version(
            platform, project=project, name="sft", folder=folder, base_model="tiny", actor="test"
        )
        refs.append(view.ref)
    return refs


def _row(i: int) -> dict[str, Any]:
    """Row i against the constant output "x": `correct` fails when i % 4 == 0, `tone` when i % 3 == 0,
    `no_pii` when i % 100 == 7 (never on a multiple of 4, so 156 examples fail)."""
    return {
        "prompt": f"q{i}",
        "answer": "y" if i % 4 == 0 else "x",
        "greeting": "y" if i % 3 == 0 else "x",
        "clean": "y" if i % 100 == 7 else "x",
    }


def _example(index: int, verdicts: dict[str, bool], *, row: dict[str, Any] | None = None) -> ExampleResult:
    checks = {name: CheckResult(ok, float(ok), "" if ok else f"{name} failed") for name, ok in verdicts.items()}
    passed = verdicts.get("correct", True) and verdicts.get("no_pii", True)
    return ExampleResult(index, row or {"prompt": f"q{index}"}, f"q{index}", "out", checks, passed)


def _finished_run(platform: Platform, target: str, examples: list[ExampleResult], **kwargs: Any) -> RunView:
    run = start_run(platform, project="demo", suite="qa-suite", target=target, actor="test", **kwargs)
    record_examples(platform, run.id, examples)
    return finish_run(platform, run.id, seconds=1.5)


# ---- storing and aggregating
def test_600_examples_are_stored_fast_and_aggregated_by_hand(
    platform: Platform, project: str, suite: SuiteView
) -> None:
    checks = suite.spec.build_checks()
    examples = [evaluate_example(checks, index=i, row=_row(i), prompt=f"q{i}", output="x") for i in range(600)]
    run = start_run(
        platform, project=project, suite="qa-suite", target="http://serve:8000/v1#m", target_kind="endpoint", actor="t"
    )
    assert (run.state, run.suite, run.target_kind, run.examples_count) == ("running", "qa-suite@1", "endpoint", 0)

    started = time.perf_counter()
    assert record_examples(platform, run.id, examples[:250]) == 250
    assert record_examples(platform, run.id, examples[250:]) == 350
    assert time.perf_counter() - started < 10  # one INSERT per 1000 rows, not one per example
    assert get_run(platform, run.id).examples_count == 600

    done = finish_run(platform, run.id, seconds=12.5)  # aggregates computed from the stored examples
    numbers = done.aggregates
    assert numbers == aggregate(suite.spec.check_specs(), examples)
    correct, tone, no_pii = (numbers["checks"][name] for name in ("correct", "tone", "no_pii"))
    assert (correct["count"], correct["failures"], correct["pass_rate"]) == (600, 150, 0.75)
    assert (tone["failures"], tone["pass_rate"]) == (200, pytest.approx(400 / 600))
    assert (no_pii["failures"], no_pii["pass_rate"], no_pii["mean_score"]) == (6, 0.99, 0.99)
    assert (no_pii["severity"], correct["weight"]) == ("critical", 2.0)
    assert (numbers["examples"], numbers["passed"], numbers["pass_rate"]) == (600, 444, 0.74)
    assert numbers["score"] == pytest.approx((2 * 0.75 + 400 / 600 + 0.99) / 4)
    assert numbers["failures_by_severity"] == {"info": 0, "warning": 200, "error": 150, "critical": 6}
    assert (done.state, done.seconds, done.score, done.pass_rate) == ("succeeded", 12.5, numbers["score"], 0.74)
    assert done.finished_at is not None

    failed = run_examples(platform, run.id, failed_only=True)
    assert len(failed) == 156 and [e.index for e in failed[:3]] == [0, 4, 7]
    verdict = failed[2].checks["no_pii"]
    assert (verdict.passed, verdict.score, failed[2].checks["correct"].passed) == (False, 0.0, True)
    assert verdict.reason  # why it failed, as the check wrote it
    assert failed[2].input == _row(7) and failed[2].output == "x"
    assert [e.index for e in run_examples(platform, run.id, limit=2, offset=10)] == [10, 11]


def test_aggregate_of_nothing_and_of_zero_weights() -> None:
    specs = [CheckSpec("a", "exact_match", weight=0), CheckSpec("b", "exact_match", weight=0)]
    empty = aggregate(specs, [])
    assert (empty["score"], empty["pass_rate"], empty["checks"]["a"]["count"]) == (0.0, 0.0, 0)
    examples = [_example(0, {"a": True, "b": False}), _example(1, {"a": True, "b": True})]
    assert aggregate(specs, examples)["score"] == pytest.approx((1.0 + 0.5) / 2)  # plain average


def test_a_run_takes_results_only_while_running(platform: Platform, project: str, suite: SuiteView) -> None:
    run = start_run(
        platform, project=project, suite="qa-suite@1", target="demo/openai/gpt-4o", target_kind="provider", actor="t"
    )
    record_examples(platform, run.id, [_example(0, {"correct": True})])
    with pytest.raises(Conflict, match="already recorded"):
        record_examples(platform, run.id, [_example(1, {"correct": True}), _example(0, {"correct": False})])
    assert get_run(platform, run.id).examples_count == 1  # the refused batch left nothing
    with pytest.raises(InvalidInput, match="NaN"):
        finish_run(platform, run.id, {"score": float("nan")})

    failed = fail_run(platform, run.id, "the endpoint stopped answering")
    assert (failed.state, failed.error) == ("failed", "the endpoint stopped answering")
    assert len(run_examples(platform, run.id)) == 1
    with pytest.raises(Conflict, match="is failed"):
        record_examples(platform, run.id, [_example(2, {"correct": True})])
    with pytest.raises(Conflict, match="is failed"):
        finish_run(platform, run.id, {})
    with pytest.raises(NotFound, match="eval run 999 not found"):
        get_run(platform, 999)
    with pytest.raises(InvalidInput, match="target kind"):
        start_run(platform, project=project, suite="qa-suite", target="x", target_kind="laptop", actor="t")
    with pytest.raises(NotFound, match="suite demo/ghost not found"):
        start_run(platform, project=project, suite="ghost", target="http://x#m", target_kind="endpoint", actor="t")
    with pytest.raises(InvalidInput, match="BASE_URL#MODEL"):
        start_run(platform, project=project, suite="qa-suite", target="x", target_kind="endpoint", actor="t")


def test_runs_are_found_from_the_model_version(
    platform: Platform, project: str, suite: SuiteView, models: list[str]
) -> None:
    first = _finished_run(platform, "sft@1", [_example(0, {"correct": True})])
    newest = start_run(platform, project=project, suite="qa-suite", target="sft", actor="t")  # newest = sft@2
    assert (first.target, newest.target, newest.model_version_id is not None) == ("sft@1", "sft@2", True)
    second = finish_run(platform, newest.id, seconds=0.1)
    endpoint = _finished_run(platform, "http://x#m", [], target_kind="endpoint")

    assert [r.id for r in list_runs(platform, project)] == [endpoint.id, second.id, first.id]
    assert [r.id for r in list_runs(platform, project, model_version="sft@1")] == [first.id]
    assert [r.id for r in list_runs(platform, project, suite="qa-suite@1", limit=1)] == [endpoint.id]
    assert list_runs(platform, project, suite="qa-suite", state="failed") == []
    assert latest_run(platform, project, "qa-suite", "sft@2").id == second.id
    assert latest_run(platform, project, "qa-suite", "http://x#m").id == endpoint.id

    push_suite(platform, project, {"name": "qa-suite", "dataset": "qa@1", "checks": CHECKS[:1]}, actor="test")
    later = _finished_run(platform, "sft@1", [_example(0, {"correct": False})])
    assert later.suite == "qa-suite@2"
    assert latest_run(platform, project, "qa-suite", "sft@1").id == later.id
    assert latest_run(platform, project, "qa-suite@1", "sft@1").id == first.id
    with pytest.raises(NotFound, match="no succeeded run of suite qa-suite on sft@9"):
        latest_run(platform, project, "qa-suite", "sft@9")


# ---- comparing
def _pair(platform: Platform) -> tuple[RunView, RunView]:
    """Baseline A and candidate B over 10 examples: index 2 regresses on no_pii, 5 on correct, 7 is fixed,
    9 regresses on a different input (so it is not matched), 8 only flips the warning-level tone check."""
    ok = {"correct": True, "tone": True, "no_pii": True}
    a = [_example(i, ok) for i in range(10)]
    a[7] = _example(7, {**ok, "correct": False})
    b = [_example(i, ok) for i in range(10)]
    b[2] = _example(2, {**ok, "no_pii": False})
    b[5] = _example(5, {**ok, "correct": False, "tone": False})
    b[8] = _example(8, {**ok, "tone": False})
    b[9] = _example(9, {**ok, "correct": False}, row={"prompt": "another question"})
    return _finished_run(platform, "http://a#m", a, target_kind="endpoint"), _finished_run(
        platform, "http://b#m", b, target_kind="endpoint"
    )


def test_compare_reports_deltas_and_flips(platform: Platform, project: str, suite: SuiteView) -> None:
    a, b = _pair(platform)
    comparison = compare_runs(platform, a.id, b.id)
    assert [m.name for m in comparison.metrics] == [
        "score",
        "pass_rate",
        "correct.pass_rate",
        "correct.mean_score",
        "tone.pass_rate",
        "tone.mean_score",
        "no_pii.pass_rate",
        "no_pii.mean_score",
    ]
    correct = comparison.metric("correct.pass_rate")
    assert correct is not None and (correct.baseline, correct.candidate) == (0.9, 0.8)
    assert correct.delta == pytest.approx(-0.1)
    assert (comparison.metric("pass_rate").baseline, comparison.metric("pass_rate").candidate) == (0.9, 0.7)  # type: ignore[union-attr]
    assert comparison.metric("no_pii.pass_rate").candidate == 0.9  # type: ignore[union-attr]
    assert [(f.index, f.checks) for f in comparison.regressions] == [(2, ("no_pii",)), (5, ("correct", "tone"))]
    assert [(f.index, f.checks) for f in comparison.fixes] == [(7, ("correct",))]
    assert comparison.matched == 9

    reverse = compare_runs(platform, b.id, a.id)
    assert [f.index for f in reverse.regressions] == [7] and [f.index for f in reverse.fixes] == [2, 5]


def test_only_finished_runs_of_one_suite_compare(platform: Platform, project: str, suite: SuiteView) -> None:
    a, _ = _pair(platform)
    push_suite(platform, project, {"name": "other", "dataset": "qa@1", "checks": CHECKS}, actor="test")
    other = start_run(platform, project=project, suite="other", target="http://c#m", target_kind="endpoint", actor="t")
    with pytest.raises(InvalidInput, match="is running"):
        compare_runs(platform, a.id, other.id)
    finish_run(platform, other.id)
    with pytest.raises(InvalidInput, match="different suites"):
        compare_runs(platform, a.id, other.id)


# ---- the gate
def _comparison(*metrics: tuple[str, float, float]) -> Comparison:
    run = RunView(1, "demo", "s@1", "s", 1, 1, "endpoint", "x", None, None, "succeeded", {}, 0, None, None, "", None)
    checks: dict[str, dict[str, float]] = {}
    top: dict[str, float] = {}
    for name, _, value in metrics:
        check, _, field = name.rpartition(".")
        if check:
            checks.setdefault(check, {})[field] = value
        else:
            top[name] = value
    candidate = RunView(**{**run.__dict__, "id": 2, "aggregates": {**top, "checks": checks}})
    deltas = tuple(MetricDelta(name, a, b) for name, a, b in metrics)
    return Comparison(run, candidate, deltas, (), (), 0, (), ())


def test_gate_fails_on_a_drop_beyond_max_drop() -> None:
    steady = _comparison(("score", 0.8, 0.795), ("no_pii.pass_rate", 1.0, 1.0))
    assert gate(steady, 0.01).passed and gate(steady, 0.005).passed  # exactly the allowed drop passes
    result = gate(steady, 0.004)
    assert not result.passed and result.reasons == (
        "score dropped 0.8000 -> 0.7950 (-0.0050, more than the allowed 0.004)",
    )
    binary = _comparison(("correct.pass_rate", 0.9, 0.8), ("correct.mean_score", 0.9, 0.8))
    assert [r.split(" ")[0] for r in gate(binary, 0.01).reasons] == ["correct.pass_rate"]  # reported once
    graded = _comparison(("correct.pass_rate", 0.9, 0.9), ("correct.mean_score", 0.9, 0.7))
    assert [r.split(" ")[0] for r in gate(graded, 0.01).reasons] == ["correct.mean_score"]
    with pytest.raises(InvalidInput, match="max_drop"):
        gate(steady, -0.1)


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("rule=no_pii", "no_pii.pass_rate", ">=", 1.0),
        ("rule=no_pii>=0.99", "no_pii.pass_rate", ">=", 0.99),
        ("rule = no_pii > 0.5", "no_pii.pass_rate", ">", 0.5),
        ("score>=0.8", "score", ">=", 0.8),
        ("pass_rate >= 0.9", "pass_rate", ">=", 0.9),
        ("correct.mean_score<0.3", "correct.mean_score", "<", 0.3),
        ("score==1", "score", "==", 1.0),
    ],
)
def test_requirement_syntax(text: str, metric: str, op: str, threshold: float) -> None:
    requirement = parse_requirement(text)
    assert (requirement.metric, requirement.op, requirement.threshold) == (metric, op, threshold)


@pytest.mark.parametrize("text", ["rule=", "rule=no_pii>=high", "score>0.8x", "latency<3", "score", "no_pii>=1"])
def test_bad_requirements_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="requirement") as caught:
        parse_requirement(text)
    assert caught.value.field == "require"


def test_requirements_hold_on_the_candidate() -> None:
    comparison = _comparison(("score", 0.7, 0.8), ("no_pii.pass_rate", 1.0, 0.99))
    assert gate(comparison, 0.05, ["score>=0.8", "rule=no_pii>=0.99"]).passed  # 0.8 >= 0.8 despite float noise
    result = gate(comparison, 0.05, ["rule=no_pii", "score>=0.9", "rule=ghost"])
    assert result.reasons == (
        "rule=no_pii: no_pii.pass_rate is 0.9900 in run 2, needs >= 1",
        "score>=0.9: score is 0.8000 in run 2, needs >= 0.9",
        "rule=ghost: run 2 (s@1) has no ghost.pass_rate",
    )


# ---- CLI
def test_cli_gate_exits_0_when_the_candidate_holds_and_1_when_it_regresses(
    platform: Platform, project: str, suite: SuiteView, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _pair(platform)
    code, output = _cli(platform, monkeypatch, "eval", "gate", "--baseline", str(a.id), "--candidate", str(b.id))
    assert code == 1, output
    assert output.startswith(f"gate failed: run {b.id} (http://b#m) against run {a.id} (http://a#m), qa-suite")
    assert "  correct.pass_rate dropped 0.9000 -> 0.8000 (-0.1000, more than the allowed 0.01)" in output
    assert "  no_pii.pass_rate dropped 1.0000 -> 0.9000" in output

    code, output = _cli(platform, monkeypatch, "eval", "gate", "-a", str(b.id), "-b", str(a.id), "--max-drop", "0.01")
    assert code == 0, output  # the other way round every metric improves (though #7 regresses)
    assert output.startswith(f"gate passed: run {a.id} (http://a#m) against run {b.id} (http://b#m)")

    args = ["eval", "gate", "-a", str(b.id), "-b", str(a.id)]
    code, output = _cli(platform, monkeypatch, *args, "--require", "rule=no_pii", "--require", "score>=0.9")
    assert code == 0, output
    code, output = _cli(platform, monkeypatch, *args, "--require", "score>=0.99")
    assert code == 1 and "score>=0.99: score is 0.9" in output
    code, output = _cli(platform, monkeypatch, *args, "--require", "rule no_pii")
    assert code == 2 and "error: requirement 'rule no_pii'" in output
    code, output = _cli(platform, monkeypatch, "eval", "gate", "-a", "sft@1", "-b", str(a.id))
    assert code == 2 and "needs --suite NAME" in output


def test_cli_runs_show_and_compare_by_model_version(
    platform: Platform, project: str, suite: SuiteView, models: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = {"correct": True, "tone": True, "no_pii": True}
    a = _finished_run(platform, "sft@1", [_example(0, ok), _example(1, {**ok, "correct": False})])
    b = _finished_run(platform, "sft@2", [_example(0, {**ok, "no_pii": False}), _example(1, ok)])

    code, output = _cli(platform, monkeypatch, "eval", "runs", "--model", "sft@2")
    lines = [line.split("\t") for line in output.strip().splitlines()]
    assert code == 0 and lines[0][:4] == ["id", "suite", "target", "state"]
    assert [line[:4] for line in lines[1:]] == [[str(b.id), "qa-suite@1", "sft@2", "succeeded"]]
    code, output = _cli(platform, monkeypatch, "eval", "runs", "--suite", "qa-suite")
    assert [line.split("\t")[0] for line in output.strip().splitlines()[1:]] == [str(b.id), str(a.id)]

    code, output = _cli(platform, monkeypatch, "eval", "show", str(b.id), "--failed")
    assert code == 0, output
    assert "pass rate  0.5000" in output and "#0 FAIL" in output and "#1" not in output
    assert "no_pii failed: no_pii failed" in output
    assert "no_pii\tcritical\t0.5000\t0.5000\t1\t2" in output
    code, output = _cli(platform, monkeypatch, "eval", "show", str(b.id), "--json", "--limit", "1")
    shown = json.loads(output)
    assert shown["target"] == "sft@2" and [e["index"] for e in shown["examples"]] == [0]

    code, output = _cli(platform, monkeypatch, "eval", "compare", "sft@1", "sft@2", "--suite", "qa-suite")
    assert code == 0, output
    assert f"baseline  run {a.id}: qa-suite@1 on sft@1" in output
    assert "no_pii.pass_rate\t1.0000\t0.5000\t-0.5000" in output
    assert "2 examples matched; 1 regressed, 1 fixed" in output
    assert "regressed #0: no_pii" in output and "fixed #1: correct" in output
    code, output = _cli(platform, monkeypatch, "eval", "compare", str(a.id), str(b.id), "--json")
    assert json.loads(output)["regressions"] == [{"index": 0, "checks": ["no_pii"]}]

    gate_args = ["eval", "gate", "-a", "sft@1", "-b", "sft@2", "--suite", "qa-suite", "--max-drop", "1"]
    code, output = _cli(platform, monkeypatch, *gate_args)
    assert code == 0, output
    code, output = _cli(platform, monkeypatch, *gate_args, "--require", "rule=no_pii")
    assert code == 1 and "rule=no_pii: no_pii.pass_rate is 0.5000" in output
    code, output = _cli(platform, monkeypatch, "eval", "show", "999")
    assert code == 1 and "error: eval run 999 not found" in output
