"""Training: the project's job queue, a job page that follows the job live (state, progress, metric
plots polled with `after_step`, logs), cancel, retry and "copy this job", a new-job form for SFT and
GRPO whose YAML view is what gets submitted (filled from a training profile, or saved as one), and a
comparison of 2-5 jobs. Viewers see the queue and jobs; what they may not do is not offered.
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine, ok_text
from apps.gradio.pages import Page, job_compare
from apps.gradio.pages.job_form import (
    FORM_DEFAULTS,
    FORM_FIELDS,
    form_values,
    job_config,
    lay_form_over,
    parse_yaml,
    profile_settings,
    to_yaml,
)
from apps.gradio.session import UiSession
from deepext.serve.routes.jobs import JobDetail
from deepext.train.compare import PLOTTED
from deepext.train.jobs import JobView
from deepext.train.profiles import apply_profile

QUEUE_COLUMNS = ["id", "name", "kind", "state", "attempts", "owner", "created", "started", "finished"]
FINISHED = {"succeeded", "failed", "cancelled"}
POLL_SECONDS = 2.0
JOB_OUTPUTS = 13  # what the job page shows (see `_job_view`): panel, header, progress, plots, latest, logs, ...
# Plot -> which metric keys it draws (GRPO's names; SFT logs loss too).
PLOTS: dict[str, re.Pattern[str]] = {**PLOTTED, "completion length": re.compile(r"^completion_len_mean$")}
FORM_KINDS = ("grpo", "sft", "sweep")


# ---- pure helpers (tested without a browser)
def queue_table(jobs: list[JobView]) -> pd.DataFrame:
    def when(at: Any) -> str:
        return f"{at:%m-%d %H:%M:%S}" if at else ""

    rows = [
        {
            "id": j.id,
            "name": j.name,
            "kind": j.kind,
            "state": j.state,
            "attempts": f"{j.attempts}/{j.max_retries + 1}",
            "owner": j.owner or "",
            "created": when(j.created_at),
            "started": when(j.started_at),
            "finished": when(j.finished_at),
        }
        for j in jobs
    ]
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def total_steps(job: JobView) -> int | None:
    """The steps the job will run, when its config says (GRPO `schedule.steps`, SFT `training.max_steps`)."""
    config = job.config
    steps = (config.get("schedule") or {}).get("steps") or (config.get("training") or {}).get("max_steps")
    return int(steps) if steps else None


def progress_html(job: JobView, last_step: int | None) -> str:
    total = total_steps(job)
    done = 1.0 if job.state == "succeeded" else (min((last_step or 0) / total, 1.0) if total else 0.0)
    label = f"step {last_step if last_step is not None else 0} of {total}" if total else f"step {last_step or 0}"
    return (
        f'<div class="job-progress"><progress value="{done:.3f}" max="1" style="width:100%"></progress>'
        f"<div><small>{label} · {done:.0%}</small></div></div>"
    )


def plot_frames(rows: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """Metric rows (`{"step", "values"}`) as one long frame (step, value, series) per plot."""
    frames: dict[str, list[dict[str, Any]]] = {name: [] for name in PLOTS}
    for row in rows:
        values = row["values"]
        # A sweep's rows carry their trial and its step: one curve per trial on the trial's steps.
        step, prefix = values.get("trial_step", row["step"]), (f"trial {values['trial']} " if "trial" in values else "")
        for key, value in values.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            for plot, pattern in PLOTS.items():
                if pattern.match(key):
                    frames[plot].append({"step": step, "value": float(value), "series": prefix + key})
    return {name: pd.DataFrame(points, columns=["step", "value", "series"]) for name, points in frames.items()}


def latest_values(rows: list[dict[str, Any]]) -> str:
    """The newest step's plotted metrics as one line (what the plots end with, readable at a glance)."""
    if not rows:
        return "<small>no metrics yet</small>"
    last = rows[-1]
    shown = [
        f"{key} {value:.4g}"
        for key, value in sorted(last["values"].items())
        if isinstance(value, int | float) and not isinstance(value, bool) and any(p.match(key) for p in PLOTS.values())
    ]
    return f"<small>step {last['step']} ({len(rows)} logged): {' · '.join(shown) or 'no plotted metric'}</small>"


