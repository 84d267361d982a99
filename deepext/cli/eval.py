"""`deepext eval ...`: evaluation suites (push, list, show), runs and their examples, comparing two runs,
and the CI gate (exit 0 when the candidate may replace the baseline, 1 when it may not)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from deepext.cli.common import (
    ProjectOption,
    actor,
    err,
    open_platform,
    out,
    print_json,
    print_table,
    reports_errors,
)
from deepext.errors import InvalidInput

if TYPE_CHECKING:
    from deepext.eval.compare import Comparison
    from deepext.eval.results import RunView
    from deepext.platform import Platform

eval_app = typer.Typer(help="Evaluation suites, runs, comparison and the CI gate.", no_args_is_help=True)
suites_app = typer.Typer(help="Versioned evaluation suites.", no_args_is_help=True)
eval_app.add_typer(suites_app, name="suites")

RunArgument = typer.Argument(..., help="A run id, or a model version reference together with --suite.")
SuiteForRefsOption = typer.Option(
    None, "--suite", "-s", help="With model version references: use the newest succeeded run of this suite."
)


def _rate(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, (int, float)) else "-"


# ---- suites
@suites_app.command("push")
@reports_errors
def suites_push(
    file: Path = typer.Argument(..., help="The suite's YAML file."),
    project: str = ProjectOption,
) -> None:
    """Store a suite as a new version, its dataset pinned to the exact version; the same content is not stored twice."""
    from deepext.eval.suite import push_suite

    suite = push_suite(open_platform(), project, file, actor=actor())
    verdict = "pushed" if suite.created else "unchanged, still"
    out.print(
        f"{verdict} {project}/{suite.ref}: dataset {suite.spec.dataset}, {len(suite.spec.checks)} checks",
        highlight=False,
    )


@suites_app.command("list")
@reports_errors
def suites_list(
    project: str = ProjectOption,
    name: str | None = typer.Option(None, "--name", "-n", help="Every version of this suite."),
) -> None:
    """List the project's suites (the newest version of each), or every version of one."""
    from deepext.eval.suite import list_suites

    suites = list_suites(open_platform(), project, name=name)
    if not suites:
        out.print(f"no suites in {project}; push one with `deepext eval suites push FILE`", highlight=False)
        return
    rows = [
        (s.ref, s.spec.dataset, str(len(s.spec.checks)), s.spec.description or "-", s.created_by, s.created_at[:19])
        for s in suites
    ]
    print_table(("suite", "dataset", "checks", "description", "by", "created"), rows)


