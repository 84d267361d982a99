"""`deepext models ...`: tiny test models (and, with later issues, base models and versions)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepext.cli.common import err, out, reports_errors

models_app = typer.Typer(help="Base models and model versions.", no_args_is_help=True)


@models_app.command("create-tiny")
@reports_errors
def models_create_tiny(
    dest: Path,
    hidden_size: int = typer.Option(128, help="Model width; head size is hidden_size / heads (>= 32)."),
    layers: int = typer.Option(2),
    heads: int = typer.Option(2),
    kv_heads: int = typer.Option(1),
    intermediate_size: int = typer.Option(256),
    vocab_size: int = typer.Option(512),
    seed: int = typer.Option(0),
) -> None:
    """Write a tiny RANDOM-weight Qwen2 model + tokenizer folder for tests and CPU demos."""
    from deepext.models.tiny import TinyModelSpec, count_parameters, create_tiny_model

    spec = TinyModelSpec(
        hidden_size=hidden_size,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        seed=seed,
    )
    with err.status("training the tokenizer and writing the model"):
        folder = create_tiny_model(dest, spec)
    out.print(f"wrote a tiny random-weight model ({count_parameters(folder):,} parameters) to {folder}")
