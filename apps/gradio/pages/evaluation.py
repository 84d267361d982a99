"""Evaluation: the project's suites, running a suite on one or two targets (a model version, a base
model, a deployment, a provider model or an endpoint; each run is an eval job), the runs table, a
run's per-check pass rates and its failed examples with the checks' reasons, and two runs side by
side (metric deltas, regressions and fixes). Starting runs needs `evaluations.run`."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine, ok_text
from apps.gradio.pages import Page
from apps.gradio.session import UiSession
from deepext.eval.compare import Comparison
from deepext.eval.results import ExampleResult, RunView
from deepext.eval.suite import SuiteView

TARGET_KINDS = ["model_version", "base_model", "deployment", "provider", "endpoint"]
SUITE_COLUMNS = ["suite", "dataset", "checks", "created by", "created"]
RUN_COLUMNS = ["id", "suite", "target kind", "target", "state", "score", "pass rate", "examples", "seconds", "created"]
CHECK_COLUMNS = ["check", "severity", "weight", "pass rate", "mean score", "failures", "count"]
FAILURE_COLUMNS = ["index", "prompt", "output", "failed checks", "reasons"]
COMPARE_COLUMNS = ["metric", "baseline", "candidate", "delta"]


# ---- pure helpers (tested without a browser)
def _rate(value: Any) -> str:
    return f"{float(value):.1%}" if value is not None else ""


def suites_table(suites: list[SuiteView]) -> pd.DataFrame:
    rows = [
        {
            "suite": s.ref,
            "dataset": s.spec.dataset,
            "checks": ", ".join(c.name or c.type for c in s.spec.checks),
            "created by": s.created_by,
            "created": s.created_at[:16].replace("T", " "),
        }
        for s in suites
    ]
    return pd.DataFrame(rows, columns=SUITE_COLUMNS)


def run_label(run: RunView) -> str:
    return f"#{run.id} {run.suite} on {run.target} ({run.state})"


def runs_table(runs: list[RunView]) -> pd.DataFrame:
    rows = [
        {
            "id": r.id,
            "suite": r.suite,
            "target kind": r.target_kind,
            "target": r.target,
            "state": r.state if not r.error else f"{r.state}: {r.error}",
            "score": f"{r.score:.3f}" if r.score is not None else "",
            "pass rate": _rate(r.pass_rate),
            "examples": r.examples_count,
            "seconds": f"{r.seconds:.1f}" if r.seconds is not None else "",
            "created": r.created_at[:16].replace("T", " "),
        }
        for r in runs
    ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def checks_table(run: RunView) -> pd.DataFrame:
    """One row per check of the run: its pass rate, mean score and failures (from the aggregates)."""
    rows = [
        {
            "check": name,
            "severity": numbers.get("severity", ""),
            "weight": numbers.get("weight", ""),
            "pass rate": _rate(numbers.get("pass_rate")),
            "mean score": f"{float(numbers.get('mean_score', 0.0)):.3f}",
            "failures": numbers.get("failures", 0),
            "count": numbers.get("count", 0),
        }
        for name, numbers in (run.aggregates.get("checks") or {}).items()
    ]
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def run_summary(run: RunView) -> str:
    numbers = run.aggregates
    if run.state != "succeeded":
        return f"**Run #{run.id}** is {run.state}" + (f": {run.error}" if run.error else ".")
    return (
        f"**Run #{run.id}** · {run.suite} on `{run.target}` · score **{run.score or 0:.3f}** · "
        f"pass rate **{_rate(run.pass_rate)}** ({numbers.get('passed', 0)} of {numbers.get('examples', 0)} examples)"
    )


def failures_table(examples: list[ExampleResult]) -> pd.DataFrame:
    rows = []
    for example in examples:
        failed = {name: verdict for name, verdict in example.checks.items() if not verdict.passed}
        rows.append(
            {
                "index": example.index,
                "prompt": example.prompt[:300],
                "output": example.output[:300],
                "failed checks": ", ".join(failed),
                "reasons": "; ".join(f"{name}: {v.reason}" for name, v in failed.items() if v.reason),
            }
        )
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    rows = [
        {
            "metric": m.name,
            "baseline": f"{m.baseline:.3f}",
            "candidate": f"{m.candidate:.3f}",
            "delta": f"{m.delta:+.3f}",
        }
        for m in comparison.metrics
    ]
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def comparison_summary(comparison: Comparison) -> str:
    a, b = comparison.baseline, comparison.candidate

    def flips(title: str, items: Any) -> str:
        if not items:
            return f"<p><b>{title}:</b> none</p>"
        listed = ", ".join(f"#{f.index} ({html.escape(', '.join(f.checks))})" for f in items[:30])
        more = f" and {len(items) - 30} more" if len(items) > 30 else ""
        return f"<p><b>{title} ({len(items)}):</b> {listed}{more}</p>"

    return (
        '<div class="compare-summary">'
        f"<div class='compare-side'><b>A</b> run #{a.id}: {html.escape(a.suite)} on {html.escape(a.target)}</div>"
        f"<div class='compare-side'><b>B</b> run #{b.id}: {html.escape(b.suite)} on {html.escape(b.target)}</div>"
        f"<p>{comparison.matched} examples in both runs.</p>"
        + flips("Regressions (pass in A, fail in B)", comparison.regressions)
        + flips("Fixes (fail in A, pass in B)", comparison.fixes)
        + "</div>"
    )


# ---- callbacks
def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    if not session.project:
        nothing = gr.update(choices=[], value=None)
        hidden = gr.update(visible=False)
        empty = show_run(session, engine, None)[1:]
        return (gr.skip(), pd.DataFrame(), nothing, pd.DataFrame(), nothing, nothing, nothing, hidden, *empty)
    with engine.client(session) as client:
        suites = client.suites(session.project)
        runs = client.evaluation_runs(session.project)
    refs = [s.ref for s in suites]
    labels = [(run_label(r), r.id) for r in runs]
    finished = [(run_label(r), r.id) for r in runs if r.state == "succeeded"]
    # The newest run's details load with the page (the picker's own event is for the user's picks).
    details = show_run(session, engine, runs[0].id if runs else None)[1:]
    return (
        "" if suites else "No evaluation suites yet: push one with `deepext eval suites push suite.yaml`.",
        suites_table(suites),
        gr.update(choices=refs, value=refs[0] if refs else None),
        runs_table(runs),
        gr.update(choices=labels, value=labels[0][1] if labels else None),
        gr.update(choices=finished, value=finished[1][1] if len(finished) > 1 else None),
        gr.update(choices=finished, value=finished[0][1] if finished else None),
        gr.update(visible=session.may("evaluations", "run")),
        *details,
    )


def start_runs(
    session: UiSession, engine: Engine, suite: str | None, kind: str, target_a: str, target_b: str
) -> tuple[Any, ...]:
    targets = [t.strip() for t in (target_a, target_b) if t.strip()]
    if not suite or not targets:
        return ("**Error: Pick a suite and give at least one target.**", gr.skip())
    with engine.client(session) as client:
        jobs = [client.start_evaluation(session.project, suite, target, target_kind=kind) for target in targets]
        table = runs_table(client.evaluation_runs(session.project))
    queued = ", ".join(f"job {job.id} ({target})" for job, target in zip(jobs, targets, strict=True))
    return ok_text(f"Queued {queued}; the runs appear below when the jobs start (Reload)."), table


def reload_runs(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    with engine.client(session) as client:
        runs = client.evaluation_runs(session.project)
    labels = [(run_label(r), r.id) for r in runs]
    return "", runs_table(runs), gr.update(choices=labels)


def show_run(session: UiSession, engine: Engine, run_id: int | None) -> tuple[Any, ...]:
    if not run_id:
        return ("", "", pd.DataFrame(columns=CHECK_COLUMNS), pd.DataFrame(columns=FAILURE_COLUMNS))
    with engine.client(session) as client:
        run = client.evaluation_run(session.project, int(run_id))
        failures = failures_table(client.evaluation_examples(session.project, run.id, failed_only=True))
    return "", run_summary(run), checks_table(run), failures


def compare(session: UiSession, engine: Engine, baseline: int | None, candidate: int | None) -> tuple[Any, ...]:
    if not baseline or not candidate:
        return ("**Error: Pick two finished runs.**", gr.skip(), gr.skip())
    with engine.client(session) as client:
        comparison = client.compare_evaluations(session.project, int(baseline), int(candidate))
    return "", comparison_table(comparison), comparison_summary(comparison)


def build(engine: Engine, session: gr.State) -> Page:
    status = gr.Markdown(elem_id="evaluation-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("### Suites")
            suites = gr.Dataframe(interactive=False, elem_id="suites-table", max_height=240, wrap=True)
        with gr.Column(scale=2, visible=False) as run_form, gr.Group():
            gr.Markdown("#### Run a suite on one or two targets")
            suite = gr.Dropdown(label="Suite", choices=[], elem_id="eval-suite")
            kind = gr.Dropdown(TARGET_KINDS, value="model_version", label="Target kind")
            target_a = gr.Textbox(label="Target A", placeholder="NAME@N, base model, PROJECT/NAME, ...")
            target_b = gr.Textbox(label="Target B (optional)")
            run_button = gr.Button("Run", variant="primary", elem_id="eval-run")
    gr.Markdown("### Runs")
    runs = gr.Dataframe(interactive=False, elem_id="runs-table", max_height=280, wrap=True)
    reload_button = gr.Button("Reload runs", size="sm")
    with gr.Tabs():
        with gr.Tab("Run details"):
            run_pick = gr.Dropdown(label="Run", choices=[], elem_id="run-pick")
            summary = gr.Markdown(elem_id="run-summary")
            checks = gr.Dataframe(interactive=False, label="Per-check pass rates", elem_id="run-checks")
            failures = gr.Dataframe(
                interactive=False, label="Failed examples", elem_id="run-failures", max_height=360, wrap=True
            )
        with gr.Tab("Compare two runs"):
            with gr.Row():
                baseline = gr.Dropdown(label="A (baseline)", choices=[], elem_id="compare-baseline")
                candidate = gr.Dropdown(label="B (candidate)", choices=[], elem_id="compare-candidate")
                compare_button = gr.Button("Compare", variant="primary", scale=0, min_width=120, elem_id="compare")
            with gr.Row(equal_height=False):
                comparison = gr.Dataframe(interactive=False, elem_id="compare-table", max_height=360)
                flips = gr.HTML(elem_id="compare-flips")

    run_button.click(engine.action(start_runs, 1), [session, suite, kind, target_a, target_b], [session, status, runs])
    reload_button.click(engine.action(reload_runs, 2), [session], [session, status, runs, run_pick])
    run_pick.input(engine.action(show_run, 3), [session, run_pick], [session, status, summary, checks, failures])
    compare_button.click(
        engine.action(compare, 2), [session, baseline, candidate], [session, status, comparison, flips]
    )
    outputs = [status, suites, suite, runs, run_pick, baseline, candidate, run_form, summary, checks, failures]
    return Page(engine.action(refresh, len(outputs) - 1), outputs)
