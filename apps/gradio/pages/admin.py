"""Admin (admins only; the tab is hidden for others and the API refuses them anyway): users, API
tokens (a new token is shown once), and the audit log with filters and CSV / JSON-lines export."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine, ok_text
from apps.gradio.pages import Page
from apps.gradio.session import UiSession
from deepext.audit import OUTCOMES

AUDIT_COLUMNS = ["id", "at", "actor", "action", "resource", "project_id", "outcome", "client_addr", "request_id"]
TOKEN_COLUMNS = ["id", "name", "revoked", "prefix", "projects", "role", "expires", "last used"]


def _when(at: dt.datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""


def users_table(session: UiSession, engine: Engine) -> pd.DataFrame:
    with engine.client(session) as client:
        rows = [
            {
                "username": u.username,
                "email": u.email or "",
                "admin": "yes" if u.admin else "",
                "active": "yes" if u.active else "no",
                "created": _when(u.created_at),
            }
            for u in client.users()
        ]
    return pd.DataFrame(rows, columns=["username", "email", "admin", "active", "created"])


def tokens_table(session: UiSession, engine: Engine) -> pd.DataFrame:
    with engine.client(session) as client:
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "prefix": t.prefix,
                "projects": ", ".join(t.projects) if t.projects is not None else "all",
                "role": t.role or "",
                "expires": _when(t.expires_at),
                "revoked": _when(t.revoked_at),
                "last used": _when(t.last_used_at),
            }
            for t in client.tokens()
        ]
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)


def audit_filters(
    actor: str, action: str, outcome: str, project_id: float | None, since: str, until: str
) -> dict[str, Any]:
    """The filters the form sets, as the API's query parameters (empty ones left out)."""
    return {
        "actor": actor.strip() or None,
        "action": action.strip() or None,
        "outcome": outcome.strip() or None,
        "project_id": int(project_id) if project_id else None,
        "since": since.strip() or None,
        "until": until.strip() or None,
    }


def audit_table(session: UiSession, engine: Engine, filters: dict[str, Any], limit: int = 200) -> pd.DataFrame:
    with engine.client(session) as client:
        rows = [
            {**row.model_dump(include=set(AUDIT_COLUMNS)), "at": _when(row.at)}
            for row in client.audit(limit=limit, **filters)
        ]
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    if not session.admin:
        return (gr.skip(),) * 5
    filters = audit_filters("", "", "", None, "", "")
    secret = gr.update(value="", visible=False)
    return (
        gr.skip(),
        users_table(session, engine),
        tokens_table(session, engine),
        secret,
        audit_table(session, engine, filters),
    )


def create_user(
    session: UiSession, engine: Engine, username: str, password: str, email: str, admin: bool
) -> tuple[Any, ...]:
    with engine.client(session) as client:
        user = client.create_user(username.strip(), password, admin=admin, email=email.strip() or None)
    return ok_text(f"User **{user.username}** created."), users_table(session, engine), "", ""


def create_token(
    session: UiSession, engine: Engine, name: str, days: float, projects: str, role: str | None
) -> tuple[Any, ...]:
    project_list = [p.strip() for p in projects.split(",") if p.strip()] or None
    with engine.client(session) as client:
        created = client.create_token(name.strip(), expires_in_days=int(days), projects=project_list, role=role or None)
    message = ok_text(f"Token **{created.name}** created. Copy it now: it is not shown again.")
    return message, gr.update(value=created.token, visible=True), tokens_table(session, engine)


def revoke_token(session: UiSession, engine: Engine, token_id: float | None) -> tuple[Any, ...]:
    if not token_id:
        return ("**Error: Enter the id of the token to revoke.**", gr.skip(), gr.skip())
    with engine.client(session) as client:
        client.revoke_token(int(token_id))
    hidden = gr.update(value="", visible=False)  # a token just shown is not shown again
    return ok_text(f"Token {int(token_id)} revoked."), tokens_table(session, engine), hidden


def search_audit(session: UiSession, engine: Engine, *filters: Any) -> tuple[Any, ...]:
    table = audit_table(session, engine, audit_filters(*filters))
    return ok_text(f"{len(table)} audit rows (newest first, at most 200)."), table


