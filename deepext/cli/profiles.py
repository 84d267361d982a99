"""`deepext profiles`: save, list and show training parameter profiles (named, versioned presets of
GRPO or SFT settings); `deepext jobs submit --profile NAME[@N]` starts a job from one."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepext.cli.common import ProjectOption, actor, open_platform, out, print_json, reports_errors
from deepext.cli.remote import remote_client

profiles_app = typer.Typer(help="Training parameter profiles.", no_args_is_help=True)


@profiles_app.command("save")
@reports_errors
def profiles_save(
    name: str = typer.Argument(..., help="The profile's name; other settings under it make the next version."),
    settings: Path = typer.Argument(..., help="YAML: any part of a GRPO or SFT job config."),
    kind: str = typer.Option(..., "--kind", "-k", help="grpo or sft."),
    description: str = typer.Option("", "--description", "-d"),
    project: str = ProjectOption,
) -> None:
    """Store the settings as the profile's next version (the same settings keep the newest one)."""
    from deepext.cli.jobs import load_job_config
    from deepext.train.profiles import save_profile

    data = load_job_config(settings)
    client = remote_client()
    saved = (
        client.save_profile(project, name, kind, data, description=description)
        if client
        else save_profile(
            open_platform(), project, name=name, kind=kind, settings=data, description=description, actor=actor()
        )
    )
    out.print(f"profile {saved.ref} ({saved.kind}) {'saved' if saved.created else 'unchanged'}")


@profiles_app.command("list")
@reports_errors
def profiles_list(
    name: str = typer.Argument(None, help="Every version of this profile (default: the newest of each)."),
    project: str = ProjectOption,
) -> None:
    from deepext.train.profiles import list_profiles

    client = remote_client()
    rows = client.profiles(project, name=name) if client else list_profiles(open_platform(), project, name)
    table = Table("profile", "kind", "fields", "by", "saved", "description")
    for row in rows:
        fields = ", ".join(sorted(row.settings))
        table.add_row(row.ref, row.kind, fields, row.created_by, f"{row.created_at:%Y-%m-%d %H:%M}", row.description)
    out.print(table)


@profiles_app.command("show")
@reports_errors
def profiles_show(
    ref: str = typer.Argument(..., help="NAME@N, or NAME for the newest."), project: str = ProjectOption
) -> None:
    """A profile version's settings (JSON)."""
    from deepext.train.profiles import get_profile

    client = remote_client()
    row = client.profile(project, ref) if client else get_profile(open_platform(), project, ref)
    print_json(row.__dict__)
