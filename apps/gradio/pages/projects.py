"""Projects: the user's projects, creating one (the creator becomes its owner), and - for the
project's owners and admins only - its members and their roles."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine, ok_text
from apps.gradio.pages import Page
from apps.gradio.session import UiSession

ROLES = ["owner", "maintainer", "member", "viewer"]


def projects_table(session: UiSession, engine: Engine) -> pd.DataFrame:
    with engine.client(session) as client:
        rows = [
            {
                "project": p.name,
                "your role": p.role or ("admin" if session.admin else ""),
                "description": p.description,
                "created": f"{p.created_at:%Y-%m-%d %H:%M}",
            }
            for p in client.projects()
        ]
    return pd.DataFrame(rows, columns=["project", "your role", "description", "created"])


def members_table(session: UiSession, engine: Engine) -> pd.DataFrame:
    if not session.project:
        return pd.DataFrame(columns=["username", "role"])
    with engine.client(session) as client:
        rows = [{"username": m.username, "role": m.role} for m in client.members(session.project)]
    return pd.DataFrame(rows, columns=["username", "role"])


def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    manage = session.may("members", "manage")
    heading = f"### Members of `{session.project}`" if session.project else "### Members"
    return (
        gr.skip(),  # keep the last action's message (a project just created reloads the page)
        projects_table(session, engine),
        heading,
        members_table(session, engine),
        gr.update(visible=manage),
    )


def create(session: UiSession, engine: Engine, name: str, description: str) -> tuple[Any, ...]:
    """The new project, picked in the header (which the session change then reloads)."""
    name = name.strip()
    with engine.client(session) as client:
        project = client.create_project(name, description)
        me = client.me()
    new_session = session.with_me(me).with_project(project.name)
    return new_session, ok_text(f"Project **{project.name}** created; you are its owner."), "", ""


def set_member(session: UiSession, engine: Engine, username: str, role: str) -> tuple[Any, ...]:
    with engine.client(session) as client:
        member = client.set_member(session.project, username.strip(), role)
    return ok_text(f"**{member.username}** is now {member.role}."), members_table(session, engine)


def remove_member(session: UiSession, engine: Engine, username: str) -> tuple[Any, ...]:
    with engine.client(session) as client:
        client.remove_member(session.project, username.strip())
    return ok_text(f"**{username.strip()}** was removed."), members_table(session, engine)


def build(engine: Engine, session: gr.State) -> Page:
    status = gr.Markdown(elem_id="projects-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("### Your projects")
            table = gr.Dataframe(interactive=False, elem_id="projects-table", max_height=320)
        with gr.Column(scale=2), gr.Group():
            gr.Markdown("### New project")
            name = gr.Textbox(label="Name", placeholder="lowercase-with-dashes", elem_id="new-project-name")
            description = gr.Textbox(label="Description", lines=2)
            create_button = gr.Button("Create project", variant="primary", elem_id="create-project")
    members_heading = gr.Markdown("### Members")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            members = gr.Dataframe(interactive=False, elem_id="members-table", max_height=320)
        with gr.Column(scale=2, visible=False) as manage, gr.Group():
            gr.Markdown("Add a member or change a role (owners and admins)")
            member_name = gr.Textbox(label="Username", elem_id="member-username")
            member_role = gr.Dropdown(ROLES, value="member", label="Role")
            with gr.Row():
                set_button = gr.Button("Set role", variant="primary")
                remove_button = gr.Button("Remove", variant="stop")

    create_button.click(
        engine.action(create, 2, returns_session=True),
        [session, name, description],
        [session, status, name, description],
    )
    set_button.click(engine.action(set_member, 1), [session, member_name, member_role], [session, status, members])
    remove_button.click(engine.action(remove_member, 1), [session, member_name], [session, status, members])
    return Page(engine.action(refresh, 4), [status, table, members_heading, members, manage])
