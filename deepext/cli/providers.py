"""`deepext providers`: administer the external model providers' stored credentials (on the metadata store)."""

from __future__ import annotations

import typer

from deepext.cli.common import actor, open_platform, out, reports_errors

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
