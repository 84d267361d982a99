"""What every CLI module shares: error reporting, the acting user, the platform, progress bars."""

from __future__ import annotations

import functools
import getpass
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from deepext.config import get_settings
from deepext.errors import DeepextError, InvalidInput

if TYPE_CHECKING:
    from deepext.platform import Platform

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ProjectOption = typer.Option("demo", "--project", "-p", envvar="DEEPEXT_PROJECT", help="Project name.")


def reports_errors(fn: F) -> F:
    """Turn domain errors into one readable line and an exit code, never a traceback."""

    from deepext.client import ApiError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DeepextError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1) from exc
        except ApiError as exc:  # remote mode: the API's answer, with its request id for the admins
            err.print(
                f"[bold red]error:[/] {exc.message} (HTTP {exc.status}, request {exc.request_id})",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2 if exc.status == 422 else 1) from exc

    return wrapper  # type: ignore[return-value]


def actor() -> str:
    """Who the CLI acts as in the audit log (the API issue replaces this with the logged-in user)."""
    return f"cli:{os.environ.get('DEEPEXT_USER') or getpass.getuser()}"


def open_platform() -> Platform:
    from deepext.airgap import apply_air_gap
    from deepext.platform import Platform

    settings = get_settings()
    apply_air_gap(settings)  # commands that open the platform may load models or start Ray
    return Platform.open(settings)


@contextmanager
def byte_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over `total` bytes; yields the callback that advances it."""
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str, ensure_ascii=False))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on a terminal; piped, one tab-separated line per row (rich would expand the tabs)."""
    if not out.is_terminal:
        for row in [columns, *rows]:
            typer.echo("\t".join(row))
        return
    from rich import box
    from rich.table import Table

    table = Table(*columns, box=box.SIMPLE_HEAD)
    table.columns[0].no_wrap = True
    for row in rows:
        table.add_row(*row)
    out.print(table)
