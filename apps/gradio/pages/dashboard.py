"""Dashboard: the landing page of the picked project - what it holds, the jobs of the last 7 days,
what the Ray cluster uses now and, for admins, the latest audit events in the project."""

from __future__ import annotations

from html import escape
from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine
from apps.gradio.pages import Page
from apps.gradio.session import UiSession
from deepext.dashboard import ClusterUse, Dashboard

AUDIT_COLUMNS = ["at", "actor", "action", "resource", "outcome"]
EMPTY_DAYS = pd.DataFrame(columns=["day", "state", "jobs"])


# ---- pure helpers (tested without a browser)
def _card(title: str, total: int, parts: dict[str, int]) -> str:
    detail = " · ".join(f"{escape(k)} {v}" for k, v in sorted(parts.items())) or ("none yet" if not total else "")
    return (
        f'<div class="dash-card" data-card="{escape(title)}"><div class="dash-title">{escape(title)}</div>'
        f'<div class="dash-number">{total}</div><div class="dash-detail">{detail}</div></div>'
    )


def counts_html(board: Dashboard) -> str:
    cards = [
        _card("datasets", board.datasets, {}),
        _card("jobs", sum(board.jobs_by_state.values()), board.jobs_by_state),
        _card("model versions", sum(board.model_versions_by_stage.values()), board.model_versions_by_stage),
        _card("deployments", sum(board.deployments_by_state.values()), board.deployments_by_state),
        _card("evaluations", board.evaluations, {}),
    ]
    return f'<div class="dash-cards">{"".join(cards)}</div>'


def days_frame(board: Dashboard) -> pd.DataFrame:
    """The last 7 days as (day, state, jobs) rows; a day without jobs is a 0 bar, not a gap."""
    rows = []
    for day in board.jobs_per_day:
        states = {k: v for k, v in day.items() if k != "day"} or {"none": 0}
        rows += [{"day": day["day"][5:], "state": state, "jobs": count} for state, count in states.items()]
    return pd.DataFrame(rows, columns=["day", "state", "jobs"]) if rows else EMPTY_DAYS


def cluster_html(use: ClusterUse) -> str:
    if use.error:
        return f'<div class="dash-cluster"><em>Cluster use unavailable: {escape(use.error)}</em></div>'
    lines = [f"<div><strong>Ray cluster</strong> · {use.nodes} node{'' if use.nodes == 1 else 's'}</div>"]
    for name, total in use.total.items():
        used = use.used.get(name, 0.0)
        shown = f"{used / 2**30:.1f} of {total / 2**30:.1f} GiB" if name == "memory" else f"{used:g} of {total:g}"
        lines.append(
            f'<div class="dash-resource" data-resource="{escape(name)}">{escape(name)} '
            f'<progress value="{used:.3f}" max="{max(total, 1e-9):.3f}"></progress> {shown} in use</div>'
        )
    if "GPU" not in use.total:
        lines.append("<div><small>no GPU in this cluster</small></div>")
    return f'<div class="dash-cluster">{"".join(lines)}</div>'


def audit_frame(rows: list[dict[str, Any]] | None) -> pd.DataFrame:
    shown = [{**{k: row.get(k) for k in AUDIT_COLUMNS}, "at": str(row.get("at", ""))[:19]} for row in rows or []]
    return pd.DataFrame(shown, columns=AUDIT_COLUMNS)


# ---- callbacks
def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    if not session.project:
        return ("Pick or create a project to see its dashboard.", "", EMPTY_DAYS, "", gr.update(visible=False))
    with engine.client(session) as client:
        board = client.dashboard(session.project)
    audit = board.recent_audit is not None
    return (
        f"### `{board.project}` at a glance",
        counts_html(board),
        days_frame(board),
        cluster_html(board.cluster),
        gr.update(value=audit_frame(board.recent_audit), visible=audit),
    )


def build(engine: Engine, session: gr.State) -> Page:
    with gr.Row():
        status = gr.Markdown(elem_id="dashboard-status")
        reload_button = gr.Button("Reload", size="sm", scale=0, min_width=90, elem_id="reload-dashboard")
    counts = gr.HTML(elem_id="dashboard-counts")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            days = gr.BarPlot(
                x="day",
                y="jobs",
                color="state",
                title="Jobs started, last 7 days",
                height=240,
                elem_id="dashboard-days",
            )
        with gr.Column(scale=2):
            cluster = gr.HTML(elem_id="dashboard-cluster")
    audit = gr.Dataframe(
        label="Recent audit events (admins)",
        interactive=False,
        visible=False,
        elem_id="dashboard-audit",
        max_height=300,
    )
    outputs = [counts, days, cluster, audit]
    reload_button.click(engine.action(refresh, len(outputs)), [session], [session, status, *outputs])
    return Page(engine.action(refresh, len(outputs)), [status, *outputs])
