"""Datasets of the picked project: upload a file as a new version (the detected format shown, a
rejected file named by row), the versions with their labels and lineage, a preview, a split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine, ok_text
from apps.gradio.pages import Page
from apps.gradio.session import UiSession
from deepext.datasets.service import VersionView

VERSION_COLUMNS = ["version", "labels", "rows", "format", "file format", "derivation", "parent", "source", "created"]


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


def versions_table(versions: list[VersionView]) -> pd.DataFrame:
    rows = [
        {
            "version": v.version,
            "labels": ", ".join(v.labels),
            "rows": v.row_count,
            "format": v.format,
            "file format": v.source_format,
            "derivation": v.derivation,
            "parent": "" if v.parent_version is None else f"@{v.parent_version}",
            "source": v.source_name or "",
            "created": v.created_at[:16].replace("T", " "),
        }
        for v in sorted(versions, key=lambda v: -v.version)
    ]
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


def preview_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{k: _cell(v) for k, v in row.items()} for row in rows])


def _dataset_choices(session: UiSession, engine: Engine) -> list[str]:
    if not session.project:
        return []
    with engine.client(session) as client:
        return [d.name for d in client.datasets(session.project)]


def show_dataset(session: UiSession, engine: Engine, name: str | None) -> tuple[Any, ...]:
    """The versions of `name` and the preview of its newest version."""
    if not name:
        return "", pd.DataFrame(columns=VERSION_COLUMNS), gr.update(choices=[], value=None), pd.DataFrame()
    with engine.client(session) as client:
        versions = client.dataset_versions(session.project, name)
        newest = max((v.version for v in versions), default=None)
        preview = client.preview(session.project, name, newest) if newest is not None else []
    choices = [str(v.version) for v in sorted(versions, key=lambda v: -v.version)]
    return (
        gr.skip(),
        versions_table(versions),
        gr.update(choices=choices, value=str(newest) if newest is not None else None),
        preview_table(preview),
    )


def show_version(session: UiSession, engine: Engine, name: str | None, version: str | None) -> tuple[Any, ...]:
    if not name or not version:
        return gr.skip(), pd.DataFrame()
    with engine.client(session) as client:
        return gr.skip(), preview_table(client.preview(session.project, name, version, rows=20))


def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    choices = _dataset_choices(session, engine)
    name = choices[0] if choices else None
    _, versions, version_choice, preview = show_dataset(session, engine, name)
    write = session.may("datasets", "write")
    return (
        gr.skip(),
        gr.update(choices=choices, value=name),
        versions,
        version_choice,
        preview,
        gr.update(visible=write),
        gr.update(visible=write),
    )


def upload(
    session: UiSession,
    engine: Engine,
    file: str | None,
    name: str,
    labels: str,
    progress: gr.Progress = gr.Progress(),  # Gradio passes its progress bar here
) -> tuple[Any, ...]:
    if not file:
        return ("**Error: Choose a file to upload** (.jsonl, .json, .csv or .parquet).", *(gr.skip(),) * 4)
    path = Path(file)
    name = name.strip() or path.stem.lower().replace(" ", "-").replace("_", "-")
    label_list = [label.strip() for label in labels.split(",") if label.strip()]

    def report(sent: int, total: int) -> None:
        progress(sent / max(total, 1), desc=f"uploading {path.name}: {sent / 1e6:.1f} of {total / 1e6:.1f} MB")

    progress(0, desc=f"uploading {path.name}")
    with engine.client(session) as client:
        uploaded = client.upload_dataset(session.project, name, path, labels=label_list, progress=report)
    version = uploaded.version
    what = "stored as" if uploaded.created else "was already stored as"
    message = ok_text(
        f"`{path.name}` {what} **{version.dataset}@{version.version}**: {version.row_count} rows, "
        f"detected format **{version.format}** (file: {version.source_format})"
    )
    choices = _dataset_choices(session, engine)
    _, versions, version_choice, preview = show_dataset(session, engine, version.dataset)
    return message, gr.update(choices=choices, value=version.dataset), versions, version_choice, preview


def split(
    session: UiSession, engine: Engine, name: str | None, version: str | None, ratio: float, seed: float
) -> tuple[Any, ...]:
    if not name or not version:
        return ("**Error: Pick a dataset version to split.**", gr.skip(), gr.skip())
    with engine.client(session) as client:
        result = client.split_dataset(session.project, name, version, eval_ratio=ratio, seed=int(seed))
    _, versions, version_choice, _ = show_dataset(session, engine, name)
    message = ok_text(
        f"Split @{version}: train **@{result.train.version}** ({result.train.row_count} rows), "
        f"eval **@{result.eval.version}** ({result.eval.row_count} rows)"
    )
    return message, versions, version_choice


def build(engine: Engine, session: gr.State) -> Page:
    status = gr.Markdown(elem_id="datasets-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                dataset = gr.Dropdown(label="Dataset", choices=[], elem_id="dataset-picker", scale=2)
                version = gr.Dropdown(label="Version", choices=[], elem_id="version-picker", scale=1)
            gr.Markdown("#### Versions")
            versions = gr.Dataframe(interactive=False, elem_id="versions-table", max_height=240)
            gr.Markdown("#### Preview")
            preview = gr.Dataframe(interactive=False, elem_id="preview-table", max_height=360, wrap=True)
        with gr.Column(scale=2):
            with gr.Group(visible=False) as upload_box:
                gr.Markdown("#### Upload a new version")
                file = gr.File(
                    label="JSONL, JSON, CSV or Parquet file",
                    file_types=[".jsonl", ".json", ".csv", ".parquet"],
                    type="filepath",
                    elem_id="dataset-file",
                )
                name = gr.Textbox(label="Dataset name", placeholder="from the file name", elem_id="dataset-name")
                labels = gr.Textbox(label="Labels", placeholder="comma-separated, e.g. raw, v1")
                upload_button = gr.Button("Upload", variant="primary", elem_id="upload-dataset")
            with gr.Group(visible=False) as split_box:
                gr.Markdown("#### Split the picked version into train / eval")
                ratio = gr.Slider(0.05, 0.5, value=0.1, step=0.05, label="Eval share")
                seed = gr.Number(value=0, precision=0, label="Seed")
                split_button = gr.Button("Split", elem_id="split-dataset")

    dataset.input(engine.action(show_dataset, 3), [session, dataset], [session, status, versions, version, preview])
    version.input(engine.action(show_version, 1), [session, dataset, version], [session, status, preview])
    upload_button.click(
        engine.action(upload, 4),
        [session, file, name, labels],
        [session, status, dataset, versions, version, preview],
    )
    split_button.click(
        engine.action(split, 2), [session, dataset, version, ratio, seed], [session, status, versions, version]
    )
    return Page(engine.action(refresh, 6), [status, dataset, versions, version, preview, upload_box, split_box])
