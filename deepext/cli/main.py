"""The `deepext` command line. Each verb is a thin layer over the same functions the REST API calls;
domain errors come out as one red line naming the problem (exit 2 for bad input, 1 otherwise)."""

from __future__ import annotations

import typer

from deepext.cli import ops, remote
from deepext.cli.audit import audit_app
from deepext.cli.common import actor, open_platform, out, reports_errors
from deepext.cli.datasets import datasets_app
from deepext.cli.eval import eval_app
from deepext.cli.grpo import grpo_app
from deepext.cli.jobs import jobs_app
from deepext.cli.knowledge import kb_app
from deepext.cli.models import models_app
from deepext.cli.profiles import profiles_app
from deepext.cli.providers import providers_app
from deepext.cli.sweeps import sweeps_app
from deepext.cli.users import users_app
from deepext.config import get_settings

app = typer.Typer(help="deepext: fine-tune LLMs (SFT, LoRA, GRPO) on Ray.", no_args_is_help=True)
db_app = typer.Typer(help="Metadata store schema.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(projects_app, name="projects")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(grpo_app, name="grpo")
app.add_typer(jobs_app, name="jobs")
app.add_typer(profiles_app, name="profiles")
app.add_typer(sweeps_app, name="sweeps")
app.add_typer(eval_app, name="eval")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(kb_app, name="kb")
app.add_typer(providers_app, name="providers")
app.command("login")(remote.login)
app.command("logout")(remote.logout)
app.command("doctor")(ops.doctor)
app.command("backup")(ops.backup_command)
app.command("restore")(ops.restore_command)


# ---- platform
@app.command()
@reports_errors
def up() -> None:
    """Start the platform on its configured stores and Ray; stop with Ctrl-C."""
    from deepext.launcher import run_platform

    run_platform(get_settings(), out)


@db_app.command("upgrade")
@reports_errors
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Run the migrations up to REVISION (default: the newest)."""
    from deepext.db import Database

    db = Database(get_settings().resolved_database_url)
    db.upgrade(revision)
    out.print(f"{db.redacted_url()} is at revision {db.current_revision()}")


@db_app.command("current")
@reports_errors
def db_current() -> None:
    """Show the schema revision of the metadata store."""
    from deepext.db import Database

    db = Database(get_settings().resolved_database_url)
    state = "up to date" if db.is_migrated() else f"behind (newest is {db.head_revision()})"
    out.print(f"{db.redacted_url()}: revision {db.current_revision()}, {state}")


# ---- projects
@projects_app.command("create")
@reports_errors
def projects_create(name: str, description: str = typer.Option("", "--description", "-d")) -> None:
    from deepext.projects import create_project

    platform = open_platform()
    with platform.db.session() as session:
        project = create_project(session, name=name, description=description, actor=actor())
        out.print(f"created project {project.name}")


@projects_app.command("list")
@reports_errors
def projects_list() -> None:
    from deepext.projects import list_projects

    platform = open_platform()
    with platform.db.session() as session:
        for project in list_projects(session):
            out.print(f"{project.name}\t{project.description}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