@suites_app.command("show")
@reports_errors
def suites_show(
    ref: str = typer.Argument(..., help="NAME (newest version) or NAME@N."),
    project: str = ProjectOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show one suite version as stored (its dataset pinned)."""
    import yaml

    from deepext.eval.suite import get_suite

    suite = get_suite(open_platform(), project, ref)
    spec = suite.spec.model_dump(mode="json")
    if as_json:
        print_json({"ref": suite.ref, "content_hash": suite.content_hash, "created_at": suite.created_at, **spec})
        return
    out.print(f"{project}/{suite.ref}  ({suite.content_hash[:12]}, {suite.created_by}, {suite.created_at[:19]})")
    typer.echo(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).rstrip())


# ---- runs
@eval_app.command("run")
@reports_errors
def eval_run(
    suite: str = typer.Argument(..., help="Suite NAME or NAME@N."),
    target: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="NAME@N, or with --kind: a base model, PROJECT/NAME (deployment), PROJECT/PROVIDER/MODEL "
        "(provider) or BASE_URL#MODEL (endpoint).",
    ),
    project: str = ProjectOption,
    base: bool = typer.Option(False, "--base", help="The target is a registered base model (--kind base_model)."),
    kind: str = typer.Option(
        "model_version", "--kind", help="model_version | base_model | deployment | provider | endpoint"
    ),
    key_env: str | None = typer.Option(None, "--key-env", help="Environment variable with an endpoint's API key."),
    workers: int = typer.Option(1, "--workers", help="vLLM actors generating in parallel."),
    as_job: bool = typer.Option(False, "--job", help="Queue it as an `eval` job instead of running it here."),
) -> None:
    """Evaluate a model with a suite and store the run: a model version or base model is generated
    by vLLM actors on Ray; a deployment or provider model is called through the gateway as you."""
    platform = open_platform()
    kind = "base_model" if base else kind
    if as_job:
        from deepext.train import submit_job

        config: dict[str, Any] = {"suite": suite, "target": target, "target_kind": kind, "workers": workers}
        if key_env:
            config["endpoint_key_env"] = key_env
        job = submit_job(platform, project=project, kind="eval", config=config, actor=actor())
        out.print(f"job {job.id} queued (eval {suite} on {target})")
        return
    from deepext.cluster import connect_ray
    from deepext.eval.runner import Workers, evaluate

    connect_ray(platform.settings, log_to_driver=False)
    with err.status("starting") as status:
        run = evaluate(
            platform,
            project=project,
            suite=suite,
            target=target,
            target_kind=kind,
            workers=Workers(count=workers),
            actor=actor(),
            endpoint_key_env=key_env,
            progress=status.update,
        )
    _print_run(run)


@eval_app.command("runs")
@reports_errors
def eval_runs(
    project: str = ProjectOption,
    suite: str | None = typer.Option(None, "--suite", "-s", help="NAME (any version) or NAME@N."),
    model: str | None = typer.Option(None, "--model", "-m", help="Runs on this model version (NAME@N, @production)."),
    limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
) -> None:
    """List evaluation runs, newest first."""
    from deepext.eval.results import list_runs

    runs = list_runs(open_platform(), project, suite=suite, model_version=model, limit=limit)
    if not runs:
        out.print(f"no eval runs in {project} match", highlight=False)
        return
    rows = [
        (
            str(r.id),
            r.suite,
            r.target if r.target_kind == "model_version" else f"{r.target_kind}:{r.target}",
            r.state,
            _rate(r.score),
            _rate(r.pass_rate),
            str(r.examples_count),
            f"{r.seconds:.1f}" if r.seconds is not None else "-",
            r.created_at[:19],
        )
        for r in runs
    ]
    print_table(("id", "suite", "target", "state", "score", "pass rate", "examples", "seconds", "created"), rows)


@eval_app.command("show")
@reports_errors
def eval_show(
    run_id: int = typer.Argument(..., help="The run's id (see `deepext eval runs`)."),
    failed: bool = typer.Option(False, "--failed", help="Only examples whose error or critical checks failed."),
    limit: int = typer.Option(20, "--limit", help="At most this many examples."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a run: its numbers per check, then its examples with the reasons checks failed."""
    from deepext.eval.results import get_run, run_examples

    platform = open_platform()
    run = get_run(platform, run_id)
    examples = run_examples(platform, run_id, failed_only=failed, limit=limit)
    if as_json:
        print_json({**run.__dict__, "examples": [example.__dict__ for example in examples]})
        return
    _print_run(run)
    checks = run.aggregates.get("checks", {})
    if checks:
        rows = [
            (
                name,
                str(c.get("severity", "-")),
                _rate(c.get("pass_rate")),
                _rate(c.get("mean_score")),
                str(c.get("failures", "-")),
                str(c.get("count", "-")),
            )
            for name, c in checks.items()
        ]
        print_table(("check", "severity", "pass rate", "mean score", "failures", "count"), rows)
    for example in examples:
        verdict = "pass" if example.passed else "FAIL"
        out.print(f"\n#{example.index} {verdict}", highlight=False)
        out.print(f"  prompt  {_clip(example.prompt)}", highlight=False, soft_wrap=True)
        out.print(f"  output  {_clip(example.output)}", highlight=False, soft_wrap=True)
        for name, result in example.checks.items():
            if not result.passed:
                where = f" at {result.path}" if result.path else ""
                out.print(f"  {name} failed{where}: {result.reason}", highlight=False, soft_wrap=True)


def _print_run(run: RunView) -> None:
    fields = {
        "suite": f"{run.project}/{run.suite}",
        "target": f"{run.target} ({run.target_kind})",
        "state": run.state + (f": {run.error}" if run.error else ""),
        "score": _rate(run.score),
        "pass rate": _rate(run.pass_rate),
        "examples": run.examples_count,
        "seconds": f"{run.seconds:.1f}" if run.seconds is not None else "-",
        "job": run.job_id if run.job_id is not None else "-",
        "created": run.created_at[:19],
    }
    out.print(f"eval run {run.id}", highlight=False)
    for label, value in fields.items():
        out.print(f"  {label:<10} {value}", highlight=False, soft_wrap=True)


def _clip(text: str, limit: int = 300) -> str:
    flat = text.replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---- compare and gate
def _resolve_run(platform: Platform, project: str, text: str, suite: str | None) -> int:
    """A run id, or with `suite` the newest succeeded run of that suite on a model version (or target)."""
    from deepext.eval.results import latest_run

    if text.isdigit():
        return int(text)
    if suite is None:
        raise InvalidInput(f"{text!r} is no run id; a model version reference needs --suite NAME", field="run")
    return latest_run(platform, project, suite, text).id


def _comparison(platform: Platform, project: str, baseline: str, candidate: str, suite: str | None) -> Comparison:
    from deepext.eval.compare import compare_runs

    a = _resolve_run(platform, project, baseline, suite)
    b = _resolve_run(platform, project, candidate, suite)
    return compare_runs(platform, a, b)


def _print_comparison(comparison: Comparison) -> None:
    a, b = comparison.baseline, comparison.candidate
    out.print(f"baseline  run {a.id}: {a.suite} on {a.target}", highlight=False)
    out.print(f"candidate run {b.id}: {b.suite} on {b.target}", highlight=False)
    rows = [(m.name, _rate(m.baseline), _rate(m.candidate), f"{m.delta:+.4f}") for m in comparison.metrics]
    print_table(("metric", "baseline", "candidate", "delta"), rows)
    out.print(
        f"{comparison.matched} examples matched; {len(comparison.regressions)} regressed, "
        f"{len(comparison.fixes)} fixed",
        highlight=False,
    )
    for label, flips in (("regressed", comparison.regressions), ("fixed", comparison.fixes)):
        for flip in flips[:20]:
            out.print(f"  {label} #{flip.index}: {', '.join(flip.checks) or '-'}", highlight=False)
        if len(flips) > 20:
            out.print(f"  ... and {len(flips) - 20} more {label}", highlight=False)
    for side, names in (("baseline", comparison.only_in_baseline), ("candidate", comparison.only_in_candidate)):
        if names:
            out.print(f"checks only in the {side}'s suite: {', '.join(names)}", highlight=False)


@eval_app.command("compare")
@reports_errors
def eval_compare(
    baseline: str = RunArgument,
    candidate: str = RunArgument,
    suite: str | None = SuiteForRefsOption,
    project: str = ProjectOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compare baseline A with candidate B: each metric's delta, and the examples that flipped."""
    platform = open_platform()
    comparison = _comparison(platform, project, baseline, candidate, suite)
    if as_json:
        print_json(
            {
                "baseline": comparison.baseline.id,
                "candidate": comparison.candidate.id,
                "metrics": [{**m.__dict__, "delta": m.delta} for m in comparison.metrics],
                "regressions": [f.__dict__ for f in comparison.regressions],
                "fixes": [f.__dict__ for f in comparison.fixes],
                "matched": comparison.matched,
            }
        )
        return
    _print_comparison(comparison)


@eval_app.command("gate")
@reports_errors
def eval_gate(
    baseline: str = typer.Option(..., "--baseline", "-a", help="A run id, or a model version with --suite."),
    candidate: str = typer.Option(..., "--candidate", "-b", help="A run id, or a model version with --suite."),
    max_drop: float = typer.Option(0.01, "--max-drop", help="The most any metric may drop (absolute)."),
    require: list[str] = typer.Option(
        [], "--require", "-r", help="rule=CHECK, rule=CHECK>=0.99, score>=0.8, pass_rate>=0.9 (repeatable)."
    ),
    suite: str | None = SuiteForRefsOption,
    project: str = ProjectOption,
) -> None:
    """The CI gate: exit 0 when the candidate passes, 1 when a metric drops too far or a requirement fails."""
    from deepext.eval.compare import gate, parse_requirement

    requirements = [parse_requirement(text) for text in require]  # a typo fails before any lookup
    platform = open_platform()
    comparison = _comparison(platform, project, baseline, candidate, suite)
    result = gate(comparison, max_drop, requirements)
    a, b = comparison.baseline, comparison.candidate
    summary = f"run {b.id} ({b.target}) against run {a.id} ({a.target}), {a.suite_name}"
    if result.passed:
        score = comparison.metric("score")
        delta = f", score {score.baseline:.4f} -> {score.candidate:.4f}" if score else ""
        out.print(f"gate passed: {summary}{delta}", highlight=False)
        return
    out.print(f"gate failed: {summary}", highlight=False)
    for reason in result.reasons:
        out.print(f"  {reason}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)
