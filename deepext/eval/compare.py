"""Comparing two runs of a suite, and the CI gate that decides whether a candidate may replace a baseline.

    comparison = compare_runs(platform, baseline_run_id, candidate_run_id)
    result = gate(comparison, max_drop=0.01, require=["rule=no_pii", "score>=0.8"])

Metrics are named `score` and `pass_rate` for the suite and `CHECK.pass_rate` / `CHECK.mean_score`
for each check present in both runs. A flip is an example (same index, same input row) whose
verdict changed: a regression passed in the baseline and fails in the candidate, a fix the reverse.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepext.errors import InvalidInput
from deepext.eval.results import ExampleResult, RunView, get_run, run_examples

if TYPE_CHECKING:
    from deepext.platform import Platform

_TOLERANCE = 1e-9  # float noise never fails a gate
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": lambda a, b: abs(a - b) <= _TOLERANCE,
}
_CONDITION = re.compile(r"^(?P<metric>[A-Za-z0-9_.-]+?)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>[-+0-9.eE]+)$")
_RULE = re.compile(r"^rule\s*=\s*(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*?)(?:\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>\S+))?$")


@dataclass(frozen=True)
class MetricDelta:
    name: str  # score | pass_rate | CHECK.pass_rate | CHECK.mean_score
    baseline: float
    candidate: float

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline


@dataclass(frozen=True)
class Flip:
    index: int
    checks: tuple[str, ...]  # the checks whose verdict changed in the flip's direction


@dataclass(frozen=True)
class Comparison:
    baseline: RunView  # A
    candidate: RunView  # B
    metrics: tuple[MetricDelta, ...]
    regressions: tuple[Flip, ...]  # passed in A, fail in B
    fixes: tuple[Flip, ...]  # failed in A, pass in B
    matched: int  # examples present in both runs with the same index and input
    only_in_baseline: tuple[str, ...]  # checks of A's suite version missing in B's
    only_in_candidate: tuple[str, ...]

    def metric(self, name: str) -> MetricDelta | None:
        return next((m for m in self.metrics if m.name == name), None)


@dataclass(frozen=True)
class Requirement:
    """A condition the candidate must meet, parsed from `rule=NAME`, `rule=NAME>=0.99` or `score>=0.8`."""

    text: str
    metric: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        # float noise in either direction never decides a threshold
        if self.op in (">=", ">"):
            return _OPERATORS[self.op](value + _TOLERANCE, self.threshold)
        if self.op in ("<=", "<"):
            return _OPERATORS[self.op](value - _TOLERANCE, self.threshold)
        return _OPERATORS[self.op](value, self.threshold)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...]  # one line per failed condition; empty when the gate passes


# ---- comparing
def compare_runs(platform: Platform, run_a: int, run_b: int) -> Comparison:
    """Baseline A against candidate B: both succeeded runs of the same suite (any versions) in one project."""
    baseline, candidate = get_run(platform, run_a), get_run(platform, run_b)
    for run in (baseline, candidate):
        if run.state != "succeeded":
            raise InvalidInput(f"eval run {run.id} is {run.state}; only succeeded runs can be compared", field="run")
    if (baseline.project, baseline.suite_name) != (candidate.project, candidate.suite_name):
        raise InvalidInput(
            f"eval runs {baseline.id} and {candidate.id} evaluate different suites "
            f"({baseline.project}/{baseline.suite} vs {candidate.project}/{candidate.suite}); "
            "only runs of the same suite compare",
            field="run",
        )
    checks_a = baseline.aggregates.get("checks", {})
    checks_b = candidate.aggregates.get("checks", {})
    metrics = [MetricDelta(name, _number(baseline, name), _number(candidate, name)) for name in ("score", "pass_rate")]
    for check in [name for name in checks_a if name in checks_b]:
        for field in ("pass_rate", "mean_score"):
            name = f"{check}.{field}"
            metrics.append(MetricDelta(name, _number(baseline, name), _number(candidate, name)))
    regressions, fixes, matched = _flips(run_examples(platform, baseline.id), run_examples(platform, candidate.id))
    return Comparison(
        baseline=baseline,
        candidate=candidate,
        metrics=tuple(metrics),
        regressions=regressions,
        fixes=fixes,
        matched=matched,
        only_in_baseline=tuple(name for name in checks_a if name not in checks_b),
        only_in_candidate=tuple(name for name in checks_b if name not in checks_a),
    )


def _flips(a: Sequence[ExampleResult], b: Sequence[ExampleResult]) -> tuple[tuple[Flip, ...], tuple[Flip, ...], int]:
    by_index = {example.index: example for example in b}
    regressions, fixes, matched = [], [], 0
    for before in a:
        after = by_index.get(before.index)
        if after is None or _canonical(after.input) != _canonical(before.input):
            continue
        matched += 1
        if before.passed == after.passed:
            continue
        shared = [name for name in before.checks if name in after.checks]
        if before.passed:
            names = tuple(n for n in shared if before.checks[n].passed and not after.checks[n].passed)
            regressions.append(Flip(before.index, names))
        else:
            names = tuple(n for n in shared if not before.checks[n].passed and after.checks[n].passed)
            fixes.append(Flip(before.index, names))
    return tuple(regressions), tuple(fixes), matched


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)


def _number(run: RunView, metric: str) -> float:
    """A metric of a run's aggregates, or InvalidInput when the run has no such metric."""
    if metric in ("score", "pass_rate"):
        value = run.aggregates.get(metric)
    else:
        check, _, field = metric.rpartition(".")
        value = run.aggregates.get("checks", {}).get(check, {}).get(field)
    if not isinstance(value, (int, float)):
        raise InvalidInput(f"eval run {run.id} ({run.suite}) has no metric {metric!r}", field="require")
    return float(value)


