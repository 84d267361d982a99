"""`deepext datasets ...`: push, append, split, label, list, show and preview dataset versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from deepext.cli.common import (
    ProjectOption,
    actor,
    byte_progress,
    err,
    open_platform,
    out,
    print_json,
    reports_errors,
)
from deepext.cli.remote import remote_client
from deepext.errors import InvalidInput

datasets_app = typer.Typer(help="Versioned datasets.", no_args_is_help=True)


@datasets_app.command("push")
@reports_errors
def datasets_push(
    path: Path = typer.Argument(..., help="A .jsonl, .csv or .parquet file, or a datasets folder."),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name in the project."),
    project: str = ProjectOption,
    label: list[str] = typer.Option([], "--label", "-l", help="Label(s) for the new version."),
    description: str = typer.Option("", "--description", "-d"),
) -> None:
    """Push a file as a new immutable version (the same content again returns the existing one)."""
    client = remote_client()
    if client is not None:
        if not path.is_file():
            raise InvalidInput(f"{path}: the API takes one .jsonl, .csv or .parquet file", field="path")
        with err.status(f"uploading {path.name} to {client.base_url}"):
            uploaded = client.upload_dataset(project, name, path, labels=label, description=description)
        _report_version(uploaded.version, uploaded.created)
        return
    platform = open_platform()
    size = path.stat().st_size if path.is_file() else 0
    with byte_progress(f"pushing {path.name}", 2 * size) as advance:
        outcome = platform.datasets.push(
            project, name, path, labels=label, actor=actor(), description=description, progress=advance
        )
    _report_version(outcome.version, outcome.created)


@datasets_app.command("append")
@reports_errors
def datasets_append(
    ref: str = typer.Argument(..., help="Parent version: NAME, NAME@N or NAME@LABEL."),
    path: Path = typer.Argument(..., help="File with the rows to add."),
    project: str = ProjectOption,
    label: list[str] = typer.Option([], "--label", "-l"),
) -> None:
    """A new version with the parent's rows plus the file's (the parent's rows are not copied)."""
    platform = open_platform()
    size = path.stat().st_size if path.is_file() else 0
    with byte_progress(f"appending {path.name}", 2 * size) as advance:
        outcome = platform.datasets.append(project, ref, path, labels=label, actor=actor(), progress=advance)
    _report_version(outcome.version, outcome.created)


@datasets_app.command("split")
@reports_errors
def datasets_split(
    ref: str,
    project: str = ProjectOption,
    eval_ratio: float = typer.Option(0.1, "--eval-ratio"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Split a version into `train` and `eval` versions, reproducibly by seed."""
    platform = open_platform()
    train, evaluation = platform.datasets.split(project, ref, eval_ratio=eval_ratio, seed=seed, actor=actor())
    _report_version(train.version, train.created)
    _report_version(evaluation.version, evaluation.created)


@datasets_app.command("label")
@reports_errors
def datasets_label(
    ref: str,
    project: str = ProjectOption,
    add: list[str] = typer.Option([], "--add"),
    remove: list[str] = typer.Option([], "--remove"),
) -> None:
    platform = open_platform()
    version = platform.datasets.label(project, ref, add=add, remove=remove, actor=actor())
    out.print(f"{version.ref} labels: {', '.join(version.labels) or '-'}")


@datasets_app.command("list")
@reports_errors
def datasets_list(project: str = ProjectOption) -> None:
    platform = open_platform()
    table = Table("dataset", "versions", "latest")
    for row in platform.datasets.list_datasets(project):
        table.add_row(row["name"], str(row["versions"]), f"@{row['latest']}" if row["latest"] else "-")
    out.print(table)


@datasets_app.command("show")
@reports_errors
def datasets_show(
    ref: str = typer.Argument(..., help="NAME for all versions, NAME@N or NAME@LABEL for one."),
    project: str = ProjectOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    platform = open_platform()
    if "@" not in ref:
        versions = platform.datasets.versions(project, ref)
        table = Table("version", "parent", "how", "format", "rows", "size", "labels", "created")
        for v in versions:
            table.add_row(
                f"@{v.version}",
                f"@{v.parent_version}" if v.parent_version else "-",
                v.derivation,
                v.format,
                f"{v.row_count:,}",
                _size(v.size_bytes),
                ", ".join(v.labels),
                v.created_at[:19],
            )
        out.print(table)
        return
    version = platform.datasets.get(project, ref)
    if as_json:
        print_json(version.__dict__)
        return
    _report_version(version, None)
    table = Table("column", "type", "nulls", "measure", "min", "mean", "max")
    for column, kind in version.schema.items():
        s = version.stats.get(column, {})
        table.add_row(
            column,
            kind,
            str(s.get("nulls", "")),
            str(s.get("measure") or ""),
            str(s.get("min", "")),
            str(s.get("mean", "")),
            str(s.get("max", "")),
        )
    out.print(table)


@datasets_app.command("preview")
@reports_errors
def datasets_preview(ref: str, project: str = ProjectOption, rows: int = typer.Option(5, "--rows", "-n")) -> None:
    platform = open_platform()
    for row in platform.datasets.preview(platform.datasets.get(project, ref), rows):
        out.print_json(json.dumps(row, default=str, ensure_ascii=False))


def _report_version(version: Any, created: bool | None) -> None:
    status = "" if created is None else ("created " if created else "already stored as ")
    labels = f" labels: {', '.join(version.labels)}" if version.labels else ""
    out.print(
        f"{status}{version.ref}: {version.row_count:,} rows, format {version.format}, "
        f"{_size(version.size_bytes)}, content {version.content_hash[:12]}{labels}",
        highlight=False,
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
