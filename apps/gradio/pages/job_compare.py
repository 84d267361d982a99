"""The Training page's comparison of 2-5 jobs: their configs side by side with the fields that differ
highlighted, and their reward, loss and KL curves overlaid, one plot per metric."""

from __future__ import annotations

from html import escape
from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine
from apps.gradio.session import UiSession
from deepext.train.compare import MAX_JOBS, MIN_JOBS, PLOTTED, Comparison, plotted_series


# ---- pure helpers (tested without a browser)
def diff_html(comparison: Comparison, *, only_differing: bool) -> str:
    """A table: one column per job, one row per config field; differing rows carry class `differs`."""
    heads = "".join(f"<th>#{job.id} {escape(job.name)}</th>" for job in comparison.jobs)
    rows = comparison.differing if only_differing else comparison.rows
    body = "".join(
        f'<tr class="{"differs" if row.differs else "same"}"><td><code>{escape(row.field)}</code></td>'
        + "".join(f"<td>{'—' if v is None else escape(str(v))}</td>" for v in row.values)
        + "</tr>"
        for row in rows
    )
    count = len(comparison.differing)
    summary = f"<p><small>{count} of {len(comparison.rows)} fields differ</small></p>"
    return f'{summary}<table class="config-diff"><tr><th>field</th>{heads}</tr>{body}</table>'


def compare_frames(comparison: Comparison) -> list[pd.DataFrame]:
    """One long frame (step, value, series) per overlaid plot, in `PLOTTED` order."""
    frames = []
    for curves in plotted_series(comparison).values():
        points = [{"step": s, "value": v, "series": name} for name, curve in curves.items() for s, v in curve]
        frames.append(pd.DataFrame(points, columns=["step", "value", "series"]))
    return frames


# ---- callbacks
def compare(session: UiSession, engine: Engine, picked: list[Any] | None, only_differing: bool) -> tuple[Any, ...]:
    ids = [int(i) for i in picked or []]
    if not MIN_JOBS <= len(ids) <= MAX_JOBS:
        return (f"**Error: Pick {MIN_JOBS} to {MAX_JOBS} jobs to compare.**", *(gr.skip(),) * (1 + len(PLOTTED)))
    with engine.client(session) as client:
        comparison = client.compare_jobs(session.project, ids)
    return ("", diff_html(comparison, only_differing=only_differing), *compare_frames(comparison))


def build(engine: Engine, session: gr.State, status: Any) -> Any:
    """The section's widgets under an accordion; returns its job picker (the page fills its choices)."""
    with gr.Accordion("Compare jobs", open=False, elem_id="compare-section"):
        with gr.Row():
            picker = gr.Dropdown(
                label=f"Jobs ({MIN_JOBS}-{MAX_JOBS})",
                choices=[],
                multiselect=True,
                max_choices=MAX_JOBS,
                elem_id="compare-jobs",
                scale=4,
            )
            only_differing = gr.Checkbox(value=True, label="Only fields that differ", scale=1)
            button = gr.Button("Compare", scale=0, min_width=110, elem_id="compare-button")
        table = gr.HTML(elem_id="compare-config")
        with gr.Row():
            plots = [
                gr.LinePlot(x="step", y="value", color="series", title=name, height=220, elem_id=f"compare-plot-{i}")
                for i, name in enumerate(PLOTTED)
            ]
    button.click(
        engine.action(compare, 1 + len(plots)), [session, picker, only_differing], [session, status, table, *plots]
    )
    return picker
