"""Provider credentials of the picked project (shown on the Projects page): the external model APIs
its members may call through the gateway as `PROJECT/PROVIDER/MODEL`. A key goes in through a
write-only field and never comes back: the API answers only whether one is stored and its last four
characters. Registering, changing and removing need `providers.write` (maintainers and owners)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from apps.gradio.engine import Engine, ok_text
from apps.gradio.pages import Page
from apps.gradio.session import UiSession
from deepext.serve.providers.registry import ProviderPublic

PRESETS = ["", "openai", "anthropic", "qwen", "siliconflow", "ollama", "lmstudio"]
COLUMNS = ["name", "kind", "base url", "models", "key", "call as", "updated"]


def providers_table(providers: list[ProviderPublic]) -> pd.DataFrame:
    rows = [
        {
            "name": p.name,
            "kind": f"{p.kind} · local" if p.local else p.kind,
            "base url": p.base_url,
            "models": ", ".join(p.models) if p.models is not None else "any",
            "key": (f"stored (…{p.api_key_hint})" if p.api_key_hint else "stored") if p.has_api_key else "none",
            "call as": f"{p.model_prefix}MODEL",
            "updated": p.updated_at[:16].replace("T", " "),
        }
        for p in providers
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def provider_spec(name: str, preset: str, kind: str, base_url: str, models: str, api_key: str) -> dict[str, Any]:
    """The form as the API's ProviderCreate body (empty fields left out; kind openai by default)."""
    spec: dict[str, Any] = {"name": name.strip()}
    if preset:
        spec["preset"] = preset
    if kind:
        spec["kind"] = kind
    if base_url.strip():
        spec["base_url"] = base_url.strip()
        if not kind and not preset:
            spec["kind"] = "openai"  # a base URL alone: an OpenAI-compatible API, as most are
    allowed = [m.strip() for m in models.split(",") if m.strip()]
    if allowed:
        spec["models"] = allowed
    if api_key:
        spec["api_key"] = api_key
    return spec


def _table(session: UiSession, engine: Engine) -> pd.DataFrame:
    with engine.client(session) as client:
        return providers_table(client.providers(session.project))


def refresh(session: UiSession, engine: Engine) -> tuple[Any, ...]:
    if not session.project or not session.may("providers", "read"):
        return (gr.skip(), pd.DataFrame(columns=COLUMNS), gr.update(visible=False))
    return (gr.skip(), _table(session, engine), gr.update(visible=session.may("providers", "write")))


def save(
    session: UiSession,
    engine: Engine,
    name: str,
    preset: str,
    kind: str,
    base_url: str,
    models: str,
    api_key: str,
) -> tuple[Any, ...]:
    """Register the provider, or change it when the name exists (empty fields stay as they are).
    The key field is cleared either way: it is never shown back."""
    name = name.strip()
    if not name:
        return ("**Error: Give the provider a name.**", gr.skip(), gr.skip())
    with engine.client(session) as client:
        existing = {p.name for p in client.providers(session.project)}
        if name in existing:
            changes: dict[str, Any] = {}
            if base_url.strip():
                changes["base_url"] = base_url.strip()
            if models.strip():
                changes["models"] = [m.strip() for m in models.split(",") if m.strip()]
            if api_key:
                changes["api_key"] = api_key
            provider = client.update_provider(session.project, name, changes)
            message = f"Provider **{provider.name}** changed."
        else:
            provider = client.create_provider(
                session.project, provider_spec(name, preset, kind, base_url, models, api_key)
            )
            message = f"Provider **{provider.name}** registered; call its models as `{provider.model_prefix}MODEL`."
    return ok_text(message), _table(session, engine), ""


def test_connection(
    session: UiSession, engine: Engine, name: str, preset: str, kind: str, base_url: str, models: str, api_key: str
) -> tuple[Any, ...]:
    """Call the provider's model listing with the form's values (a saved provider, named and with the
    key field empty, is tested with its stored key). Nothing is saved."""
    name = name.strip()
    if not name:
        return ("**Error: Give the provider a name.**",)
    with engine.client(session) as client:
        saved = name in {p.name for p in client.providers(session.project)}
        if saved and not api_key and not base_url.strip():
            probe = client.test_provider(session.project, name=name)
        else:
            probe = client.test_provider(session.project, provider_spec(name, preset, kind, base_url, models, api_key))
    if not probe.reachable:
        return (f"**Not reachable:** {probe.detail}",)
    if probe.auth == "refused":
        return (f"**Reachable, but the key was refused:** {probe.detail}",)
    listed = f" Models: {', '.join(probe.models[:8])}." if probe.models else ""
    verdict = "Reachable, key accepted" if probe.auth == "ok" else "Reachable"
    return (ok_text(f"{verdict} ({probe.latency_ms:.0f} ms, HTTP {probe.status_code}).{listed} Nothing was saved."),)


def remove_key(session: UiSession, engine: Engine, name: str) -> tuple[Any, ...]:
    with engine.client(session) as client:
        provider = client.update_provider(session.project, name.strip(), {"api_key": None})
    return ok_text(f"The key of **{provider.name}** was removed."), _table(session, engine)


def remove(session: UiSession, engine: Engine, name: str) -> tuple[Any, ...]:
    with engine.client(session) as client:
        client.delete_provider(session.project, name.strip())
    return ok_text(f"Provider **{name.strip()}** removed."), _table(session, engine)


def build(engine: Engine, session: gr.State) -> Page:
    gr.Markdown("### Model providers of the project")
    status = gr.Markdown(elem_id="providers-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            table = gr.Dataframe(interactive=False, elem_id="providers-table", max_height=280)
        with gr.Column(scale=2, visible=False) as form, gr.Group(elem_id="provider-form"):
            gr.Markdown("Register a provider, or change one by its name (maintainers and owners)")
            name = gr.Textbox(label="Name", placeholder="openai", elem_id="provider-name")
            with gr.Row():
                preset = gr.Dropdown(PRESETS, value="", label="Preset")
                kind = gr.Dropdown(["", "openai", "anthropic"], value="", label="Kind (default: openai)")
            base_url = gr.Textbox(label="Base URL", placeholder="https://api.openai.com/v1", elem_id="provider-url")
            models = gr.Textbox(label="Allowed models", placeholder="comma-separated; empty: any")
            api_key = gr.Textbox(
                label="API key (write-only: stored encrypted, never shown)",
                type="password",
                elem_id="provider-key",
            )
            with gr.Row():
                save_button = gr.Button("Save provider", variant="primary", elem_id="save-provider")
                test_button = gr.Button("Test connection", elem_id="test-provider")
            with gr.Row():
                remove_key_button = gr.Button("Remove key", size="sm")
                remove_button = gr.Button("Remove provider", variant="stop", size="sm")

    save_button.click(
        engine.action(save, 2),
        [session, name, preset, kind, base_url, models, api_key],
        [session, status, table, api_key],
    )
    test_button.click(
        engine.action(test_connection, 0),
        [session, name, preset, kind, base_url, models, api_key],
        [session, status],
    )
    remove_key_button.click(engine.action(remove_key, 1), [session, name], [session, status, table])
    remove_button.click(engine.action(remove, 1), [session, name], [session, status, table])
    return Page(engine.action(refresh, 2), [status, table, form])
