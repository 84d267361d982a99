"""`deepext audit`: verify the hash chain, list and export the audit log (on the metadata store)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from pathlib import Path

import typer
from sqlalchemy import func, select

from deepext import audit
from deepext.cli.common import err, open_platform, out, print_table, reports_errors
from deepext.db.models import AuditEntry

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


def _filter(
    actor: str | None, action: str | None, project: str | None, outcome: str | None, since: dt.datetime | None
) -> audit.AuditFilter:
    project_id = None
    if project is not None:
        from deepext.projects import get_project

        with open_platform().db.session() as session:
            project_id = get_project(session, project).id
    return audit.AuditFilter(
        actor=actor,
        action=action,
        project_id=project_id,
        outcome=outcome,
        since=since.replace(tzinfo=dt.UTC) if since and not since.tzinfo else since,
    )


@audit_app.command("verify")
@reports_errors
def verify() -> None:
    """Recompute the hash chain; exit 1 naming the first row that was edited or follows a deleted one."""
    platform = open_platform()
    with platform.db.session() as session:
        bad = audit.verify_chain(session)
        total = session.scalar(select(func.count()).select_from(AuditEntry))
    if bad is not None:
        err.print(f"[bold red]audit log tampered:[/] row {bad} does not match its hash or its predecessor")
        raise typer.Exit(1)
    out.print(f"audit log intact: {total} rows, hash chain verified")


@audit_app.command("list")
@reports_errors
def list_(
    actor: str = typer.Option(None, "--actor"),
    action: str = typer.Option(None, "--action", help="A prefix, e.g. `dataset.`"),
    project: str = typer.Option(None, "--project", "-p"),
    outcome: str = typer.Option(None, "--outcome"),
    since: dt.datetime = typer.Option(None, "--since"),
    limit: int = typer.Option(50, "--limit", "-n"),
) -> None:
    """The newest rows first."""
    where = _filter(actor, action, project, outcome, since)
    with open_platform().db.session() as session:
        rows = [
            [
                str(e.id),
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.actor,
                e.action,
                e.resource,
                e.outcome,
                e.client_addr or "",
            ]
            for e in audit.list_entries(session, where, limit=limit)
        ]
    print_table(["id", "at (UTC)", "actor", "action", "resource", "outcome", "client"], rows)


@audit_app.command("export")
@reports_errors
def export(
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    format: str = typer.Option("jsonl", "--format", help="jsonl or csv"),
    actor: str = typer.Option(None, "--actor"),
    action: str = typer.Option(None, "--action"),
    project: str = typer.Option(None, "--project", "-p"),
    outcome: str = typer.Option(None, "--outcome"),
    since: dt.datetime = typer.Option(None, "--since"),
) -> None:
    """Every matching row, oldest first."""
    if format not in {"jsonl", "csv"}:
        from deepext.errors import InvalidInput

        raise InvalidInput(f"--format {format!r}: jsonl or csv", field="format")
    where = _filter(actor, action, project, outcome, since)
    sink = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    count = 0
    try:
        with open_platform().db.session() as session:
            writer = None
            for entry in audit.iter_entries(session, where):
                row = audit.as_dict(entry)
                if format == "csv":
                    if writer is None:
                        writer = csv.DictWriter(sink, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow({**row, "detail": json.dumps(row["detail"], sort_keys=True)})
                else:
                    sink.write(json.dumps(row, sort_keys=True) + "\n")
                count += 1
    finally:
        if output:
            sink.close()
    if output:
        out.print(f"wrote {count} rows to {output}")