# ---- the gate
def parse_requirement(text: str) -> Requirement:
    """`rule=NAME` (check NAME passes on every example), `rule=NAME>=0.99` (its pass rate),
    `score>=0.8`, `pass_rate>=0.9` or `CHECK.mean_score>=0.5`; operators >=, >, <=, <, ==."""
    stripped = text.strip()
    rule = _RULE.match(stripped)
    if rule:
        if rule["op"] is None:
            return Requirement(stripped, f"{rule['name']}.pass_rate", ">=", 1.0)
        return Requirement(stripped, f"{rule['name']}.pass_rate", rule["op"], _threshold(text, rule["value"]))
    condition = _CONDITION.match(stripped)
    if condition:
        metric = condition["metric"]
        if metric in ("score", "pass_rate") or metric.endswith((".pass_rate", ".mean_score")):
            return Requirement(stripped, metric, condition["op"], _threshold(text, condition["value"]))
    raise InvalidInput(
        f"requirement {text!r}: expected rule=CHECK, rule=CHECK>=0.99, score>=0.8, pass_rate>=0.9 "
        "or CHECK.mean_score>=0.5",
        field="require",
    )


def _threshold(text: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"requirement {text!r}: {value!r} is not a number", field="require") from None


def gate(comparison: Comparison, max_drop: float, require: Sequence[str | Requirement] = ()) -> GateResult:
    """Pass unless a metric drops by more than `max_drop` (absolute) from baseline to candidate, or a
    requirement fails on the candidate (a required check the candidate's suite lacks fails too).

    A pass/fail check's mean score equals its pass rate; its drop is reported once, as the pass rate's.
    """
    if max_drop < 0:
        raise InvalidInput(f"max_drop must be >= 0 (got {max_drop})", field="max_drop")
    requirements = [r if isinstance(r, Requirement) else parse_requirement(r) for r in require]
    reasons: list[str] = []
    for metric in comparison.metrics:
        if metric.baseline - metric.candidate <= max_drop + _TOLERANCE:
            continue
        if metric.name.endswith(".mean_score"):
            twin = comparison.metric(metric.name.removesuffix(".mean_score") + ".pass_rate")
            if twin is not None and (twin.baseline, twin.candidate) == (metric.baseline, metric.candidate):
                continue
        reasons.append(
            f"{metric.name} dropped {metric.baseline:.4f} -> {metric.candidate:.4f} "
            f"({metric.delta:+.4f}, more than the allowed {max_drop:g})"
        )
    candidate = comparison.candidate
    for requirement in requirements:
        try:
            value = _number(candidate, requirement.metric)
        except InvalidInput:
            reasons.append(f"{requirement.text}: run {candidate.id} ({candidate.suite}) has no {requirement.metric}")
            continue
        if not requirement.holds(value):
            reasons.append(
                f"{requirement.text}: {requirement.metric} is {value:.4f} in run {candidate.id}, "
                f"needs {requirement.op} {requirement.threshold:g}"
            )
    return GateResult(passed=not reasons, reasons=tuple(reasons))