def export_audit(session: UiSession, engine: Engine, format: str, *filters: Any) -> tuple[Any, ...]:
    suffix = "csv" if format == "CSV" else "jsonl"
    with engine.client(session) as client:
        data = client.export_audit(suffix, **audit_filters(*filters))
    folder = Path(tempfile.mkdtemp(prefix="deepext-audit-"))
    path = folder / f"deepext-audit-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.{suffix}"
    path.write_bytes(data)
    return ok_text(f"Exported {path.name} ({len(data)} bytes)."), gr.update(value=str(path), visible=True)


def build(engine: Engine, session: gr.State) -> Page:
    status = gr.Markdown(elem_id="admin-status")
    with gr.Tabs():
        with gr.Tab("Users"), gr.Row(equal_height=False):
            with gr.Column(scale=3):
                users = gr.Dataframe(interactive=False, elem_id="users-table", max_height=360)
            with gr.Column(scale=2), gr.Group():
                gr.Markdown("#### New user")
                username = gr.Textbox(label="Username")
                password = gr.Textbox(label="Password", type="password")
                email = gr.Textbox(label="Email")
                admin = gr.Checkbox(label="Administrator")
                create_user_button = gr.Button("Create user", variant="primary")
        with gr.Tab("API tokens"), gr.Row(equal_height=False):
            with gr.Column(scale=3):
                tokens = gr.Dataframe(interactive=False, elem_id="tokens-table", max_height=360)
                with gr.Row():
                    revoke_id = gr.Number(label="Token id", precision=0, scale=2, elem_id="revoke-id")
                    revoke_button = gr.Button("Revoke", variant="stop", scale=1, elem_id="revoke-token")
            with gr.Column(scale=2), gr.Group():
                gr.Markdown("#### New personal token")
                token_name = gr.Textbox(label="Name", placeholder="ci", elem_id="token-name")
                token_days = gr.Number(value=90, precision=0, label="Expires in days", minimum=1, maximum=3650)
                token_projects = gr.Textbox(label="Limit to projects", placeholder="comma-separated; empty: all")
                token_role = gr.Dropdown(["", "viewer", "member", "maintainer", "owner"], value="", label="Cap role")
                create_token_button = gr.Button("Create token", variant="primary", elem_id="create-token")
                secret = gr.Textbox(
                    label="The new token (shown once)",
                    interactive=False,
                    buttons=["copy"],
                    visible=False,
                    elem_id="token-secret",
                )
        with gr.Tab("Audit log"):
            with gr.Row():
                actor = gr.Textbox(label="Actor", scale=1)
                action = gr.Textbox(label="Action prefix", placeholder="dataset.", scale=1)
                outcome = gr.Dropdown(["", *OUTCOMES], value="", label="Outcome", scale=1)
                project_id = gr.Number(value=None, label="Project id", precision=0, scale=1)
                since = gr.Textbox(label="Since", placeholder="2026-01-31T00:00", scale=1)
                until = gr.Textbox(label="Until", placeholder="ISO time", scale=1)
            with gr.Row():
                search = gr.Button("Search", variant="primary", elem_id="audit-search")
                export_format = gr.Radio(["CSV", "JSON lines"], value="CSV", show_label=False)
                export = gr.Button("Export", elem_id="audit-export")
            export_file = gr.File(label="Export", visible=False, interactive=False)
            audit = gr.Dataframe(interactive=False, elem_id="audit-table", max_height=420, wrap=True)

    filters = [actor, action, outcome, project_id, since, until]
    create_user_button.click(
        engine.action(create_user, 3),
        [session, username, password, email, admin],
        [session, status, users, username, password],
    )
    create_token_button.click(
        engine.action(create_token, 2),
        [session, token_name, token_days, token_projects, token_role],
        [session, status, secret, tokens],
    )
    revoke_button.click(engine.action(revoke_token, 2), [session, revoke_id], [session, status, tokens, secret])
    search.click(engine.action(search_audit, 1), [session, *filters], [session, status, audit])
    export.click(engine.action(export_audit, 1), [session, export_format, *filters], [session, status, export_file])
    return Page(engine.action(refresh, 4), [status, users, tokens, secret, audit])
