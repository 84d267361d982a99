"""Evaluation runs and their results: one row per run, one row per evaluated example.

A run evaluates one suite version against one target: a model version of the project (`NAME@N`,
pinned when the run starts, so a model's results are found from the model), an endpoint URL or a
provider model. Whoever produces the outputs (`deepext eval run`) calls, in order:

    run = start_run(platform, project="demo", suite="support", target="sft@production", actor=...)
    checks = suite.spec.build_checks()
    record_examples(platform, run.id, [evaluate_example(checks, index=i, row=r, prompt=p, output=o) ...])
    finish_run(platform, run.id, seconds=...)        # or fail_run(platform, run.id, "vLLM died")

`aggregate` turns examples into the numbers comparisons and gates read; it is pure.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deepext import audit
from deepext.db.models import EvalExample, EvalRun, EvalSuite, Job, Project, utcnow
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.eval.checks import SEVERITIES, Check, CheckResult, CheckSpec
from deepext.eval.suite import SuiteSpec, parse_suite_ref, resolve_suite
from deepext.projects import get_project

if TYPE_CHECKING:
    from deepext.platform import Platform

TARGET_KINDS = ("model_version", "base_model", "deployment", "provider", "endpoint")
RUN_STATES = ("running", "succeeded", "failed")
GATING_SEVERITIES = frozenset({"error", "critical"})  # an example passes when all of these pass
_BATCH = 1000  # examples per INSERT statement
_MAX_REASON = 2000


@dataclass(frozen=True)
class ExampleResult:
    """One dataset row evaluated: the row, the prompt the model saw, its output, each check's verdict."""

    index: int  # the row's position in the suite's dataset
    input: dict[str, Any]
    prompt: str
    output: str
    checks: dict[str, CheckResult]
    passed: bool  # every error and critical check passed


@dataclass(frozen=True)
class RunView:
    """A run as callers see it (no live database objects leak out)."""

    id: int
    project: str
    suite: str  # NAME@N
    suite_name: str
    suite_version: int
    suite_id: int
    target_kind: str
    target: str
    model_version_id: int | None
    job_id: int | None
    state: str
    aggregates: dict[str, Any]
    examples_count: int
    seconds: float | None
    error: str | None
    created_at: str
    finished_at: str | None

    @property
    def score(self) -> float | None:
        value = self.aggregates.get("score")
        return float(value) if value is not None else None

    @property
    def pass_rate(self) -> float | None:
        value = self.aggregates.get("pass_rate")
        return float(value) if value is not None else None


# ---- scoring (pure)
def evaluate_example(
    checks: Sequence[Check], *, index: int, row: dict[str, Any], prompt: str, output: str
) -> ExampleResult:
    """Run every check on one output; the example passes when all its error and critical checks pass."""
    results = {check.spec.name: check.evaluate(output, row) for check in checks}
    passed = all(results[c.spec.name].passed for c in checks if c.spec.severity in GATING_SEVERITIES)
    return ExampleResult(index=index, input=row, prompt=prompt, output=output, checks=results, passed=passed)


def aggregate(specs: Sequence[CheckSpec], examples: Sequence[ExampleResult]) -> dict[str, Any]:
    """The numbers of a run.

    Per check (over the examples it judged): `pass_rate`, `mean_score`, `count`, `failures`, with its
    `severity` and `weight`. For the suite: `score` = the weight-averaged mean scores of the checks
    (a plain average when every weight is 0), `pass_rate` = the share of examples that passed,
    `examples`, `passed`, and `failures_by_severity` = failed check verdicts per severity. With no
    examples every rate and score is 0.0.
    """
    checks: dict[str, dict[str, Any]] = {}
    by_severity = dict.fromkeys(SEVERITIES, 0)
    for spec in specs:
        verdicts = [example.checks[spec.name] for example in examples if spec.name in example.checks]
        count = len(verdicts)
        passed = sum(1 for verdict in verdicts if verdict.passed)
        scores = [_finite(verdict.score) for verdict in verdicts]
        checks[spec.name] = {
            "pass_rate": passed / count if count else 0.0,
            "mean_score": math.fsum(scores) / count if count else 0.0,
            "count": count,
            "failures": count - passed,
            "severity": spec.severity,
            "weight": spec.weight,
        }
        by_severity[spec.severity] = by_severity.get(spec.severity, 0) + count - passed
    total_weight = math.fsum(spec.weight for spec in specs)
    if total_weight > 0:
        score = math.fsum(spec.weight * checks[spec.name]["mean_score"] for spec in specs) / total_weight
    else:
        score = math.fsum(c["mean_score"] for c in checks.values()) / len(checks) if checks else 0.0
    examples_passed = sum(1 for example in examples if example.passed)
    return {
        "score": score,
        "pass_rate": examples_passed / len(examples) if examples else 0.0,
        "examples": len(examples),
        "passed": examples_passed,
        "failures_by_severity": by_severity,
        "checks": checks,
    }