TRIAL_COLUMNS = ["#", "trial", "state", "steps", "metric", "values tried"]


def trials_table(trials: list[Any], metric: str) -> pd.DataFrame:
    """A sweep's trials: state, steps run, the latest value of the sweep's metric and the values tried."""
    rows = [
        {
            "#": t.number,
            "trial": t.trial_id,
            "state": t.state,
            "steps": t.steps,
            "metric": t.metrics.get(metric),
            "values tried": ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.config.items()
            ),
        }
        for t in trials
    ]
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def job_header(detail: JobDetail) -> str:
    job = detail.job
    parts = [f"### Job #{job.id} · {job.name} · `{job.kind}` · **{job.state}**"]
    facts = [f"attempt {job.attempts} of {job.max_retries + 1}", f"owner {job.owner or '-'}"]
    if job.profile:
        facts.append(f"profile `{job.profile}`")
    if detail.queue_position is not None:
        facts.append(f"queue position {detail.queue_position}")
    if job.output_key:
        facts.append(f"output `{job.output_key}`")
    parts.append(" · ".join(facts))
    if job.error:
        parts.append(f"**Error:** {job.error}")
    if detail.events:
        last = detail.events[-1]
        parts.append(
            f"<small>last change {last.at:%H:%M:%S}: {last.from_state or '-'} → {last.to_state} ({last.reason})</small>"
        )
    return "\n\n".join(parts)


# ---- callbacks
def _queue(session: UiSession, engine: Engine) -> tuple[pd.DataFrame, Any]:
    with engine.client(session) as client:
        jobs = client.jobs(session.project) if session.project else []
    choices = [(f"#{j.id} {j.name} ({j.state})", j.id) for j in jobs]
    return queue_table(jobs), gr.update(choices=choices)


def _profiles(session: UiSession, engine: Engine, value: str | None = None) -> Any:
    with engine.client(session) as client:
        rows = client.profiles(session.project) if session.project else []
    choices = [(f"{p.ref} ({p.kind})" + (f" - {p.description}" if p.description else ""), p.ref) for p in rows]
    return gr.update(choices=[("(none)", ""), *choices], value=value or "")


def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    table, picker = _queue(session, engine)
    create = session.may("jobs", "create")
    profiles = _profiles(session, engine) if create else gr.skip()
    compared = gr.update(choices=picker["choices"], value=[])
    return (gr.skip(), table, picker, compared, gr.update(visible=create), profiles, gr.update(visible=False))


