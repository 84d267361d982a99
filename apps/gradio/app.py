"""The deepext web app: Gradio over the REST API, with the user's session token and nothing else.

    python -m apps.gradio.app --api-url http://127.0.0.1:8000 --port 7860
    deepext up                      # starts it too, on DEEPEXT_UI_PORT (default 7860)

`build_app(api_url)` builds the Blocks (no server); `main()` launches them. Each tab is one module
of `apps/gradio/pages/`; a tab's callbacks call the REST client, so whatever the UI does the API
allows, and what a role may not do is not offered (the API refuses it anyway).
"""

from __future__ import annotations

import argparse
from typing import Any

import gradio as gr

from apps.gradio.engine import Engine
from apps.gradio.pages import (
    Page,
    admin,
    dashboard,
    datasets,
    evaluation,
    login,
    models,
    playground,
    projects,
    providers,
    training,
)
from apps.gradio.session import UiSession

CSS = """
#login-form { max-width: 420px; margin: 6vh auto 0 auto; }
#header { align-items: center; }
#header .brand { font-size: 1.3em; }
#login-notice p, #projects-status p, #datasets-status p, #training-status p { margin: 0; }
#app-ready { display: none; }
#models-status p, #evaluation-status p, #providers-status p, #playground-status p { margin: 0; }
.lineage-chain { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; padding: 8px 0; }
.lineage-node { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px 10px;
  background: var(--background-fill-secondary); min-width: 120px; }
.lineage-base { border-style: dashed; }
.lineage-current { border: 2px solid var(--color-accent); }
.lineage-title { font-weight: 600; font-family: var(--font-mono); }
.lineage-detail { font-size: 0.85em; color: var(--body-text-color-subdued); }
.lineage-arrow { font-size: 1.4em; color: var(--body-text-color-subdued); }
.compare-side { display: inline-block; margin-right: 1.5em; }
.chat-sources ol { margin: 4px 0 0 1.2em; font-size: 0.9em; }
.dash-cards { display: flex; flex-wrap: wrap; gap: 10px; }
.dash-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 14px; min-width: 150px;
  background: var(--background-fill-secondary); }
.dash-title { font-size: 0.85em; color: var(--body-text-color-subdued); text-transform: uppercase; }
.dash-number { font-size: 1.8em; font-weight: 600; }
.dash-detail { font-size: 0.85em; }
.dash-cluster progress { width: 45%; vertical-align: middle; }
.config-diff { border-collapse: collapse; font-size: 0.9em; }
.config-diff td, .config-diff th { border: 1px solid var(--border-color-primary); padding: 2px 8px; }
.config-diff tr.differs td { background: var(--color-accent-soft); font-weight: 600; }
#dashboard-status p { margin: 0; }
"""


def render(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    """The frame for this session: the login view or the app, the header, the admin tab. The session
    output is skipped unless it changes (an expired one), so a late run cannot write back an old one."""
    if not session.signed_in:
        return (
            gr.skip(),
            gr.update(visible=True),
            gr.update(visible=False),
            session.notice,
            "",
            gr.update(choices=[], value=None),
            gr.update(visible=False),
        )
    from deepext.client import ApiError

    with engine.client(session) as client:
        try:
            names = [p.name for p in client.projects()]
        except ApiError as exc:
            if exc.status == 401:
                expired = session.expired()
                return (expired, *render(expired, engine)[1:])
            names = []
    who = f"**{session.username}**" + (" · admin" if session.admin else "")
    if session.project and session.role():
        who += f" · {session.role()} in `{session.project}`"
    return (
        gr.skip(),
        gr.update(visible=False),
        gr.update(visible=True),
        "",
        who,
        gr.update(choices=names, value=session.project or None),
        gr.update(visible=session.admin),
    )


def ready_marker(session: UiSession) -> str:
    return f'<span class="ready" data-user="{session.username}" data-project="{session.project}"></span>'


def build_app(api_url: str, *, session_secret: str | None = None) -> gr.Blocks:
    """The whole app for the API at `api_url`; launch it with `.launch(...)`. The session survives a
    page reload in the browser's storage, encrypted with `session_secret` (None: a new one per build)."""
    engine = Engine(api_url)
    with gr.Blocks(title="deepext", analytics_enabled=False) as app:
        session = gr.State(UiSession())
        kept = gr.BrowserState(["", ""], storage_key="deepext-session", secret=session_secret)
        # Set once every page has loaded for the session, logged out too (tests and scripts wait for it).
        ready = gr.HTML(elem_id="app-ready")
        with gr.Column(visible=True) as login_view:
            form = login.build(engine, session)
        with gr.Column(visible=False) as main_view:
            with gr.Row(elem_id="header"):
                gr.Markdown("**deepext**", elem_classes="brand")
                project = gr.Dropdown(label="Project", choices=[], elem_id="project-picker", scale=2)
                who = gr.Markdown(elem_id="who")
                logout = gr.Button("Log out", size="sm", elem_id="logout", scale=0, min_width=100)
            with gr.Tabs():
                pages: list[Page] = []
                with gr.Tab("Dashboard", id="dashboard"):
                    pages.append(dashboard.build(engine, session))
                with gr.Tab("Projects", id="projects"):
                    pages.append(projects.build(engine, session))
                    pages.append(providers.build(engine, session))
                with gr.Tab("Datasets", id="datasets"):
                    pages.append(datasets.build(engine, session))
                with gr.Tab("Training", id="training"):
                    pages.append(training.build(engine, session))
                with gr.Tab("Models", id="models"):
                    pages.append(models.build(engine, session))
                with gr.Tab("Evaluation", id="evaluation"):
                    pages.append(evaluation.build(engine, session))
                with gr.Tab("Playground", id="playground"):
                    pages.append(playground.build(engine, session))
                with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                    pages.append(admin.build(engine, session))

        def on_session(current: UiSession) -> tuple[Any, ...]:
            return render(current, engine)

        changed = session.change(lambda: "", None, [ready]).then(
            on_session, [session], [session, login_view, main_view, form["notice"], who, project, admin_tab]
        )
        for page in pages:
            changed = changed.then(page.refresh, [session], [session, *page.outputs])
        changed.then(ready_marker, [session], [ready])
        session.change(login.remembered, [session], [kept])
        app.load(lambda saved: login.restore(engine, saved), [kept], [session])
        project.input(lambda current, name: current.with_project(name or ""), [session, project], [session])
        logout.click(lambda current: login.log_out(engine, current), [session], [session])
    return app


def main(argv: list[str] | None = None) -> None:
    from deepext.config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m apps.gradio.app", description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default=f"http://{settings.api_host}:{settings.api_port}")
    parser.add_argument("--host", default=settings.ui_host)
    parser.add_argument("--port", type=int, default=settings.ui_port)
    args = parser.parse_args(argv)
    secret = settings.ui_session_secret.get_secret_value() if settings.ui_session_secret else None
    launch(build_app(args.api_url, session_secret=secret), host=args.host, port=args.port, block=True)


def launch(app: gr.Blocks, *, host: str, port: int, block: bool = False) -> str:
    """Serve the app; returns its URL (with `block`, only once it stops)."""
    app.queue(default_concurrency_limit=8)
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=True,
        show_error=False,
        css=CSS,
        footer_links=[],
    )
    return f"http://{host}:{port}"


if __name__ == "__main__":
    main()