def _finite(value: float) -> float:
    """A score for storage and averages: NaN and infinities (a broken check) count as 0."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


# ---- runs
def start_run(
    platform: Platform,
    *,
    project: str,
    suite: str,
    target: str,
    target_kind: str = "model_version",
    job_id: int | None = None,
    actor: str,
) -> RunView:
    """Open a run of suite `suite` (NAME or NAME@N) on `target`, in state running.

    For a model version, `target` is any reference to it (`sft@production`); the run records the exact
    `NAME@N` and the version's id. Through the gateway: a deployment `PROJECT/NAME`, a provider model
    `PROJECT/PROVIDER/MODEL`; any other OpenAI-compatible server: `BASE_URL#MODEL`.
    """
    from deepext.eval.endpoint import check_gateway_target, parse_endpoint_target
    from deepext.models.versions import get_model_version

    if target_kind not in TARGET_KINDS:
        raise InvalidInput(f"target kind {target_kind!r}: expected one of {', '.join(TARGET_KINDS)}", field="target")
    target = target.strip()
    if not target or len(target) > 512:
        raise InvalidInput("target: 1-512 characters", field="target")
    model_version_id = None
    if target_kind == "model_version":
        version = get_model_version(platform, project, target)
        target, model_version_id = version.ref, version.id
    elif target_kind == "base_model":
        from deepext.models.registry import get_base_model

        target = get_base_model(platform, target).name
    elif target_kind == "endpoint":
        parse_endpoint_target(target)
    else:
        check_gateway_target(target, target_kind)
    with platform.db.session() as session:
        project_row = get_project(session, project)
        suite_row = resolve_suite(session, project_row, suite)
        if job_id is not None:
            job = session.get(Job, job_id)
            if job is None or job.project_id != project_row.id:
                raise NotFound(f"job {job_id} not found in project {project!r}")
        row = EvalRun(
            project_id=project_row.id,
            suite_id=suite_row.id,
            target_kind=target_kind,
            target=target,
            model_version_id=model_version_id,
            job_id=job_id,
            state="running",
            aggregates={},
            examples_count=0,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="eval_run.start",
            resource=f"eval_run:{project}/{row.id}",
            project_id=project_row.id,
            detail={"suite": f"{suite_row.name}@{suite_row.version}", "target_kind": target_kind, "target": target},
        )
        return _view(session, row)


def record_examples(platform: Platform, run_id: int, examples: Iterable[ExampleResult]) -> int:
    """Store evaluated examples of a running run, in batched INSERTs; returns how many were stored.

    Examples may come in several calls (as generation progresses); an index stored twice is a Conflict.
    """
    rows = [_example_row(run_id, example) for example in examples]
    with platform.db.session() as session:
        run = _running(session, run_id)
        try:
            for start in range(0, len(rows), _BATCH):
                session.execute(insert(EvalExample), rows[start : start + _BATCH])
        except IntegrityError as exc:
            raise Conflict(f"eval run {run_id}: some of these example indexes are already recorded") from exc
        session.execute(
            update(EvalRun)
            .where(EvalRun.id == run.id)
            .values(examples_count=EvalRun.examples_count + len(rows))
            .execution_options(synchronize_session=False)
        )
    return len(rows)


def finish_run(
    platform: Platform, run_id: int, aggregates: dict[str, Any] | None = None, seconds: float | None = None
) -> RunView:
    """Mark a running run succeeded with its aggregates (computed from the stored examples when None)."""
    if aggregates is None:
        run = get_run(platform, run_id)
        aggregates = aggregate(_suite_spec(platform, run.suite_id).check_specs(), run_examples(platform, run_id))
    try:
        aggregates = json.loads(json.dumps(aggregates, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"aggregates are not JSON (no NaN or infinity): {exc}", field="aggregates") from exc
    with platform.db.session() as session:
        row = _running(session, run_id)
        row.state = "succeeded"
        row.aggregates = aggregates
        row.seconds = seconds
        row.finished_at = utcnow()
        session.flush()
        return _view(session, row)


def fail_run(platform: Platform, run_id: int, error: str) -> RunView:
    """Mark a running run failed with the reason (its examples so far stay readable)."""
    with platform.db.session() as session:
        row = _running(session, run_id)
        row.state = "failed"
        row.error = error
        row.finished_at = utcnow()
        session.flush()
        return _view(session, row)


# ---- reading
def get_run(platform: Platform, run_id: int) -> RunView:
    with platform.db.session() as session:
        row = session.get(EvalRun, run_id)
        if row is None:
            raise NotFound(f"eval run {run_id} not found; see `deepext eval runs`")
        return _view(session, row)


def list_runs(
    platform: Platform,
    project: str,
    *,
    suite: str | None = None,
    model_version: str | None = None,
    target: str | None = None,
    state: str | None = None,
    limit: int | None = None,
) -> list[RunView]:
    """The project's runs, newest first; `suite` is NAME (any version) or NAME@N, `model_version` any
    reference to a version of the project (its runs are that model's eval results)."""
    from deepext.models.versions import get_model_version

    if state is not None and state not in RUN_STATES:
        raise InvalidInput(f"state {state!r}: expected one of {', '.join(RUN_STATES)}", field="state")
    version_id = get_model_version(platform, project, model_version).id if model_version else None
    with platform.db.session() as session:
        project_row = get_project(session, project)
        query = _runs_query(session, project_row, suite)
        if version_id is not None:
            query = query.where(EvalRun.model_version_id == version_id)
        if target is not None:
            query = query.where(EvalRun.target == target)
        if state is not None:
            query = query.where(EvalRun.state == state)
        query = query.order_by(EvalRun.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return [_view(session, row) for row in session.scalars(query)]


def latest_run(platform: Platform, project: str, suite_ref: str, target: str) -> RunView:
    """The newest succeeded run of suite `suite_ref` (NAME: any version, NAME@N: that one) on `target`.

    `target` is a model version reference of the project (`sft@production` resolves first) or, when
    it names no model version, an endpoint or provider target as recorded.
    """
    from deepext.models.versions import get_model_version, parse_ref

    kind_filter: tuple[str, str | int]
    try:
        parse_ref(target)
        kind_filter = ("model_version_id", get_model_version(platform, project, target).id)
    except (InvalidInput, NotFound):
        kind_filter = ("target", target)
    with platform.db.session() as session:
        project_row = get_project(session, project)
        query = _runs_query(session, project_row, suite_ref).where(EvalRun.state == "succeeded")
        column = EvalRun.model_version_id if kind_filter[0] == "model_version_id" else EvalRun.target
        row = session.scalar(query.where(column == kind_filter[1]).order_by(EvalRun.id.desc()).limit(1))
        if row is None:
            raise NotFound(f"no succeeded run of suite {suite_ref} on {target} in project {project!r}")
        return _view(session, row)


def run_examples(
    platform: Platform, run_id: int, *, failed_only: bool = False, limit: int | None = None, offset: int = 0
) -> list[ExampleResult]:
    """A run's examples by index; `failed_only` keeps those whose error or critical checks failed."""
    with platform.db.session() as session:
        run = session.get(EvalRun, run_id)
        if run is None:
            raise NotFound(f"eval run {run_id} not found; see `deepext eval runs`")
        suite = session.get(EvalSuite, run.suite_id)
        order = _check_names(suite.spec if suite else {})
        query = select(EvalExample).where(EvalExample.run_id == run_id)
        if failed_only:
            query = query.where(EvalExample.passed.is_(False))
        query = query.order_by(EvalExample.index).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return [_example_of(row, order) for row in session.scalars(query)]


def run_suite(platform: Platform, run: RunView) -> SuiteSpec:
    """The suite version a run evaluated."""
    return _suite_spec(platform, run.suite_id)


# ---- helpers
def _runs_query(session: Session, project: Project, suite: str | None) -> Select[EvalRun]:
    query = select(EvalRun).where(EvalRun.project_id == project.id)
    if suite is None:
        return query
    name, version = parse_suite_ref(suite)
    if version is not None:
        return query.where(EvalRun.suite_id == resolve_suite(session, project, suite).id)
    ids = select(EvalSuite.id).where(EvalSuite.project_id == project.id, EvalSuite.name == name)
    return query.where(EvalRun.suite_id.in_(ids))


def _running(session: Session, run_id: int) -> EvalRun:
    row = session.get(EvalRun, run_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise NotFound(f"eval run {run_id} not found")
    if row.state != "running":
        raise Conflict(f"eval run {run_id} is {row.state}; only a running run takes results")
    return row


def _suite_spec(platform: Platform, suite_id: int) -> SuiteSpec:
    with platform.db.session() as session:
        row = session.get(EvalSuite, suite_id)
        if row is None:
            raise NotFound(f"suite id {suite_id} not found")
        return SuiteSpec.model_validate(row.spec, strict=False)


def _example_row(run_id: int, example: ExampleResult) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "index": int(example.index),
        # dataset rows may hold dates or bytes (Parquet); JSON columns take their text form
        "input": json.loads(json.dumps(example.input, default=str)),
        "prompt": example.prompt,
        "output": example.output,
        "checks": {
            name: {
                "passed": bool(result.passed),
                "score": _finite(result.score),
                "reason": str(result.reason)[:_MAX_REASON],
                "path": result.path,
            }
            for name, result in example.checks.items()
        },
        "passed": bool(example.passed),
    }


def _example_of(row: EvalExample, order: Sequence[str]) -> ExampleResult:
    return ExampleResult(
        index=row.index,
        input=dict(row.input),
        prompt=row.prompt,
        output=row.output,
        checks={
            name: CheckResult(bool(v["passed"]), float(v["score"]), v.get("reason", ""), v.get("path"))
            for name, v in _in_order(row.checks or {}, order).items()
        },
        passed=row.passed,
    )


def _check_names(spec: dict[str, Any]) -> list[str]:
    return [str(check.get("name")) for check in spec.get("checks", []) if isinstance(check, dict)]


def _in_order(by_check: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """`by_check` with its keys in the suite's check order (PostgreSQL's JSONB does not keep key order)."""
    first = {name: by_check[name] for name in order if name in by_check}
    return first | {name: by_check[name] for name in sorted(by_check) if name not in first}


def _ordered_aggregates(aggregates: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    ordered = dict(aggregates)
    if isinstance(ordered.get("checks"), dict):
        ordered["checks"] = _in_order(ordered["checks"], order)
    if isinstance(ordered.get("failures_by_severity"), dict):
        ordered["failures_by_severity"] = _in_order(ordered["failures_by_severity"], SEVERITIES)
    return ordered


def _utc(at: dt.datetime | None) -> str | None:
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).isoformat()  # SQLite returns naive UTC times


def _view(session: Session, row: EvalRun) -> RunView:
    session.flush()
    suite = session.get(EvalSuite, row.suite_id)
    project = session.get(Project, row.project_id)
    if suite is None or project is None:  # both cascade-delete their runs
        raise NotFound(f"eval run {row.id}: its suite or project is gone")
    return RunView(
        id=row.id,
        project=project.name,
        suite=f"{suite.name}@{suite.version}",
        suite_name=suite.name,
        suite_version=suite.version,
        suite_id=suite.id,
        target_kind=row.target_kind,
        target=row.target,
        model_version_id=row.model_version_id,
        job_id=row.job_id,
        state=row.state,
        aggregates=_ordered_aggregates(row.aggregates or {}, _check_names(suite.spec)),
        examples_count=int(row.examples_count or 0),
        seconds=row.seconds,
        error=row.error,
        created_at=_utc(row.created_at) or "",
        finished_at=_utc(row.finished_at),
    )
