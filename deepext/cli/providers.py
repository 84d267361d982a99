"""`deepext providers`: administer the external model providers' stored credentials (on the metadata store)
and test a provider's connection."""

from __future__ import annotations

import typer

from deepext.cli.common import ProjectOption, actor, open_platform, out, reports_errors

providers_app = typer.Typer(help="External model providers.", no_args_is_help=True)


@providers_app.command("rotate-keys")
@reports_errors
def rotate_keys() -> None:
    """Re-encrypt every stored provider API key with the first key of DEEPEXT_SECRET_KEY.

    After putting a new key first (DEEPEXT_SECRET_KEY=NEW,OLD), run this once; then OLD can be
    dropped. All or nothing: a key no configured key can decrypt is named and nothing changes."""
    from deepext.serve.providers.registry import rotate_provider_keys

    count = rotate_provider_keys(open_platform(), actor=actor())
    out.print(f"re-encrypted {count} provider API key{'' if count == 1 else 's'} with the first secret key")


@providers_app.command("test")
@reports_errors
def test_connection(
    name: str = typer.Argument(..., help="A saved provider of the project."),
    project: str = ProjectOption,
) -> None:
    """Call a saved provider's model listing with its stored key: reachable, key taken, latency. Stores nothing."""
    from deepext.serve.providers.probe import probe_provider
    from deepext.serve.providers.registry import provider_target

    platform = open_platform()
    target = provider_target(platform, project, name)
    probe = probe_provider(platform.settings, kind=target.kind, base_url=target.base_url, api_key=target.api_key)
    verdict = {"ok": "key accepted", "refused": "key REFUSED", "unknown": "key not checked"}[probe.auth]
    if not probe.reachable:
        out.print(f"{project}/{name}: NOT reachable: {probe.detail}", highlight=False)
        raise typer.Exit(1)
    out.print(f"{project}/{name}: reachable, {verdict}, {probe.latency_ms:.0f} ms ({probe.detail})", highlight=False)
    if probe.models:
        out.print(f"  models: {', '.join(probe.models)}", highlight=False)
    if probe.auth == "refused":
        raise typer.Exit(1)