def reload_queue(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    table, picker = _queue(session, engine)
    return (gr.skip(), table, picker, gr.update(choices=picker["choices"]))


def _form_update(kind: str, config: dict[str, Any]) -> tuple[Any, ...]:
    """The kind, every form field and the YAML view showing `config`."""
    values = form_values(config)
    return (kind, *(values[name] for name in FORM_FIELDS), to_yaml(config))


def form_yaml(kind: str, text: str | None, *values: Any) -> str:
    """The YAML view after a field changed: only what the fields spell changes (see `lay_form_over`)."""
    fields = {k: (v if v is not None else FORM_DEFAULTS[k]) for k, v in zip(FORM_FIELDS, values, strict=True)}
    try:
        current = parse_yaml(text) if (text or "").strip() else {}  # None: the view was never shown
    except ValueError:
        current = {}  # the view holds broken YAML: the fields start it over
    return to_yaml(lay_form_over(current, kind, job_config(kind, **fields)))


def pick_profile(session: UiSession, engine: Engine, ref: str, kind: str, text: str | None) -> tuple[Any, ...]:
    """Fill the form with a profile's settings laid over what it holds; the job will record the profile."""
    if not ref:
        return ("", *(gr.skip(),) * (len(FORM_FIELDS) + 2))
    with engine.client(session) as client:
        profile = client.profile(session.project, ref)
    try:
        current = parse_yaml(text) if (text or "").strip() and kind == profile.kind else {}
    except ValueError:
        current = {}
    config = apply_profile(current, profile.settings)
    return (
        ok_text(f"Profile **{profile.ref}** filled the form; your edits override it."),
        *_form_update(profile.kind, config),
    )


def save_profile(
    session: UiSession, engine: Engine, name: str, description: str, kind: str, text: str
) -> tuple[Any, ...]:
    """Save the YAML view's training settings (not its name, model path or dataset) as a profile."""
    if kind not in ("grpo", "sft"):
        return ("**Error: A profile holds GRPO or SFT settings; pick one of those kinds.**", gr.skip())
    try:
        settings = profile_settings(parse_yaml(text))
    except ValueError as exc:
        return (f"**Error: {exc}**", gr.skip())
    with engine.client(session) as client:
        saved = client.save_profile(session.project, name.strip(), kind, settings, description=description.strip())
    verdict = "saved" if saved.created else "unchanged (the same settings)"
    return ok_text(f"Profile **{saved.ref}** {verdict}."), _profiles(session, engine, saved.ref)


def copy_job(session: UiSession, engine: Engine, job_id: Any) -> tuple[Any, ...]:
    """Open the new-job form filled with an old job's config (and its profile)."""
    if job_id in (None, ""):
        return ("**Error: Pick a job.**", *(gr.skip(),) * (len(FORM_FIELDS) + 4))
    with engine.client(session) as client:
        job = client.job(session.project, int(job_id)).job
    if job.kind not in FORM_KINDS:
        return (f"**Error: A {job.kind} job cannot be copied into the form.**", *(gr.skip(),) * (len(FORM_FIELDS) + 4))
    message = ok_text(f"Copied job #{job.id} into the new-job form: change what you like and submit.")
    return (message, gr.update(open=True), _profiles(session, engine, job.profile), *_form_update(job.kind, job.config))


def open_job(session: UiSession, engine: Engine, job_id: Any) -> tuple[Any, ...]:
    """Show job `job_id` from scratch (all its metrics) and start following it."""
    if job_id in (None, ""):
        return ("**Error: Pick a job.**", *(gr.skip(),) * JOB_OUTPUTS)
    return _job_view(session, engine, int(job_id), [])


def poll(session: UiSession, engine: Engine, job_id: Any, rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    """One tick of the timer: the job's state and the metric rows after the last one shown."""
    if job_id in (None, ""):
        return ("", *(gr.skip(),) * (JOB_OUTPUTS - 1), gr.Timer(active=False))
    return _job_view(session, engine, int(job_id), rows)


def _job_view(session: UiSession, engine: Engine, job_id: int, rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    after = rows[-1]["step"] if rows else -1
    with engine.client(session) as client:
        detail = client.job(session.project, job_id)
        new = client.job_metrics(session.project, job_id, after_step=after)
        logs = client.job_logs(session.project, job_id)
        sweep = detail.job.kind == "sweep"
        trials = client.job_trials(session.project, job_id) if sweep else []
    rows = rows + [{"step": m.step, "values": m.values} for m in new]
    frames = plot_frames(rows)
    job = detail.job
    running = job.state not in FINISHED
    return (
        gr.skip(),
        gr.update(visible=True),
        job_header(detail),
        progress_html(job, rows[-1]["step"] if rows else None),
        *(frames[name] for name in PLOTS),
        latest_values(rows),
        gr.update(value=trials_table(trials, str(job.config.get("metric", ""))), visible=sweep),
        logs or "(no logs yet)",
        rows,
        gr.update(visible=running and session.may("jobs", "cancel")),
        gr.Timer(active=running),
    )


def cancel(session: UiSession, engine: Engine, job_id: Any) -> tuple[Any, ...]:
    with engine.client(session) as client:
        job = client.cancel_job(session.project, int(job_id))
    table, picker = _queue(session, engine)
    return ok_text(f"Job #{job.id} is {job.state}."), table, picker, gr.Timer(active=True)


def retry(session: UiSession, engine: Engine, job_id: Any) -> tuple[Any, ...]:
    with engine.client(session) as client:
        job = client.retry_job(session.project, int(job_id))
    table, picker = _queue(session, engine)
    return ok_text(f"Job #{job.id} is {job.state} again."), table, picker, gr.Timer(active=True)


def submit(
    session: UiSession, engine: Engine, kind: str, text: str, priority: float, profile: str | None
) -> tuple[Any, ...]:
    """Queue the job the YAML describes (over the picked profile), then pick it and follow it on the job page."""
    try:
        config = parse_yaml(text)
    except ValueError as exc:
        return (f"**Error: {exc}**", *(gr.skip(),) * (2 + JOB_OUTPUTS))
    with engine.client(session) as client:
        job = client.submit_job(session.project, kind, config, priority=int(priority), profile=profile or None)
    table, picker = _queue(session, engine)
    view = _job_view(session, engine, job.id, [])
    picked = gr.update(choices=picker["choices"], value=job.id)
    return (ok_text(f"Job #{job.id} ({job.kind}) is {job.state}."), table, picked, *view[1:])


def build(engine: Engine, session: gr.State) -> Page:
    status = gr.Markdown(elem_id="training-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                gr.Markdown("### Job queue")
                reload_button = gr.Button("Reload", size="sm", scale=0, min_width=90)
            queue = gr.Dataframe(interactive=False, elem_id="job-queue", max_height=260)
            with gr.Row():
                picker = gr.Dropdown(label="Job", choices=[], elem_id="job-picker", scale=3)
                open_button = gr.Button("Open", scale=0, min_width=90, elem_id="open-job")
            compare_picker = job_compare.build(engine, session, status)
        with gr.Column(scale=2), gr.Accordion("New job", open=False, visible=False, elem_id="new-job") as new_job:
            profile = gr.Dropdown(
                label="Profile",
                choices=[("(none)", "")],
                value="",
                elem_id="job-profile",
                info="A saved preset: it fills the form, your edits override it, the job records its version.",
            )
            kind = gr.Radio(list(FORM_KINDS), value="grpo", label="Kind")
            name = gr.Textbox(label="Name", placeholder="grpo")
            model = gr.Textbox(label="Model", placeholder="base model, model version (NAME@N) or a local folder")
            dataset = gr.Textbox(label="Dataset", placeholder="NAME@VERSION or NAME@LABEL")
            rewards = gr.Textbox(label="Rewards (GRPO)", placeholder="name[:weight], ...")
            with gr.Row():
                steps = gr.Number(value=100, precision=0, label="Steps", minimum=1)
                learning_rate = gr.Number(value=1e-5, label="Learning rate", minimum=0)
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    group_size = gr.Number(value=8, precision=0, label="Group size", minimum=2)
                    prompts_per_step = gr.Number(value=16, precision=0, label="Prompts per step", minimum=1)
                with gr.Row():
                    max_new_tokens = gr.Number(value=128, precision=0, label="Max new tokens", minimum=1)
                    temperature = gr.Number(value=1.0, label="Temperature", minimum=0.01)
                with gr.Row():
                    kl_coef = gr.Number(value=0.0, label="KL coefficient", minimum=0)
                    lora_rank = gr.Number(value=0, precision=0, label="LoRA rank (0: full)", minimum=0)
                with gr.Row():
                    batch_size = gr.Number(value=8, precision=0, label="Batch size (SFT)", minimum=1)
                    priority = gr.Number(value=0, precision=0, label="Priority", minimum=-1000, maximum=1000)
            with gr.Accordion("YAML (what is submitted; edit freely)", open=False):
                config_yaml = gr.Code(language="yaml", interactive=True, elem_id="job-yaml", lines=12)
            submit_button = gr.Button("Submit job", variant="primary", elem_id="submit-job")
            with gr.Accordion("Save as profile", open=False, elem_id="save-profile-section"), gr.Row():
                profile_name = gr.Textbox(label="Profile name", placeholder="grpo-small-gpu", elem_id="profile-name")
                profile_description = gr.Textbox(label="Description", elem_id="profile-description")
                save_profile_button = gr.Button("Save profile", scale=0, min_width=110, elem_id="save-profile")

    with gr.Column(visible=False) as job_panel:
        header = gr.Markdown(elem_id="job-header")
        progress = gr.HTML(elem_id="job-progress")
        with gr.Row():
            cancel_button = gr.Button("Cancel job", variant="stop", size="sm", visible=False, elem_id="cancel-job")
            retry_button = gr.Button("Retry", size="sm", visible=False, elem_id="retry-job")
            copy_button = gr.Button("Copy this job", size="sm", visible=False, elem_id="copy-job")
        with gr.Row():
            plots = [
                gr.LinePlot(x="step", y="value", color="series", title=plot, height=220, elem_id=f"plot-{i}")
                for i, plot in enumerate(PLOTS)
            ]
        latest = gr.HTML(elem_id="job-latest")
        trials = gr.Dataframe(label="Trials", interactive=False, visible=False, elem_id="job-trials", max_height=300)
        logs = gr.Textbox(label="Logs", lines=12, max_lines=12, autoscroll=True, elem_id="job-logs")
    metrics = gr.State([])
    timer = gr.Timer(POLL_SECONDS, active=False)

    form = [name, model, dataset, rewards, steps, learning_rate, group_size, prompts_per_step]
    form += [max_new_tokens, temperature, kl_coef, lora_rank, batch_size]
    assert len(form) == len(FORM_FIELDS)
    for component in [kind, *form]:
        component.change(form_yaml, [kind, config_yaml, *form], [config_yaml])  # type: ignore[attr-defined]
    filled = [kind, *form, config_yaml]
    profile.input(
        engine.action(pick_profile, len(filled)), [session, profile, kind, config_yaml], [session, status, *filled]
    )
    save_profile_button.click(
        engine.action(save_profile, 1),
        [session, profile_name, profile_description, kind, config_yaml],
        [session, status, profile],
    )

    job_outputs = [job_panel, header, progress, *plots, latest, trials, logs, metrics, cancel_button, timer]
    assert len(job_outputs) == JOB_OUTPUTS
    may_create = [retry_button, copy_button]
    open_button.click(
        engine.action(open_job, len(job_outputs)), [session, picker], [session, status, *job_outputs]
    ).then(lambda s: (gr.update(visible=s.may("jobs", "create")),) * len(may_create), [session], may_create)
    timer.tick(engine.action(poll, len(job_outputs)), [session, picker, metrics], [session, status, *job_outputs])
    reload_button.click(engine.action(reload_queue, 3), [session], [session, status, queue, picker, compare_picker])
    cancel_button.click(engine.action(cancel, 3), [session, picker], [session, status, queue, picker, timer])
    retry_button.click(engine.action(retry, 3), [session, picker], [session, status, queue, picker, timer])
    copy_button.click(
        engine.action(copy_job, 2 + len(filled)), [session, picker], [session, status, new_job, profile, *filled]
    )
    submit_button.click(
        engine.action(submit, 2 + len(job_outputs)),
        [session, kind, config_yaml, priority, profile],
        [session, status, queue, picker, *job_outputs],
    )
    outputs = [status, queue, picker, compare_picker, new_job, profile, job_panel]
    return Page(engine.action(refresh, len(outputs) - 1), outputs)
