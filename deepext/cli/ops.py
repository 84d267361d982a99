"""Operating the platform: `deepext doctor` (is everything reachable and ready?) and `deepext backup` /
`deepext restore` of the metadata database, the artifact store and the vector store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from deepext.cli.common import err, out, print_json, print_table, reports_errors
from deepext.config import get_settings


@reports_errors
def doctor(
    json_output: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    start_ray: bool = typer.Option(
        False, "--start-ray", help="With no ray_address, start a local Ray (in a child process) to check it."
    ),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds each network check may take."),
) -> None:
    """Check the database, Ray, GPUs, the artifact and vector stores and external providers; exit 1 if
    any check fails."""
    from deepext.airgap import apply_air_gap
    from deepext.ops.doctor import any_failed, run_checks

    settings = get_settings()
    apply_air_gap(settings)  # a Ray it starts must not call out either
    results = run_checks(settings, start_ray=start_ray, timeout_s=timeout)
    failed = any_failed(results)
    if json_output:
        print_json({"ok": not failed, "checks": [result.as_dict() for result in results]})
    else:
        print_table(("check", "status", "detail", "fix"), [(r.name, r.status, r.detail, r.fix) for r in results])
        fails, warnings = (sum(r.status == status for r in results) for status in ("fail", "warn"))
        summary = f"{fails} failed, {warnings} warning(s)" if failed else f"no check failed, {warnings} warning(s)"
        out.print(summary, style="bold red" if failed else "green", highlight=False)
    if failed:
        raise typer.Exit(1)


@reports_errors
def backup_command(
    path: Path = typer.Argument(..., help="The archive to write: NAME.tar, or NAME.tar.gz (gzip)."),
    include_secret_key: bool = typer.Option(
        False, "--include-secret-key", help="Also store <home>/secret.key, which decrypts provider API keys."
    ),
) -> None:
    """Write the metadata database, the artifact store and the vector store to one archive."""
    from rich.filesize import decimal

    from deepext.ops.backup import backup, iter_part_sizes

    with _progress_bars() as progress:
        report = backup(get_settings(), path, include_secret_key=include_secret_key, progress=progress)
    database = report.manifest["database"]
    parts = ", ".join(f"{part} {files} files {decimal(size)}" for part, files, size in iter_part_sizes(report.manifest))
    out.print(
        f"wrote {report.path} ({decimal(report.path.stat().st_size)}): {database['backend']} database at revision "
        f"{database['revision']}, {sum(database['counts'].values())} rows; {parts}",
        highlight=False,
        soft_wrap=True,
    )
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


@reports_errors
def restore_command(
    path: Path = typer.Argument(..., help="An archive `deepext backup` wrote."),
    force: bool = typer.Option(False, "--force", help="Replace stores that already hold data."),
) -> None:
    """Restore a backup into the configured (empty) stores; checks every file's sha256 before it
    changes anything. Stop the platform first."""
    from deepext.ops.backup import restore

    settings = get_settings()
    with _progress_bars() as progress:
        report = restore(settings, path, force=force, progress=progress)
    counts = report.counts
    out.print(
        f"restored {path}: {', '.join(report.parts)}; schema revision {report.revision}; "
        f"{counts.get('projects', 0)} projects, {counts.get('datasets', 0)} datasets, "
        f"{counts.get('model_versions', 0)} model versions, {counts.get('audit_log', 0)} audit rows",
        highlight=False,
        soft_wrap=True,
    )
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


class _PhaseBars:
    """deepext.ops.backup's progress as rich bars on stderr: one bar per phase, over bytes."""

    def __init__(self, bars: Progress) -> None:
        self._bars = bars
        self._task: TaskID | None = None

    def phase(self, label: str, total_bytes: int) -> None:
        if self._task is not None:
            self._bars.update(self._task, visible=False)
        self._task = self._bars.add_task(label, total=total_bytes or None)

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._bars.advance(self._task, nbytes)


@contextmanager
def _progress_bars() -> Iterator[_PhaseBars]:
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bars:
        yield _PhaseBars(bars)
