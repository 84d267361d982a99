"""The login view: username and password against POST /api/v1/auth/login."""

from __future__ import annotations

import contextlib
from typing import Any

import gradio as gr

from apps.gradio.engine import Engine, error_text
from apps.gradio.session import UiSession
from deepext.client import ApiError


def log_in(engine: Engine, username: str, password: str) -> tuple[UiSession, str]:
    """A signed-in session (its project: the user's first), or the reason there is none."""
    if not username or not password:
        return UiSession(), "**Error: Enter your username and password.**"
    with engine.client() as client:
        try:
            answer = client.login(username.strip(), password)
            projects = client.projects()
        except ApiError as exc:
            return UiSession(), error_text(exc)
    first = projects[0].name if projects else ""
    return UiSession.from_me(answer.token, answer.user, project=first), ""


def restore(engine: Engine, saved: Any) -> Any:
    """The session a browser kept across a reload (`[token, project]` from `gr.BrowserState`), checked
    with the API; an ended one comes back as expired, nothing kept leaves the tab as it is."""
    token, project = [*saved, "", ""][:2] if isinstance(saved, list) else ("", "")
    if not token:
        return gr.skip()
    with engine.client(UiSession(token=str(token))) as client:
        try:
            me = client.me()
            names = [p.name for p in client.projects()]
        except ApiError:
            return UiSession().expired()
    picked = project if project in names else (names[0] if names else "")
    return UiSession.from_me(str(token), me, project=picked)


def remembered(session: UiSession) -> list[str]:
    """What the browser keeps of a session: its token and project, or nothing once it ends."""
    return [session.token, session.project] if session.signed_in else ["", ""]


def log_out(engine: Engine, session: UiSession) -> UiSession:
    """End the session on the server (if it is still alive there) and forget it here."""
    if session.signed_in:
        # an expired or revoked session is over anyway
        with engine.client(session) as client, contextlib.suppress(ApiError):
            client.logout()
    return UiSession(notice="You are logged out.")


def build(engine: Engine, session: gr.State) -> dict[str, Any]:
    with gr.Column(elem_id="login-form"):
        gr.Markdown("## Log in to deepext")
        notice = gr.Markdown(elem_id="login-notice")
        username = gr.Textbox(label="Username", elem_id="login-username", autofocus=True)
        password = gr.Textbox(label="Password", type="password", elem_id="login-password")
        submit = gr.Button("Log in", variant="primary", elem_id="login-button")

    def on_submit(name: str, secret: str) -> tuple[Any, ...]:
        signed_in, message = log_in(engine, name, secret)
        if not signed_in.signed_in:  # keep the session (and its notice) as it was; say why
            return gr.skip(), message, gr.skip()
        return signed_in, "", ""

    for trigger in (submit.click, password.submit):
        trigger(on_submit, [username, password], [session, notice, password])
    return {"notice": notice, "username": username, "password": password}
