"""Models: the base models, the project's model versions with their metrics, stage and tags, a
version's lineage drawn as a chain (base model -> each parent -> the version), and its deployments:
deploy with replica settings and LoRA slots, undeploy, and each deployment's state (deploying,
running, failed with its error, stopping, stopped). Stage / tag controls need `models.write`, the
deploy form `deployments.write`; others do not see them."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine, ok_text
from apps.gradio.pages import Page
from apps.gradio.session import UiSession
from deepext.models.gguf_export import QUANTIZATIONS
from deepext.models.registry import BaseModelView
from deepext.models.versions import ModelVersionView
from deepext.serve.deployments import DeploymentView
from deepext.serve.routes.models import Lineage

STAGES = ["candidate", "staging", "production", "archived"]
BASE_COLUMNS = ["name", "architecture", "parameters", "source", "license", "created"]
VERSION_COLUMNS = ["ref", "kind", "base model", "parent", "dataset", "job", "stage", "tags", "created"]
DEPLOYMENT_COLUMNS = [
    "name", "model", "version", "state", "replicas", "cpus", "gpus", "lora slots", "direct endpoint", "error",
]  # fmt: skip


# ---- pure helpers (tested without a browser)
def base_table(models: list[BaseModelView]) -> pd.DataFrame:
    rows = [
        {
            "name": m.name,
            "architecture": m.architecture or "",
            "parameters": f"{m.parameters:,}" if m.parameters else "",
            "source": m.source,
            "license": m.license or "",
            "created": m.created_at[:16].replace("T", " "),
        }
        for m in models
    ]
    return pd.DataFrame(rows, columns=BASE_COLUMNS)


def versions_table(versions: list[ModelVersionView]) -> pd.DataFrame:
    rows = [
        {
            "ref": v.ref,
            "kind": v.kind,
            "base model": v.base_model,
            "parent": v.parent or "",
            "dataset": v.dataset_version or "",
            "job": v.job_id or "",
            "stage": v.stage,
            "tags": ", ".join(v.tags),
            "created": v.created_at[:16].replace("T", " "),
        }
        for v in versions
    ]
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


def metrics_table(version: ModelVersionView) -> pd.DataFrame:
    rows = [
        {"metric": key, "value": f"{value:.4g}" if isinstance(value, float) else str(value)}
        for key, value in sorted(version.metrics.items())
    ]
    return pd.DataFrame(rows, columns=["metric", "value"])


def deployments_table(deployments: list[DeploymentView]) -> pd.DataFrame:
    rows = [
        {
            "name": d.name,
            "model": d.model,
            "version": d.model_version,
            "state": d.state,
            "replicas": f"{d.min_replicas}-{d.max_replicas}",
            "cpus": d.cpus_per_replica,
            "gpus": d.gpus_per_replica,
            "lora slots": d.lora_slots,
            "direct endpoint": d.direct_path or "",
            "error": d.error or "",
        }
        for d in deployments
    ]
    return pd.DataFrame(rows, columns=DEPLOYMENT_COLUMNS)


def lineage_html(lineage: Lineage) -> str:
    """The chain base model -> oldest parent -> ... -> the version, as boxes joined by arrows, each
    box naming what it was trained on (dataset, job) beneath it."""
    base = lineage.base_model
    nodes = [
        (
            "base",
            base.name,
            " · ".join(
                x for x in (base.architecture or "", f"{base.parameters:,} params" if base.parameters else "") if x
            ),
        )
    ]
    for version in reversed(lineage.versions):
        made = [f"{version.kind}", f"stage {version.stage}"]
        if version.dataset_version:
            made.append(f"data {version.dataset_version}")
        if version.job_id:
            made.append(f"job {version.job_id}")
        nodes.append(("version", version.ref, " · ".join(made)))
    boxes = []
    for index, (kind, title, detail) in enumerate(nodes):
        last = index == len(nodes) - 1
        boxes.append(
            f'<div class="lineage-node lineage-{kind}{" lineage-current" if last else ""}">'
            f"<div class='lineage-title'>{html.escape(title)}</div>"
            f"<div class='lineage-detail'>{html.escape(detail)}</div></div>"
        )
    arrow = '<div class="lineage-arrow" aria-hidden="true">&#10142;</div>'
    return f'<div class="lineage-chain" role="img" aria-label="lineage">{arrow.join(boxes)}</div>'


def version_summary(version: ModelVersionView) -> str:
    tags = ", ".join(f"`{t}`" for t in version.tags) or "none"
    usage = f"{version.usage_requests} requests, {version.usage_tokens} tokens"
    return (
        f"### {version.ref}\n{version.kind} model on `{version.base_model}` · stage **{version.stage}** · "
        f"tags {tags} · used {usage}"
    )


# ---- callbacks
def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    if not session.project:
        empty = pd.DataFrame()
        hidden = gr.update(visible=False)
        nothing = gr.update(choices=[], value=None)
        return (
            gr.skip(),
            empty,
            empty,
            nothing,
            empty,
            hidden,
            hidden,
            hidden,
            hidden,
            *show_version(session, engine, None)[1:],
        )
    with engine.client(session) as client:
        bases = client.base_models()
        versions = client.model_versions(session.project)
        deployments = client.deployments(session.project)
    refs = [v.ref for v in sorted(versions, key=lambda v: v.id, reverse=True)]  # newest first
    # The newest version's details load with the page (the picker's own event is for the user's picks).
    details = show_version(session, engine, refs[0] if refs else None)[1:]
    return (
        "" if versions else "No model versions in this project yet: train one or register one.",
        base_table(bases),
        versions_table(versions),
        gr.update(choices=refs, value=refs[0] if refs else None),
        deployments_table(deployments),
        gr.update(visible=session.may("models", "write")),
        gr.update(visible=session.may("deployments", "write")),
        gr.update(visible=session.may("deployments", "write")),  # the undeploy row
        gr.update(visible=session.may("jobs", "create")),  # export runs as a job
        *details,
    )


def export(
    session: UiSession, engine: Engine, ref: str | None, quantizations: list[str], targets: list[str]
) -> tuple[Any, ...]:
    """Queue an export job for the picked version; the Training page follows it."""
    if not ref:
        return ("**Error: Pick a model version.**",)
    with engine.client(session) as client:
        job = client.export_model_version(
            session.project,
            ref,
            quantizations=quantizations,
            ollama="Ollama" in targets,
            lmstudio="LM Studio" in targets,
        )
    kinds = ", ".join(job.config["quantizations"])
    what = f"{job.config['model']} to GGUF ({kinds})"
    return (ok_text(f"Job #{job.id} (export) is {job.state}: {what}; follow it on the Training page."),)


def show_version(session: UiSession, engine: Engine, ref: str | None) -> tuple[Any, ...]:
    if not ref:
        return ("", "", pd.DataFrame(columns=["metric", "value"]), "", gr.skip(), gr.skip())
    with engine.client(session) as client:
        version = client.model_version(session.project, ref)
        chain = client.lineage(session.project, ref)
    name = ref.split("@")[0].replace("_", "-")
    return ("", version_summary(version), metrics_table(version), lineage_html(chain), version.stage, name)


def change_stage(session: UiSession, engine: Engine, ref: str | None, stage: str) -> tuple[Any, ...]:
    if not ref:
        return ("**Error: Pick a model version.**", gr.skip(), gr.skip())
    with engine.client(session) as client:
        version = client.change_model_version(session.project, ref, stage=stage)
        versions = client.model_versions(session.project)
    return ok_text(f"{version.ref} is now {version.stage}."), version_summary(version), versions_table(versions)


def change_tags(session: UiSession, engine: Engine, ref: str | None, add: str, remove: str) -> tuple[Any, ...]:
    if not ref:
        return ("**Error: Pick a model version.**", gr.skip(), gr.skip())
    adding = [t.strip() for t in add.split(",") if t.strip()]
    removing = [t.strip() for t in remove.split(",") if t.strip()]
    with engine.client(session) as client:
        version = client.change_model_version(session.project, ref, add_tags=adding, remove_tags=removing)
        versions = client.model_versions(session.project)
    tags = ", ".join(version.tags) or "none"
    return ok_text(f"Tags of {version.ref}: {tags}."), version_summary(version), versions_table(versions)


def deploy(
    session: UiSession,
    engine: Engine,
    ref: str | None,
    name: str,
    min_replicas: float,
    max_replicas: float,
    cpus: float,
    gpus: float,
    max_model_len: float,
    lora_slots: float,
) -> tuple[Any, ...]:
    if not ref:
        return ("**Error: Pick a model version.**", gr.skip())
    with engine.client(session) as client:
        deployment = client.deploy(
            session.project,
            name.strip(),
            ref,
            min_replicas=int(min_replicas),
            max_replicas=int(max_replicas),
            cpus_per_replica=float(cpus),
            gpus_per_replica=float(gpus),
            max_model_len=int(max_model_len),
            lora_slots=int(lora_slots),
        )
        table = deployments_table(client.deployments(session.project))
    message = f"**{deployment.model}** ({deployment.model_version}) is {deployment.state}; reload to follow it."
    return ok_text(message), table


def undeploy(session: UiSession, engine: Engine, name: str) -> tuple[Any, ...]:
    if not name.strip():
        return ("**Error: Enter the name of the deployment to stop.**", gr.skip())
    with engine.client(session) as client:
        deployment = client.undeploy(session.project, name.strip())
        table = deployments_table(client.deployments(session.project))
    return ok_text(f"**{deployment.model}** is {deployment.state}."), table


def reload_deployments(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    with engine.client(session) as client:
        return "", deployments_table(client.deployments(session.project))


def build(engine: Engine, session: gr.State) -> Page:
    status = gr.Markdown(elem_id="models-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                gr.Markdown("### Model versions")
                reload_page = gr.Button("Reload", size="sm", scale=0, min_width=90, elem_id="reload-models")
            versions = gr.Dataframe(interactive=False, elem_id="model-versions-table", max_height=280)
        with gr.Column(scale=2):
            gr.Markdown("### Base models")
            bases = gr.Dataframe(interactive=False, elem_id="base-models-table", max_height=280)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            pick = gr.Dropdown(label="Model version", choices=[], elem_id="model-version-pick")
            summary = gr.Markdown(elem_id="model-summary")
            gr.Markdown("#### Lineage")
            lineage = gr.HTML(elem_id="model-lineage")
            metrics = gr.Dataframe(interactive=False, label="Metrics", elem_id="model-metrics", max_height=260)
        with gr.Column(scale=2):
            with gr.Group(visible=False, elem_id="model-stage-form") as stage_form:
                stage = gr.Dropdown(STAGES, value="candidate", label="Stage")
                stage_button = gr.Button("Set stage", size="sm", elem_id="set-stage")
                add_tags = gr.Textbox(label="Add tags", placeholder="comma-separated")
                remove_tags = gr.Textbox(label="Remove tags", placeholder="comma-separated")
                tags_button = gr.Button("Change tags", size="sm", elem_id="change-tags")
            with gr.Group(visible=False, elem_id="deploy-form") as deploy_form:
                gr.Markdown("#### Deploy the picked version")
                deploy_name = gr.Textbox(label="Deployment name", placeholder="clients call PROJECT/NAME")
                with gr.Row():
                    min_replicas = gr.Number(1, precision=0, minimum=1, maximum=64, label="Min replicas")
                    max_replicas = gr.Number(1, precision=0, minimum=1, maximum=64, label="Max replicas")
                with gr.Accordion("Resources", open=False):
                    with gr.Row():
                        cpus = gr.Number(1.0, minimum=0.1, label="CPUs per replica")
                        gpus = gr.Number(0.0, minimum=0, label="GPUs per replica")
                    with gr.Row():
                        max_model_len = gr.Number(2048, precision=0, minimum=16, label="Max model length")
                        lora_slots = gr.Number(0, precision=0, minimum=0, maximum=64, label="LoRA slots")
                deploy_button = gr.Button("Deploy", variant="primary", elem_id="deploy-button")
            with gr.Group(visible=False, elem_id="export-form") as export_form:
                gr.Markdown("#### Export the picked version (GGUF + Ollama Modelfile)")
                quantizations = gr.CheckboxGroup(
                    list(QUANTIZATIONS), value=["f16", "q8_0"], label="GGUF types", elem_id="export-types"
                )
                targets = gr.CheckboxGroup(
                    ["Ollama", "LM Studio"], value=[], label="Hand it to (the platform's configured server / folder)"
                )
                export_button = gr.Button("Export", elem_id="export-button")
    gr.Markdown("### Deployments")
    deployments = gr.Dataframe(interactive=False, elem_id="deployments-table", max_height=260, wrap=True)
    with gr.Row():
        reload_button = gr.Button("Reload deployments", size="sm", scale=0, min_width=160)
        with gr.Row(visible=False) as undeploy_form:
            undeploy_name = gr.Textbox(show_label=False, placeholder="deployment name", scale=2)
            undeploy_button = gr.Button("Undeploy", variant="stop", size="sm", scale=1, elem_id="undeploy-button")

    pick.input(
        engine.action(show_version, 5),
        [session, pick],
        [session, status, summary, metrics, lineage, stage, deploy_name],
    )
    stage_button.click(engine.action(change_stage, 2), [session, pick, stage], [session, status, summary, versions])
    tags_button.click(
        engine.action(change_tags, 2), [session, pick, add_tags, remove_tags], [session, status, summary, versions]
    )
    deploy_button.click(
        engine.action(deploy, 1),
        [session, pick, deploy_name, min_replicas, max_replicas, cpus, gpus, max_model_len, lora_slots],
        [session, status, deployments],
    )
    export_button.click(engine.action(export, 0), [session, pick, quantizations, targets], [session, status])
    undeploy_button.click(engine.action(undeploy, 1), [session, undeploy_name], [session, status, deployments])
    reload_button.click(engine.action(reload_deployments, 1), [session], [session, status, deployments])
    outputs = [status, bases, versions, pick, deployments, stage_form, deploy_form, undeploy_form, export_form]
    outputs += [summary, metrics, lineage, stage, deploy_name]
    refresh_action = engine.action(refresh, len(outputs) - 1)
    reload_page.click(refresh_action, [session], [session, *outputs])
    return Page(refresh_action, outputs)
